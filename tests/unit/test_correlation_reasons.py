"""Each alert says why it fired in plain words, from the evidence and rules that raised it."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from fastapi.testclient import TestClient

from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.store import InboxStore
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import CorrelatedAlert, RoutedAlert
from safehub.schemas.vocabulary import MissingType, RouteReason, Sign, SignificantIncident, Tier
from safehub.services.correlation.core import Assessment, observation_of, standing_alerts
from safehub.services.correlation.reasons import explain, words
from safehub.services.correlation.rules import RULES_DIR, load_rules
from safehub.services.web.app import create_app as create_hub
from safehub.services.web.hub import Hub, Outlet
from safehub.services.web.users import Directory, User, hash_password
from tests.fixtures.episodes import BLOCK, DAY, HOUR, RULES, T0, episode_event, run, sign_event

SCHEMA = json.loads((RULES_DIR.parent.parent.parent / "schemas" /
                     "safehub.CorrelatedAlert.avsc").read_text())
FIELD = next(f for f in SCHEMA["fields"] if f["name"] == "explanation")


def _fits_the_schema(text: str) -> None:
    assert re.fullmatch(FIELD["safehub.pattern"], text), text
    assert len(text) <= FIELD["safehub.maxLength"]


def test_the_example_of_the_issue() -> None:
    returned = 8 * HOUR
    stream = [
        episode_event("p1", T0, recorded=T0 + returned + 4 * DAY),
        sign_event("s1", T0 + 10 * DAY, Sign.DRUG_OR_ALCOHOL_MISUSE, agency="health-c"),
        sign_event("s2", T0 + 20 * DAY, Sign.UNEXPLAINED_GIFTS_OR_MONEY, agency="health-c"),
        episode_event("p2", T0 + 30 * DAY, recorded=T0 + 30 * DAY + returned + 3 * DAY + HOUR),
    ]
    state, _ = run(stream)
    (final,) = standing_alerts(RULES, BLOCK, state)
    assert final.explanation == (
        "3 different warning signs (drug or alcohol misuse, missing from home or care, "
        "unexplained gifts or money) from 2 agencies within 30 days; 2 missing episodes "
        "without a return interview within 72 hours")


def test_every_rule_has_its_words() -> None:
    def why(*stream):  # the last alert's explanation
        alerts = run(list(stream))[1]
        return alerts[-1].explanation

    assert why(sign_event("i", T0, SignificantIncident.ABDUCTION, agency="police-a")) == (
        "Significant incident (abduction) from 1 agency: high at once")
    pregnancy = sign_event("y", T0, Sign.PREGNANCY)
    young = replace(pregnancy, subject=replace(pregnancy.subject, age_years=12))
    assert why(young) == "Pregnancy for a child under 13: high at once"
    assert why(*(episode_event(f"m{i}", T0 + i * 5 * DAY) for i in range(3))) == (
        "3 missing episodes within 10 days: a pattern (3 within 90 days is escalating)")
    assert why(episode_event("m1", T0, hours=30, kind=MissingType.ABSENT),
               sign_event("s1", T0 + DAY, Sign.SELF_HARM, agency="health-c"),
               sign_event("s2", T0 + 2 * DAY, Sign.SELF_HARM, agency="health-c")) == (
        "3 warning signs (1 absent episode, self harm 2 times) from 2 agencies within 2 days "
        "scoring 6.75 (escalating from 6), x1.5 as more than one agency saw them; 1 episode of "
        "24 hours or more")


def test_explanations_fit_the_schema_and_survive_the_codec() -> None:
    every_sign = [sign_event(f"s{i}", T0 + i * HOUR, s, agency=f"agency-{i % 3}")
                  for i, s in enumerate(Sign)]
    _, alerts = run(every_sign)
    assert alerts
    for alert in alerts:
        assert alert.explanation
        _fits_the_schema(alert.explanation)
        assert decode(encode(alert), CorrelatedAlert) == alert
    for sign in Sign:
        _fits_the_schema(words(sign))


def test_explanation_is_a_pure_function_of_rules_and_evidence() -> None:
    obs = tuple(observation_of(e) for e in (
        episode_event("p1", T0), episode_event("p2", T0 + DAY)))
    peak = Assessment(Tier.EMERGING, "score", 4.0, T0 + DAY, obs)
    assert explain(RULES, peak) == explain(RULES, peak)
    assert explain(RULES, peak) == "2 missing episodes from 1 agency within 1 day scoring 4 (" \
                                   "emerging from 4)"


def test_version_1_rules_give_no_explanation() -> None:
    v1 = load_rules(RULES_DIR / "default-v1.toml")
    _, alerts = run([episode_event(f"m{i}", T0 + i * DAY) for i in range(3)], rules=v1)
    assert alerts and all(a.explanation is None for a in alerts)


def test_the_hub_page_shows_why_the_alert_fired(tmp_path: Path) -> None:
    """Through the inbox's store (real SQLite, migrated) to the hub's alert page."""
    stream = [episode_event(f"m{i}", T0 + i * 5 * DAY) for i in range(3)]
    alert = run(stream)[1][-1]
    assert alert.explanation
    routed = RoutedAlert("f" * 32, alert, "csc-leeds", "E08000035",
                         RouteReason.RESPONSIBLE_AUTHORITY, 0, T0 + DAY)
    store = InboxStore(make_engine(f"sqlite:///{tmp_path / 'inbox.db'}"))
    migrate(store.engine)
    assert store.save([(routed, encode(routed))], received_at=T0) == 1
    users = Directory({"sw-1": User("sw-1", "csc-leeds", hash_password("pw"))})
    viewed: list[str] = []
    outlet = Outlet(Journal(viewed), Journal(viewed))  # views are journalled, not published
    client = TestClient(create_hub(Hub(store, {"csc-leeds": outlet}, lambda: T0), users,
                                   "s" * 32))
    assert client.post("/login", data={"ref": "sw-1", "password": "pw"},
                       follow_redirects=False).status_code == 303
    page = client.get(f"/alerts/{routed.notification_id}")
    assert page.status_code == 200
    assert f'<dd id="explanation">{alert.explanation}</dd>' in page.text
    assert viewed == [alert.alert_id]
    detail = client.get(f"/api/alerts/{routed.notification_id}")  # and the JSON API's
    assert detail.status_code == 200 and detail.json()["explanation"] == alert.explanation


class Journal:
    """Records the alert ids of the audit entries the page writes (a view, here)."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def record(self, action: object, subject_id: str, actor: str, digest: bytes,
               at_ms: int) -> None:
        self.seen.append(subject_id)

    def flush(self, timeout: float = 60.0) -> None:
        pass

    def publish(self, ack: object) -> None:
        raise AssertionError("nothing is published by viewing an alert")
