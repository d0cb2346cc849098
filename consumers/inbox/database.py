"""Engine and migrations for the hub inbox: SQLite by default, PostgreSQL in production.
Nothing connects at import time. Both are the storage toolkit's; the names here stay because
the inbox's callers use them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from safehub.consumers.inbox.models import Base
from safehub.storage import Migrations, open_engine, upgrade

MIGRATIONS = Migrations("inbox", Path(__file__).with_name("migrations") / "versions",
                        Base.metadata)


def make_engine(url: str, *, busy_timeout_s: float = 5.0) -> Engine:
    return open_engine(url, busy_timeout_s=busy_timeout_s)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    upgrade(engine, MIGRATIONS)
