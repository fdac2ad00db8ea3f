"""The storage layer: the database (SQLite or PostgreSQL through SQLModel), its schema and
migrations, and every query as a named function in `repo`."""
