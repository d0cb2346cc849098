"""Every store's schema comes from its Alembic revisions, on SQLite and PostgreSQL alike:
they run to head from empty, again without effect, and leave exactly the tables the code's
models describe."""

from __future__ import annotations

import subprocess
import sys
import time

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


# Each replica is its own process: Alembic's operation context is process-wide.
REPLICA = """
import sys, time
from importlib import import_module
from safehub.storage import open_engine, upgrade
url, module, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
engine, migrations = open_engine(url), import_module(module).MIGRATIONS
with engine.connect():  # connected before the start, so they race on the migration itself
    pass
while time.time() < start:
    time.sleep(0.001)
upgrade(engine, migrations)
"""


def test_replicas_starting_together_migrate_one_after_the_other(store_url: str) -> None:
    start = time.time() + 3  # every replica imported and waiting by then
    replicas = [subprocess.Popen([sys.executable, "-c", REPLICA, store_url, module,
                                  str(start)], stderr=subprocess.PIPE, text=True)
                for module in ["safehub.services.audit.ledger"] * 3
                + ["safehub.producers.vault"] * 3]
    errors = [r.communicate(timeout=60)[1] for r in replicas]
    assert [r.returncode for r in replicas] == [0] * 6, errors
    engine = open_engine(store_url)
    for migrations in (ledger.MIGRATIONS, vault.MIGRATIONS):
        assert at(engine, migrations) == head(migrations)
    engine.dispose()
