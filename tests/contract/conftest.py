"""Store contract suites run against SQLite and PostgreSQL alike: every test gets an empty
database of each kind (a file in its tmp_path, or a schema of its own on the test server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.databases import fresh_postgres_schema


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """An empty PostgreSQL schema of the test's own."""
    yield from fresh_postgres_schema(postgres_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of either kind. Under CI=true a missing PostgreSQL fails the test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    yield request.getfixturevalue("postgres_schema_url")
