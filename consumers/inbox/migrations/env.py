"""Alembic environment for the hub inbox. Run through safehub.consumers.inbox.database.migrate,
which hands over an open connection; there is no alembic.ini to keep in step."""

from __future__ import annotations

from alembic import context

from safehub.consumers.inbox.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table="inbox_alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
