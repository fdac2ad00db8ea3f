"""One module per revision, oldest first by their down_revision links."""
