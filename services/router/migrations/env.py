"""Alembic environment for the router's state; run through safehub.services.router.store."""

from __future__ import annotations

from alembic import context

from safehub.services.router.store import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table="router_alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
