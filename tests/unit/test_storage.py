"""The storage toolkit's engine factory: one set of SQLite pragmas, read-only auditors, and
no database URL (which may hold a password) in an error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from safehub.errors import StoreError
from safehub.storage import open_engine


def _pragma(engine: sa.Engine, name: str) -> object:
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_sqlite_is_tuned_for_durability(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 's.db'}", busy_timeout_s=7.5)
    assert _pragma(engine, "journal_mode") == "wal"
    assert _pragma(engine, "synchronous") == 2  # FULL
    assert _pragma(engine, "foreign_keys") == 1
    assert _pragma(engine, "busy_timeout") == 7500
    engine.dispose()


def test_read_only_sqlite_cannot_write_or_create(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    writer = open_engine(f"sqlite:///{path}")
    with writer.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    reader = open_engine(f"sqlite:///{path}", read_only=True)
    with reader.connect() as conn:
        assert conn.exec_driver_sql("SELECT x FROM t").scalar() == 1
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    missing = open_engine(f"sqlite:///{tmp_path / 'missing.db'}", read_only=True)
    with pytest.raises(sa.exc.OperationalError):
        missing.connect()
    assert not (tmp_path / "missing.db").exists()
    for e in (writer, reader, missing):
        e.dispose()
    with sqlite3.connect(path) as con:  # still WAL for any other process
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_postgres_pool_checks_connections_before_use() -> None:
    engine = open_engine("postgresql+psycopg2://u:secret@127.0.0.1:1/db")
    assert engine.pool._pre_ping is True  # type: ignore[attr-defined]
    assert engine.pool._recycle == 300  # type: ignore[attr-defined]
    engine.dispose()


def test_a_bad_url_is_a_store_error_without_the_url() -> None:
    with pytest.raises(StoreError) as exc:
        open_engine("nosuchdb+driver://u:secret@host/db")
    assert "secret" not in str(exc.value) and "host" not in str(exc.value)
