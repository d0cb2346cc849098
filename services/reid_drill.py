"""A scripted re-identification drill against a running hub and agencies' desk (`safehub demo
--reid-drill N`), through their HTTP APIs only, as their users would work it.

Hub users sign in to the hub's page and ask every contributing agency of N alerts who the child
is (the most serious alerts first); each asked agency's designated officer signs in to the
agencies' page and approves about half of the requests in turn, declining the rest with a coded
reason; the drill waits for every answer to reach the hub through the hub's inbox, then opens
every approved identity with a stated reason. Every step is therefore real: the requests and
answers cross the broker, the answers are stored sealed in the inbox database, and each step is
audited where it happens.

The identities the hub opens are read and dropped at once: the drill counts them and never
prints, logs or keeps them. Errors name the step, the path and the HTTP status, never a body.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from safehub.errors import SafehubError
from safehub.schemas.vocabulary import DeclineReason, LawfulBasis, ReidPurpose

TIER_ORDER = {"HIGH": 0, "ESCALATING": 1, "EMERGING": 2}
DECLINE_REASONS = (DeclineReason.NOT_NECESSARY_OR_PROPORTIONATE, DeclineReason.BASIS_NOT_MET,
                   DeclineReason.PREJUDICES_INVESTIGATION, DeclineReason.SHARED_BY_OTHER_ROUTE)
VIEW_REASON = "STRATEGY_MEETING"


class DrillError(SafehubError):
    """A step of the drill did not go through."""


@dataclass
class DrillResult:
    alerts: int = 0
    requests: int = 0
    approved: int = 0
    declined: int = 0
    not_found: int = 0
    opened: int = 0
    hubs: list[str] = field(default_factory=list)
    agencies: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Asked:
    hub_user: str
    notification_id: str
    request_id: str
    agency_id: str


def _call(client: httpx.Client, method: str, path: str, step: str,
          **kwargs: Any) -> httpx.Response:
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise DrillError(f"{step}: {method} {path} failed ({type(exc).__name__})") from None
    if response.status_code >= 400 and response.status_code != 404:
        raise DrillError(f"{step}: {method} {path} answered {response.status_code}")
    return response


@contextmanager
def signed_in(base: str, ref: str, password: str, verify: ssl.SSLContext | bool = True
              ) -> Iterator[httpx.Client]:
    """A session on a safehub page (hub or agencies), as `ref`; `verify`: the trust for its
    HTTPS certificate (the demo's pages use a local CA)."""
    client = httpx.Client(base_url=base, timeout=30, verify=verify)
    try:
        response = _call(client, "POST", "/login", f"sign in as {ref}",
                         data={"ref": ref, "password": password})
        if response.status_code != 303:  # the login page again: refused
            raise DrillError(f"sign in as {ref} at {base} was refused")
        yield client
    finally:
        client.close()


def _candidates(hubs: Mapping[str, httpx.Client]) -> list[tuple[int, str, str]]:
    """(tier order, notification id, hub user) of every alert the hub users see."""
    out = []
    for user, client in hubs.items():
        for alert in _call(client, "GET", "/api/alerts", "list alerts").json():
            out.append((TIER_ORDER.get(alert["tier"], 9), alert["notification_id"], user))
    return sorted(out)


def ask(hubs: Mapping[str, httpx.Client], count: int) -> list[Asked]:
    """Ask every contributing agency of `count` alerts (most serious first)."""
    asked: list[Asked] = []
    alerts = 0
    for _tier, nid, user in _candidates(hubs):
        if alerts >= count:
            break
        client = hubs[user]
        detail = _call(client, "GET", f"/api/alerts/{nid}", "read alert").json()
        agencies = detail["reidentification_agencies"]
        if not agencies:
            continue
        path = f"/api/alerts/{nid}/reidentification"
        response = _call(client, "POST", path, "ask", json={
            "agencies": agencies, "lawful_basis": LawfulBasis.DPA_SCH8_PARA4_SAFEGUARDING.value,
            "purpose": ReidPurpose.STRATEGY_MEETING.value})
        if response.status_code == 404:
            raise DrillError(f"ask: POST {path} answered 404 (re-identification not configured?)")
        asked += [Asked(user, nid, row["request_id"], row["agency_id"])
                  for row in response.json()]
        alerts += 1
    return asked


def decide(officers: Mapping[str, httpx.Client], asked: Sequence[Asked], deadline: float,
           check: Callable[[], None]) -> dict[str, str]:
    """Each officer approves every other request (in request order) and declines the rest,
    once the request has reached their desk. Returns request id -> outcome."""
    outcomes: dict[str, str] = {}
    waiting = sorted(asked, key=lambda a: (a.agency_id, a.request_id))
    turn = 0
    while waiting:
        check()
        later = []
        for a in waiting:
            client = officers[a.agency_id]
            response = _call(client, "GET", f"/api/requests/{a.request_id}", "officer reads")
            if response.status_code == 404:
                later.append(a)  # not received yet
                continue
            held = response.json()
            if held["outcome"]:
                outcomes[a.request_id] = held["outcome"]  # the desk answered "not found" itself
                continue
            if held["status"] != "PENDING":
                later.append(a)  # none of the handles is this agency's: "not found" is on its way
                continue
            if turn % 2 == 0:
                answer = _call(client, "POST", f"/api/requests/{a.request_id}/approve",
                               "approve").json()
            else:
                reason = DECLINE_REASONS[(turn // 2) % len(DECLINE_REASONS)]
                answer = _call(client, "POST", f"/api/requests/{a.request_id}/decline",
                               "decline", json={"reason": reason.value}).json()
            turn += 1
            outcomes[a.request_id] = answer["outcome"]
        waiting = later
        if waiting:
            if time.monotonic() > deadline:
                raise DrillError(f"{len(waiting)} request(s) never reached the agencies' desk")
            time.sleep(0.5)
    return outcomes


def await_answers(hubs: Mapping[str, httpx.Client], asked: Sequence[Asked], deadline: float,
                  check: Callable[[], None]) -> dict[str, str]:
    """request id -> status at the hub, once every request has its answer there."""
    alerts = sorted({(a.hub_user, a.notification_id) for a in asked})
    wanted = {a.request_id for a in asked}
    while True:
        check()
        status: dict[str, str] = {}
        for user, nid in alerts:
            rows = _call(hubs[user], "GET", f"/api/alerts/{nid}/reidentification",
                         "hub reads answers").json()
            status.update({r["request_id"]: r["status"] for r in rows})
        if all(status.get(r, "REQUESTED") != "REQUESTED" for r in wanted):
            return {r: status[r] for r in wanted}
        if time.monotonic() > deadline:
            missing = sum(1 for r in wanted if status.get(r, "REQUESTED") == "REQUESTED")
            raise DrillError(f"{missing} answer(s) never reached the hub")
        time.sleep(0.5)


def open_approved(hubs: Mapping[str, httpx.Client], asked: Sequence[Asked],
                  status: Mapping[str, str]) -> int:
    opened = 0
    for a in asked:
        if status[a.request_id] != "APPROVED":
            continue
        path = f"/api/alerts/{a.notification_id}/reidentification/{a.request_id}/open"
        response = _call(hubs[a.hub_user], "POST", path, "open", json={"reason": VIEW_REASON})
        if response.status_code != 200 or "surname" not in response.json():
            raise DrillError(f"open: POST {path} answered {response.status_code}")
        del response  # the identity: counted, never kept
        opened += 1
    return opened


def run_drill(hub_url: str, agencies_url: str, password: str, hub_users: Sequence[str],
              officers: Mapping[str, str], count: int, check: Callable[[], None],
              timeout: float = 120.0, verify: ssl.SSLContext | bool = True) -> DrillResult:
    """The whole drill; `officers` is agency -> its officer's sign-in."""
    started = time.monotonic()
    deadline = started + timeout
    result = DrillResult()
    with ExitStack() as stack:
        hubs = {u: stack.enter_context(signed_in(hub_url, u, password, verify)) for u in hub_users}
        asked = ask(hubs, count)
        agencies = sorted({a.agency_id for a in asked})
        unknown = [a for a in agencies if a not in officers]
        if unknown:
            raise DrillError(f"no officer for {', '.join(unknown)}")
        desks = {a: stack.enter_context(signed_in(agencies_url, officers[a], password,
                                                       verify))
                 for a in agencies}
        decide(desks, asked, deadline, check)
        status = await_answers(hubs, asked, deadline, check)
        result.opened = open_approved(hubs, asked, status)
    outcomes = list(status.values())
    result.alerts = len({a.notification_id for a in asked})
    result.requests = len(asked)
    result.approved = outcomes.count("APPROVED")
    result.declined = outcomes.count("DECLINED")
    result.not_found = outcomes.count("NOT_FOUND")
    result.hubs = sorted({a.hub_user for a in asked})
    result.agencies = agencies
    result.seconds = round(time.monotonic() - started, 1)
    return result
