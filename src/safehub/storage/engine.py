"""The one engine factory: a URL in, a tuned SQLAlchemy engine out. Nothing connects here.

SQLite (the default for a single agency or hub) and PostgreSQL (production) are tuned once for
every store, so the durability promises the stores make ("rows before offsets", "a handle is
committed before the event that carries it is sent") hold the same way everywhere.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import SQLAlchemyError

from safehub.errors import StoreError

# WAL lets readers (the web app, an auditor) read while the one writer writes. FULL makes a
# commit survive a power cut, which every store's ordering of commits relies on. Foreign keys
# are off by default in SQLite; the stores that declare them mean them.
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)
# pre_ping: after a database restart the pool must not hand out dead connections; recycle:
# firewalls and poolers drop idle connections silently after a few minutes.
_POSTGRES_POOL: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 300}


def _sqlite_tuner(busy_timeout_s: float) -> Callable[[Any, Any], None]:
    def tune(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            for pragma in _SQLITE_PRAGMAS:
                _execute_when_free(cursor, pragma, busy_timeout_s)
        finally:
            cursor.close()

    return tune


def _execute_when_free(cursor: Any, pragma: str, busy_timeout_s: float) -> None:
    # Setting journal_mode takes the database lock without waiting on the busy handler: a
    # process opening the file while another migrates it got "database is locked" at once
    # (replicas starting together). It waits here as long as any other write would.
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            cursor.execute(pragma)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _read_only_sqlite(path: str, timeout_s: float) -> Callable[[], sqlite3.Connection]:
    # mode=ro: an auditor's process cannot change the file even by mistake, and opening it
    # creates nothing (a missing file is an error, not a new empty store).
    def connect() -> sqlite3.Connection:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_s)

    return connect


def open_engine(url: str, *, read_only: bool = False, busy_timeout_s: float = 5.0) -> Engine:
    """An engine for any store.

    `busy_timeout_s` bounds how long a SQLite writer waits for another writer's lock before
    failing. `read_only` opens SQLite in `mode=ro` without tuning (pragmas that write, like
    journal_mode, are refused there); for PostgreSQL read-only is the role's business.
    """
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return create_engine(parsed, **_POSTGRES_POOL)
        if read_only:
            return create_engine("sqlite://",
                                 creator=_read_only_sqlite(parsed.database or "", busy_timeout_s))
        engine = create_engine(parsed, connect_args={"timeout": busy_timeout_s})
    except SQLAlchemyError as exc:
        # The URL may hold a password: name the failure, never the URL.
        raise StoreError(f"cannot open the database: {type(exc).__name__}") from exc
    event.listen(engine, "connect", _sqlite_tuner(busy_timeout_s))
    return engine
