"""One way to migrate: a store's Alembic revisions, run to head over an open connection.

Every store shares one Alembic environment (`scripts/env.py`); a store brings only its folder
of revision scripts and the name of its version table, so several stores can live in one
database (a hub's inbox and router may) without their revisions meeting. There is no
alembic.ini to keep in step with the code.

A new revision starts from the shared template:
`alembic.command.revision(<store module>.MIGRATIONS.config(), "what changes", rev_id=...)`.
A revision is frozen once released: it spells its tables out rather than importing the models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, MetaData, text
from sqlalchemy.exc import SQLAlchemyError

from safehub.errors import StoreError

SCRIPTS = Path(__file__).with_name("scripts")


@dataclass(frozen=True, slots=True)
class Migrations:
    """A store's revision scripts and the table that records which one a database is at."""

    store: str  # names the store in errors and in its version table
    versions: Path
    # The live models: autogenerate and the contract suite's drift check compare them with
    # what the revisions build.
    metadata: MetaData | None = None

    @property
    def version_table(self) -> str:
        return f"{self.store}_alembic_version"

    def config(self) -> Config:
        config = Config()
        # ConfigParser interpolates '%': a path holding one must not be read as a reference.
        config.set_main_option("script_location", str(SCRIPTS).replace("%", "%%"))
        config.set_main_option("version_locations", str(self.versions).replace("%", "%%"))
        config.set_main_option("path_separator", "os")
        config.attributes["version_table"] = self.version_table
        config.attributes["metadata"] = self.metadata
        return config


def _one_at_a_time(connection: Connection, migrations: Migrations) -> None:
    """Processes starting together (replicas; a hub's inbox and web page on one SQLite file)
    migrate one after the other: without this, each creates the version table at once and all
    but one fail. The lock is the transaction's, so it goes with the commit."""
    if connection.dialect.name == "sqlite":
        # pysqlite would run the DDL outside any transaction; IMMEDIATE takes the write lock
        # now, so the others wait (busy timeout) and then find the schema at head.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        return
    name = f"safehub migrate {migrations.version_table}".encode()
    key = int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def upgrade(engine: Engine, migrations: Migrations) -> None:
    """Bring the store's schema to the newest revision, in one transaction (idempotent)."""
    config = migrations.config()
    try:
        with engine.begin() as connection:
            _one_at_a_time(connection, migrations)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except (SQLAlchemyError, CommandError) as exc:
        # CommandError: the database is at a revision this code does not know (a newer release
        # wrote it); refuse rather than run on a schema we cannot read.
        raise StoreError(f"{migrations.store} migration failed: {type(exc).__name__}") from exc
