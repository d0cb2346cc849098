"""Web hardening (issue 21, "Web"): security headers, no CDN docs, same-origin POSTs, sign-in
throttling and server-side sign-out, on both the hub's page and the agencies' page, in process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from safehub.services.web.users import Directory, SignInThrottle
from tests.fixtures.web import desk_app, hub_app


@pytest.fixture(params=["hub", "desk"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestClient, str, str]]:
    """(client, a signed-in user's ref, a JSON API path to GET)."""
    if request.param == "hub":
        yield TestClient(hub_app(tmp_path)), "sw-1", "/api/alerts"
    else:
        yield TestClient(desk_app()), "off-1", "/api/requests"


def sign_in(client: TestClient, ref: str, password: str = "pw") -> int:
    status: int = client.post("/login", data={"ref": ref, "password": password},
                              follow_redirects=False).status_code
    return status


# -- 1. security headers -----------------------------------------------------------------------

def test_every_response_carries_the_security_headers(site: tuple[TestClient, str, str]
                                                     ) -> None:
    client, ref, api = site
    responses = [client.get("/login"), client.get(api), client.get("/nowhere")]
    assert sign_in(client, ref) == 303
    responses += [client.get("/", follow_redirects=True), client.get(api),
                  client.get("/openapi.json")]
    for r in responses:
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src 'none'" in csp  # the pages need no script at all
        assert r.headers["x-content-type-options"] == "nosniff"
        # No address to another site, yet the pages' own POSTs keep their Origin (under
        # "no-referrer" browsers send "Origin: null", which the origin check refuses).
        assert r.headers["referrer-policy"] == "same-origin"
        assert r.headers["cache-control"] == "no-store"


# -- 2. no Swagger UI from a CDN ---------------------------------------------------------------

def test_no_docs_pages_and_a_public_openapi_description(site: tuple[TestClient, str, str]
                                                       ) -> None:
    client, _ref, api = site
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404
    description = client.get("/openapi.json")
    assert description.status_code == 200 and api in description.json()["paths"]


# -- 3. same-origin POSTs ----------------------------------------------------------------------

def test_a_cross_site_post_is_refused_before_it_acts(site: tuple[TestClient, str, str]) -> None:
    client, ref, _api = site
    assert sign_in(client, ref) == 303
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        refused = client.post("/logout", headers=headers, follow_redirects=False)
        assert refused.status_code == 403, headers
        assert refused.headers["x-content-type-options"] == "nosniff"
    # Still signed in: the refused sign-outs did nothing.
    assert client.get(site[2]).status_code == 200
    # A cross-site sign-in (login CSRF) is refused too, before any password is checked.
    assert client.post("/login", data={"ref": ref, "password": "pw"},
                       headers={"Origin": "https://evil.example"}).status_code == 403


def test_same_origin_and_originless_json_posts_are_allowed(tmp_path: Path) -> None:
    client = TestClient(hub_app(tmp_path))
    assert sign_in(client, "sw-1") == 303
    # No alert: 404 shows the request got past the origin check to the route.
    same = client.post("/api/alerts/" + "a" * 32 + "/ack",
                       headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 404
    assert client.post("/api/alerts/" + "a" * 32 + "/ack").status_code == 404
    cross = client.post("/api/alerts/" + "a" * 32 + "/ack",
                        headers={"Origin": "http://testserver.evil.example"})
    assert cross.status_code == 403


# -- 4. sign-in throttling ---------------------------------------------------------------------

def test_throttle_per_user_and_per_address_with_a_clock() -> None:
    t = SignInThrottle(per_user=5, per_address=20, window_s=900.0)
    for i in range(5):
        assert t.allowed("sw-1", "10.0.0.1", now=float(i))
        t.failed("sw-1", "10.0.0.1", now=float(i))
    assert not t.allowed("sw-1", "10.0.0.1", now=10.0)
    assert not t.allowed("sw-1", "10.0.0.2", now=10.0)  # the user's limit, from anywhere
    assert t.allowed("sw-2", "10.0.0.1", now=10.0)  # another user from the same address
    assert t.allowed("sw-1", "10.0.0.1", now=905.0)  # the first failure has aged out
    for i in range(20):
        t.failed(f"user-{i}", "10.0.0.9", now=1000.0)
    assert not t.allowed("someone-else", "10.0.0.9", now=1001.0)  # the address's limit
    assert t.allowed("someone-else", "10.0.0.8", now=1001.0)


def test_throttle_success_clears_the_user_and_memory_is_bounded() -> None:
    t = SignInThrottle(per_user=2, per_address=100, window_s=60.0, max_keys=50)
    t.failed("sw-1", "a", now=0.0)
    t.succeeded("sw-1")
    t.failed("sw-1", "a", now=1.0)
    assert t.allowed("sw-1", "a", now=2.0)
    for i in range(1000):
        t.failed("x" * 10_000 + str(i), f"addr-{i}", now=3.0)
    assert t.size() <= 50


def test_sign_in_is_refused_429_after_five_failures_without_checking_the_password(
        site: tuple[TestClient, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    client, ref, _api = site
    for _ in range(5):
        assert sign_in(client, ref, "wrong") == 200
    checked: list[str] = []
    monkeypatch.setattr(Directory, "authenticate",
                        lambda self, r, p: checked.append(r))
    refused = client.post("/login", data={"ref": ref, "password": "pw"})
    assert refused.status_code == 429 and "retry-after" in refused.headers
    assert checked == []  # no scrypt ran


# -- 5. server-side sign-out -------------------------------------------------------------------

def test_a_copied_cookie_is_useless_after_sign_out(site: tuple[TestClient, str, str]) -> None:
    client, ref, api = site
    assert sign_in(client, ref) == 303
    copied = dict(client.cookies)
    assert client.get(api).status_code == 200
    client.post("/logout")
    thief = TestClient(client.app, cookies=copied)
    assert thief.get(api).status_code == 401


def test_a_cookie_from_before_a_restart_is_useless(tmp_path: Path) -> None:
    client = TestClient(hub_app(tmp_path))
    assert sign_in(client, "sw-1") == 303
    restarted = TestClient(hub_app(tmp_path), cookies=dict(client.cookies))
    assert restarted.get("/api/alerts").status_code == 401


# -- 6. Secure cookie over TLS -----------------------------------------------------------------

def test_the_session_cookie_is_secure_when_served_over_tls(tmp_path: Path) -> None:
    for app in (hub_app(tmp_path, secure_cookies=True), desk_app(secure_cookies=True)):
        client = TestClient(app, base_url="https://testserver")
        ref = "sw-1" if "inbox" in app.title else "off-1"
        r = client.post("/login", data={"ref": ref, "password": "pw"}, follow_redirects=False)
        assert r.status_code == 303
        assert "secure" in r.headers["set-cookie"].lower()
    plain = TestClient(desk_app())
    r = plain.post("/login", data={"ref": "off-1", "password": "pw"}, follow_redirects=False)
    assert "secure" not in r.headers["set-cookie"].lower()
