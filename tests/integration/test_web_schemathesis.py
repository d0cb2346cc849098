"""The hub's JSON API under generated requests (issue 21, "Web"): schemathesis drives every
operation of the API's own OpenAPI description, signed in as a user of one hub, against a
real inbox database (SQLite, and PostgreSQL in a schema of its own) that holds alerts of two
hubs.

Properties, for every generated request: no 5xx; the answer conforms to the description (status
code, content type, body schema); no answer ever carries the other hub's alert ids,
notification ids, evidence ids or re-identification request ids; and every POST sent again
with another site's Origin (the user's cookie still on it) is refused 403. Each request is
also replayed with its `notification_id` set to an alert of this hub and to one of the other
hub, so the scoping is exercised on rows that exist, not only on random strings.

The schema is taken from the app object (`app.openapi()`), not fetched from /openapi.json:
the test must not depend on that path being public, and it describes the same routes.
The audit journal and the ack and request publishers are recording fakes (the `Audit` and
publisher protocols): this test is about the HTTP surface and the database, and the broker
side of each of them is covered by tests/integration/test_hub_audit.py and test_reid_hub.py.

Bounded: 25 examples per operation (7 operations, a few seconds per database), derandomized
(a fixed seed), no example database; the module has a 180 s timeout.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.requests import ReidRequests
from safehub.consumers.inbox.store import InboxStore
from safehub.schemas.codec import encode
from safehub.schemas.records import AlertAck, ReidRequest, RoutedAlert
from safehub.schemas.vocabulary import AuditAction, LawfulBasis, ReidPurpose, RouteReason
from safehub.services.web.app import create_app
from safehub.services.web.hub import Hub, Outlet
from safehub.services.web.reidentification import HubKeys, HubReidentification
from safehub.services.web.users import Directory, User, hash_password
from tests.contract.samples import AT, correlated
from tests.fixtures.databases import fresh_postgres_schema

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

HUB, OTHER = "csc-leeds", "csc-bradford"
HOUR = 3_600_000
PER_HUB = 6


@dataclass
class Recorder:
    """An audit journal and ack/request publisher that keeps what it is given."""

    entries: list[Any] = field(default_factory=list)

    def record(self, action: AuditAction, subject_id: str, actor: str, digest: bytes,
               at_ms: int) -> None:
        self.entries.append((action, subject_id, actor))

    def flush(self, timeout: float = 60.0) -> None:
        return None

    def publish(self, record: AlertAck | ReidRequest) -> None:
        self.entries.append(record)


def routed(n: int, hub: str) -> RoutedAlert:
    return RoutedAlert(hashlib.sha256(f"{n}|{hub}".encode()).hexdigest()[:32],
                       correlated(n, n, raised_at=AT + n * HOUR), hub, "E08000035",
                       RouteReason.RESPONSIBLE_AUTHORITY, 0, AT + n * HOUR)


@dataclass(frozen=True)
class Site:
    app: FastAPI
    cookie: dict[str, str]
    own: list[str]  # notification ids of the signed-in user's hub
    foreign: list[str]  # notification ids of the other hub
    secrets: frozenset[str]  # every id of the other hub's alerts


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:
    """An empty inbox database of either kind (PostgreSQL: a schema of its own)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'inbox.db'}"
        return
    yield from fresh_postgres_schema(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="module")
def site(database: str) -> Iterator[Site]:
    store = InboxStore(make_engine(database))
    migrate(store.engine)
    own = [routed(n, HUB) for n in range(1, PER_HUB + 1)]
    # Other numbers, so the other hub's alert and evidence ids differ from this hub's.
    foreign = [routed(n, OTHER) for n in range(101, 101 + PER_HUB)]
    store.save([(r, encode(r)) for r in own + foreign], AT)
    recorder = Recorder()
    outlets = {h: Outlet(recorder, recorder) for h in (HUB, OTHER)}
    hub = Hub(store, outlets, lambda: AT + 200 * HOUR)
    keys = {h: HubKeys(X25519PrivateKey.generate(), recorder) for h in (HUB, OTHER)}
    reid = HubReidentification(hub, ReidRequests(store.engine), keys)
    password = hash_password("pw")
    directory = Directory({"sw-1": User("sw-1", HUB, password),
                           "sw-2": User("sw-2", OTHER, password)})
    app = create_app(hub, directory, "s" * 32, reid)
    with TestClient(app) as client:
        assert client.post("/login", data={"ref": "sw-1", "password": "pw"},
                           follow_redirects=False).status_code == 303
        cookie = {"safehub_session": client.cookies["safehub_session"]}
    # The other hub asks its agencies too, so its request ids exist in the same tables.
    other = directory.get("sw-2")
    assert other is not None
    asked = reid.ask(other, foreign[0].notification_id, ["police-wy"],
                     LawfulBasis.DPA_SCH8_PARA4_SAFEGUARDING, ReidPurpose.STRATEGY_MEETING, None)
    secrets = {r.notification_id for r in foreign} | {r.alert.alert_id for r in foreign} | {
        e.event_id for r in foreign for e in r.alert.evidence} | {a.request_id for a in asked}
    yield Site(app, cookie, [r.notification_id for r in own],
               [r.notification_id for r in foreign], frozenset(secrets))
    store.engine.dispose()


def check(site: Site, case: Any, response: Any) -> None:
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}")
    body = response.text
    leaked = [s for s in site.secrets if s in body]
    assert not leaked, f"{case.method} {case.formatted_path} leaked the other hub's {leaked}"
    # Every check but "schema-valid request rejected": the API refuses some requests the
    # schema cannot rule out (an agency that did not contribute to this alert, a lawful basis
    # that needs a reason); those 422s are right, and their body is checked like any other.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])


def exercise(site: Site, case: Any) -> None:
    check(site, case, case.call(cookies=site.cookie))
    if case.method.upper() == "POST":
        # The same POST from another site's page, with the user's cookie: refused before any
        # route runs (the CSRF rule for the JSON API is the Origin check).
        refused = case.call(cookies=site.cookie, headers={"Origin": "https://elsewhere.example"})
        assert refused.status_code == 403, (case.formatted_path, refused.status_code)
    if "notification_id" in (case.path_parameters or {}):
        # The same request about an alert that exists, of this hub and of the other.
        pick = int(hashlib.sha256(repr(case.body).encode()).hexdigest(), 16)
        for ids in (site.own, site.foreign):
            case.path_parameters["notification_id"] = ids[pick % len(ids)]
            check(site, case, case.call(cookies=site.cookie))


def operations(site: Site) -> list[Any]:
    # From the app object, not /openapi.json (see the module's docstring).
    schema = schemathesis.openapi.from_dict(site.app.openapi())
    schema.app = site.app
    return [result.ok() for result in schema.get_all_operations()]


def test_the_api_never_fails_nor_leaks_another_hub(site: Site) -> None:
    ran = []
    for operation in operations(site):
        @given(case=operation.as_strategy())
        @settings(max_examples=25, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.generate, Phase.shrink])
        def run(case: Any) -> None:
            exercise(site, case)

        run()
        ran.append(operation.label)
    # Every API operation the app describes was driven (the pages are not in the schema).
    assert len(ran) == 7, ran


def test_the_run_is_signed_in(site: Site) -> None:
    """The cookie the run uses opens this hub's queue: the run is not a string of 401s."""
    with TestClient(site.app, cookies=site.cookie) as client:
        queue = client.get("/api/alerts")
    assert queue.status_code == 200
    assert {a["notification_id"] for a in queue.json()} == set(site.own)
