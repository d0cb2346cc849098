"""Every store's schema comes from its Alembic revisions, on SQLite and PostgreSQL alike:
they run to head from empty, again without effect, and leave exactly the tables the code's
models describe."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from safehub.consumers.inbox import database as inbox
from safehub.producers import vault
from safehub.services.audit import ledger
from safehub.services.reid import store as reid
from safehub.services.router import store as router
from safehub.storage import Migrations, open_engine, upgrade

pytestmark = pytest.mark.integration

STORES = {m.store: m for m in (inbox.MIGRATIONS, router.MIGRATIONS, ledger.MIGRATIONS,
                                vault.MIGRATIONS, reid.MIGRATIONS)}


def head(migrations: Migrations) -> str:
    script = ScriptDirectory.from_config(migrations.config())
    (only,) = script.get_heads()
    return only


def at(engine: sa.Engine, migrations: Migrations) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.text(f"SELECT version_num FROM {migrations.version_table}"))
                   .scalar_one())


@pytest.mark.parametrize("name", sorted(STORES))
def test_revisions_build_what_the_models_describe(store_url: str, name: str) -> None:
    migrations = STORES[name]
    assert migrations.metadata is not None
    engine = open_engine(store_url)
    upgrade(engine, migrations)
    upgrade(engine, migrations)  # idempotent
    assert at(engine, migrations) == head(migrations)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": migrations.version_table, "compare_type": True})
        drift = compare_metadata(context, migrations.metadata)
    engine.dispose()
    assert drift == []


def test_stores_sharing_a_database_keep_their_own_versions(store_url: str) -> None:
    """The hub's inbox and router live in one database: each records only its own revision."""
    engine = open_engine(store_url)
    for migrations in STORES.values():
        upgrade(engine, migrations)
    for migrations in STORES.values():
        assert at(engine, migrations) == head(migrations)
    engine.dispose()
