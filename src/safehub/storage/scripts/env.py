"""The Alembic environment of every store; run through safehub.storage.upgrade, which hands
over an open connection, the store's version table and (for autogenerate) its metadata."""

from __future__ import annotations

from alembic import context

attributes = context.config.attributes
connection = attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=attributes.get("metadata"),
    version_table=attributes["version_table"],
    # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
