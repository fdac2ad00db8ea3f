"""Alembic migrations of dagtop's schema, run by engine.storage.schema (no alembic.ini).

To change the schema: change models.py, add `versions/NNNN_what.py` whose `down_revision` is
the current head, and set `HEAD` in models.py to it; tests/engine/test_migrations.py checks that
the migrations build exactly the models' schema on SQLite and PostgreSQL.
"""
