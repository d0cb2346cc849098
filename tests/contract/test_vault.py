"""The re-identification vault's contract, on SQLite and PostgreSQL alike: one random handle
per child per agency, resolvable only there."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from safehub.producers.vault import Assignment, Vault

pytestmark = pytest.mark.integration


@pytest.fixture
def vault(store_url: str) -> Iterator[Vault]:
    v = Vault.open(store_url)
    yield v
    v.close()


def test_one_handle_per_child_per_agency(vault: Vault) -> None:
    handles = vault.assign("police-wy", [
        Assignment("ref:N-1", "INC-1", "e1" * 16),
        Assignment("ref:N-1", "INC-2", "e2" * 16),
        Assignment("ref:N-2", "INC-3", "e3" * 16),
    ])
    assert handles[0] == handles[1] != handles[2]
    assert all(re.fullmatch(r"[0-9a-f]{32}", h) for h in handles)
    # Another agency reporting the same person reference gets its own, unrelated handle.
    other = vault.assign("school-leeds", [Assignment("ref:N-1", "INC-1", "e4" * 16)])
    assert other[0] not in handles


def test_resolve_only_for_the_issuing_agency(vault: Vault) -> None:
    handle = vault.assign("police-wy", [Assignment("ref:N-9", "INC-9", "a" * 32),
                                        Assignment("ref:N-9", "INC-10", "b" * 32)])[0]
    found = vault.resolve("police-wy", handle)
    assert found is not None
    assert found.person_ref == "N-9" and found.record_refs == ("INC-10", "INC-9")
    assert vault.resolve("school-leeds", handle) is None
    assert vault.resolve("police-wy", "0" * 32) is None


def test_resending_records_keeps_handles_and_adds_nothing(vault: Vault) -> None:
    batch = [Assignment(f"mk:{i:064x}", f"R-{i}", f"{i:032x}") for i in range(1200)]
    first = vault.assign("health-leeds", batch)
    assert vault.counts("health-leeds") == (1200, 1200)
    again = vault.assign("health-leeds", batch)
    assert again == first
    assert vault.counts("health-leeds") == (1200, 1200)
    found = vault.resolve("health-leeds", first[5])
    assert found is not None and found.person_ref is None and found.record_refs == ("R-5",)


def test_sqlite_is_durable_wal(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    v = Vault.open(f"sqlite:///{path}")
    v.assign("a", [Assignment("ref:x", "r", "c" * 32)])
    with v.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cur = raw.cursor()
        assert cur.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cur.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    v.close()
    # A second process opening the file sees the committed handle.
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT count(*) FROM vault_children").fetchone()[0] == 1
