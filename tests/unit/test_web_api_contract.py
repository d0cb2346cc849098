"""What the schemathesis run (tests/integration/test_web_schemathesis.py) found in the hub's JSON
API, each pinned here: a page number or age too large for the database answered 500; the
API's own 422s had a bare string `detail`, not the shape its description gives; 401 and 404
were not described; the query parameters were described as any string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi.testclient import TestClient

from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.requests import ReidRequests
from safehub.consumers.inbox.store import InboxStore
from safehub.schemas.codec import encode
from safehub.schemas.records import RoutedAlert
from safehub.schemas.vocabulary import RouteReason
from safehub.services.web.app import create_app
from safehub.services.web.hub import Hub, Outlet
from safehub.services.web.reidentification import HubKeys, HubReidentification
from safehub.services.web.users import Directory, User, hash_password
from tests.contract.samples import AT, correlated

HUB = "csc-leeds"


class Sink:
    """Audit journal and publisher that drop what they are given (no broker in a unit test)."""

    def record(self, *_args: Any) -> None:
        return None

    def flush(self, timeout: float = 60.0) -> None:
        return None

    def publish(self, _record: Any) -> None:
        return None


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    store = InboxStore(make_engine(f"sqlite:///{tmp_path / 'inbox.db'}"))
    migrate(store.engine)
    routed = RoutedAlert("a" * 32, correlated(1, 1), HUB, "E08000035",
                         RouteReason.RESPONSIBLE_AUTHORITY, 0, AT)
    store.save([(routed, encode(routed))], AT)
    sink = Sink()
    hub = Hub(store, {HUB: Outlet(sink, sink)}, lambda: AT)
    reid = HubReidentification(hub, ReidRequests(store.engine),
                               {HUB: HubKeys(X25519PrivateKey.generate(), sink)})
    app = create_app(hub, Directory({"sw-1": User("sw-1", HUB, hash_password("pw"))}),
                     "s" * 32, reid)
    c = TestClient(app)
    assert c.post("/login", data={"ref": "sw-1", "password": "pw"},
                  follow_redirects=False).status_code == 303
    return c


def is_validation_error(body: Any, where: str, name: str) -> bool:
    """FastAPI's described 422 body: a list of {loc, msg, type}."""
    return (isinstance(body["detail"], list)
            and [where, name] in [list(e["loc"]) for e in body["detail"]])


@pytest.mark.parametrize("query,name", [
    ("page=99999999999999999999", "page"),  # was: OverflowError in SQLite, a 500
    ("min_age=99999999999999999999", "min_age"),  # likewise
    ("limit=abc", "limit"), ("limit=501", "limit"), ("page=0", "page"),
    ("tier=NOPE", "tier"), ("status=NOPE", "status"), ("sort=NOPE", "sort"),
])
def test_a_bad_query_is_a_described_422(client: TestClient, query: str, name: str) -> None:
    answer = client.get(f"/api/alerts?{query}")
    assert answer.status_code == 422
    assert is_validation_error(answer.json(), "query", name)


def test_empty_form_fields_still_mean_no_filter(client: TestClient) -> None:
    answer = client.get("/api/alerts?tier=&status=&min_age=&max_age=&sort=&page=&limit=")
    assert answer.status_code == 200 and len(answer.json()) == 1
    assert client.get("/api/alerts?page=1&limit=500&min_age=0&max_age=17").status_code == 200


def test_a_refused_reidentification_request_is_a_described_422(client: TestClient) -> None:
    answer = client.post(f"/api/alerts/{'a' * 32}/reidentification",
                         json={"agencies": [], "lawful_basis": "CONSENT",
                               "purpose": "IMMEDIATE_PROTECTION"})
    assert answer.status_code == 422
    assert is_validation_error(answer.json(), "body", "agencies")
    # The field and the rule, never a value the user sent.
    assert "agencies" in answer.json()["detail"][0]["msg"]


def test_the_description_names_every_answer_and_the_accepted_values(client: TestClient
                                                                     ) -> None:
    spec = client.get("/openapi.json").json()
    detail = spec["paths"]["/api/alerts/{notification_id}"]["get"]["responses"]
    assert {"200", "401", "404", "422"} <= set(detail)
    params = {p["name"]: p for p in spec["paths"]["/api/alerts"]["get"]["parameters"]}
    limit = params["limit"]["schema"]["anyOf"][0]
    assert limit["type"] == "string" and "pattern" in limit
    tier = params["tier"]["schema"]["anyOf"][0]
    assert "ESCALATING" in tier["pattern"]
