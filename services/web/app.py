"""The hub's HTTP face: server-rendered pages (Jinja2) and a JSON API (described at
/openapi.json).

Sign-in, sessions, CSRF tokens and page rendering come from `pages.SignedInPages`. The app is
built by `create_app` from its collaborators; it connects to nothing.

No `from __future__ import annotations` here: FastAPI reads the endpoint annotations at
runtime, and dependencies defined inside create_app cannot be resolved from strings.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel

from safehub.consumers.inbox.models import InboxAlert
from safehub.consumers.inbox.store import (
    MAX_PAGE_SIZE,
    SORTS,
    STATUSES,
    QueueFilter,
    QueuePage,
)
from safehub.errors import BrokerError, StoreError, ValidationError
from safehub.schemas.vocabulary import (
    Decision,
    DeclineReason,
    LawfulBasis,
    Rationale,
    ReidPurpose,
    RouteReason,
    Tier,
)
from safehub.services.web.hub import Hub, NotFound
from safehub.services.web.pages import SignedInPages
from safehub.services.web.reidentification import HubReidentification, NoSuchRequest, ViewReason
from safehub.services.web.users import Directory, User

TEMPLATES = Path(__file__).with_name("templates")


class EvidenceOut(BaseModel):
    event_id: str
    agency_id: str
    sector: str
    indicator: str
    occurred_at: int
    weight: float


class AlertOut(BaseModel):
    notification_id: str
    alert_id: str
    tier: str
    rule: str
    score: float
    age_years: int
    local_authority: str
    placing_authority: str | None
    reason: str
    escalation_level: int
    raised_at: int
    ack_deadline: int
    status: str
    decision: str | None
    overdue: bool


class AlertDetailOut(AlertOut):
    rules_version: str
    agencies: list[str]
    identity_conflict: bool
    authority_conflict: str | None  # the codes agencies gave, when they disagree
    explanation: str | None  # why it fired, in plain words (None for alerts of rules v1)
    evidence: list[EvidenceOut]
    reidentification_agencies: list[str]


class DecisionIn(BaseModel):
    decision: Decision
    lawful_basis: LawfulBasis | None = None
    rationale: Rationale | None = None


class ReidIn(BaseModel):
    agencies: list[str]
    lawful_basis: LawfulBasis
    purpose: ReidPurpose
    basis_reason: str | None = None


class ReidOut(BaseModel):
    request_id: str
    agency_id: str
    lawful_basis: str
    purpose: str
    status: str
    decline_reason: str | None
    requested_at: int
    answered_at: int | None
    expires_at: int | None
    kept: bool


class ViewIn(BaseModel):
    reason: ViewReason


class IdentityOut(BaseModel):
    first_name: str
    surname: str
    date_of_birth: str
    nhs_number: str | None
    postcode: str | None
    record_refs: list[str]


class ActOut(BaseModel):
    ack_id: str
    published: bool


def _overdue(row: InboxAlert, now: int) -> bool:
    # A host authority's copy is for information: nothing escalates if it is not acknowledged.
    return (row.status == "NEW" and row.ack_deadline <= now
            and row.reason != RouteReason.HOST_AUTHORITY.value)


def _summary(row: InboxAlert, now: int) -> dict[str, Any]:
    return {k: getattr(row, k) for k in AlertOut.model_fields if k != "overdue"} | {
        "overdue": _overdue(row, now)}


def _detail(row: InboxAlert, now: int) -> AlertDetailOut:
    return AlertDetailOut(
        **_summary(row, now), rules_version=row.rules_version, agencies=row.agencies.split(),
        identity_conflict=row.identity_conflict, authority_conflict=row.authority_conflict,
        explanation=row.explanation,
        evidence=[EvidenceOut(event_id=e.event_id, agency_id=e.agency_id, sector=e.sector,
                              indicator=e.indicator, occurred_at=e.occurred_at, weight=e.weight)
                  for e in row.evidence],
        reidentification_agencies=sorted({r.agency_id for r in row.reidentification}))


def _invalid(name: str, message: str) -> RequestValidationError:
    # FastAPI's own 422 shape (the one /openapi.json describes), not a bare string detail.
    return RequestValidationError([{"type": "value_error", "loc": ("query", name),
                                    "msg": message, "input": None}])


def _choice(values: Sequence[str]) -> str:
    # "" is allowed: HTML forms send it for "any".
    return "^(" + "|".join(values) + ")?$"


# A whole number of at most 9 digits (or "", no filter): the description says what is
# accepted, and no number so large that the database cannot compare or offset by it.
WHOLE = r"^\s*\d{0,9}\s*$"


def _optional_int(name: str, text: str | None) -> int | None:
    # HTML forms send "" for an empty field: that means "no filter", not an error.
    if text is None or not text.strip():
        return None
    try:
        number = int(text)
    except ValueError:
        raise _invalid(name, f"{name} must be a whole number") from None
    if not 0 <= number < 10**9:
        raise _invalid(name, f"{name} must be from 0 to 999999999")
    return number


def queue_filter(tier: Annotated[str | None, Query(pattern=_choice(list(Tier.__members__)))]
                 = None,
                 status: Annotated[str | None, Query(pattern=_choice(STATUSES))] = None,
                 min_age: Annotated[str | None, Query(pattern=WHOLE)] = None,
                 max_age: Annotated[str | None, Query(pattern=WHOLE)] = None,
                 overdue: bool = False,
                 sort: Annotated[str | None, Query(pattern=_choice(SORTS))] = None
                 ) -> QueueFilter:
    """The queue's filters: tier, status, the child's age range (years), overdue only; and its
    order: "newest" (the default: undecided first, newest first) or "deadline"."""
    if tier and tier not in Tier.__members__:
        raise _invalid("tier", f"tier must be one of {list(Tier.__members__)}")
    if status and status not in STATUSES:
        raise _invalid("status", f"status must be one of {STATUSES}")
    if sort and sort not in SORTS:
        raise _invalid("sort", f"sort must be one of {SORTS}")
    return QueueFilter(tier or None, status or None, _optional_int("min_age", min_age),
                       _optional_int("max_age", max_age), overdue, sort or SORTS[0])


Filter = Annotated[QueueFilter, Depends(queue_filter)]
DEFAULT_PAGE_SIZE = 50
# page: 1 or more; limit: 1 to MAX_PAGE_SIZE (500); or "" for the default.
PAGE = r"^\s*(0*[1-9]\d{0,8})?\s*$"
LIMIT = r"^\s*(0*([1-9]\d?|[1-4]\d\d|500))?\s*$"


def queue_paging(page: Annotated[str | None, Query(pattern=PAGE)] = None,
                 limit: Annotated[str | None, Query(pattern=LIMIT)] = None
                 ) -> tuple[int, int]:
    """(page from 1, rows per page up to MAX_PAGE_SIZE): the queue is paged, never cut."""
    number = _optional_int("page", page)
    number = 1 if number is None else number
    size = _optional_int("limit", limit)
    size = DEFAULT_PAGE_SIZE if size is None else size
    if number < 1:
        raise _invalid("page", "page must be 1 or more")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise _invalid("limit", f"limit must be from 1 to {MAX_PAGE_SIZE}")
    return number, size


Paging = Annotated[tuple[int, int], Depends(queue_paging)]


def queue_query(flt: QueueFilter, page: int, size: int) -> str:
    """The query string of one page of the queue with these filters (defaults left out)."""
    params: dict[str, str | int] = {k: v for k, v in (
        ("tier", flt.tier), ("status", flt.status), ("min_age", flt.min_age),
        ("max_age", flt.max_age)) if v is not None}
    if flt.overdue:
        params["overdue"] = "true"
    if flt.sort != SORTS[0]:
        params["sort"] = flt.sort
    if size != DEFAULT_PAGE_SIZE:
        params["limit"] = size
    params["page"] = page
    return urlencode(params)


def page_links(base: str, flt: QueueFilter, result: QueuePage) -> dict[str, str]:
    """The previous and next pages' addresses, where there are such pages."""
    links: dict[str, str] = {}
    if result.has_previous:
        # Past the end (a stale link): "previous" leads back to the last page that has rows.
        previous = min(result.page - 1, result.pages)
        links["prev"] = f"{base}?{queue_query(flt, previous, result.size)}"
    if result.has_next:
        links["next"] = f"{base}?{queue_query(flt, result.page + 1, result.size)}"
    return links


def _reid_out(row: Any) -> ReidOut:
    return ReidOut(request_id=row.request_id, agency_id=row.agency_id,
                   lawful_basis=row.lawful_basis, purpose=row.purpose, status=row.status,
                   decline_reason=row.decline_reason, requested_at=row.requested_at,
                   answered_at=row.answered_at, expires_at=row.expires_at,
                   kept=row.kept_at is not None)


NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class Problem(BaseModel):
    detail: str


# The answers every API operation may give besides its own: described, so that clients (and
# the schemathesis run, tests/integration/test_web_schemathesis.py) know them.
API_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Not signed in"},
    403: {"description": "A cross-site request, refused (plain text)",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    404: {"model": Problem,
          "description": "No such alert for this hub (another hub's alert is not disclosed)"},
    503: {"description": "The hub database or the audit log is unavailable",
          "content": {"text/html": {"schema": {"type": "string"}}}},
}


def create_app(hub: Hub, directory: Directory, session_secret: str,
               reid: HubReidentification | None = None,
               secure_cookies: bool = False) -> FastAPI:
    # No /docs or /redoc: their pages load Swagger UI and ReDoc from a public CDN, script that
    # would run signed in. /openapi.json stays public: it holds no data, only the API's shape,
    # which the source shows anyway, and integrators' tools fetch it without a session.
    app = FastAPI(title="safehub hub inbox", version="1",
                  description="Alerts routed to this agency's safeguarding hub.",
                  docs_url=None, redoc_url=None, responses=API_ERRORS)
    pages = SignedInPages(TEMPLATES, directory, landing="/alerts")
    pages.install(app, session_secret, cookie="safehub_session", secure=secure_cookies)
    api_user, page = pages.api_user, pages.page
    PageUser = Annotated[User, Depends(pages.page_user)]
    FormUser = Annotated[User, Depends(pages.form_user)]

    @app.exception_handler(StoreError)
    async def store_down(_request: Request, _exc: StoreError) -> Response:
        return HTMLResponse("The hub database is unavailable; try again shortly.", 503)

    @app.exception_handler(BrokerError)
    async def audit_down(_request: Request, _exc: BrokerError) -> Response:
        # Nothing is shown that could not be recorded in the audit log.
        return HTMLResponse("The audit log is unavailable; try again shortly.", 503)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/alerts", 303)

    @app.get("/alerts", response_class=HTMLResponse, include_in_schema=False, response_model=None)
    def queue_page(request: Request, user: PageUser, flt: Filter, paging: Paging) -> Response:
        now = hub.clock()
        result = hub.store.queue_page(user.agency, flt, now, *paging)
        rows = result.rows
        return page(request, "queue.html", user, rows=rows, result=result, flt=flt, now=now,
                    links=page_links("/alerts", flt, result),
                    overdue={r.notification_id for r in rows if _overdue(r, now)},
                    tiers=[t.value for t in Tier], statuses=STATUSES, sorts=SORTS)

    @app.get("/alerts/{notification_id}", response_class=HTMLResponse, include_in_schema=False,
             response_model=None)
    def alert_page(request: Request, user: PageUser, notification_id: str) -> Response:
        try:
            row = hub.view(user, notification_id)
        except NotFound:
            return page(request, "missing.html", user, status_code=404)
        return page(request, "alert.html", user, row=row, decisions=list(Decision),
                    overdue=_overdue(row, hub.clock()), published=request.query_params.get("p"),
                    bases=list(LawfulBasis), rationales=list(Rationale),
                    purposes=list(ReidPurpose), view_reasons=list(ViewReason),
                    decline_reasons={d.value: d for d in DeclineReason},
                    reid_enabled=reid is not None,
                    requests=reid.of_alert(user, notification_id) if reid else [],
                    error=request.query_params.get("e"))

    @app.post("/alerts/{notification_id}/ack", include_in_schema=False)
    def ack_form(request: Request, user: FormUser, notification_id: str) -> Response:
        return _act_form(request, user, notification_id, None)

    @app.post("/alerts/{notification_id}/decision", include_in_schema=False)
    def decision_form(request: Request, user: FormUser, notification_id: str,
                      decision: Annotated[Decision, Form()],
                      lawful_basis: Annotated[LawfulBasis, Form()],
                      rationale: Annotated[Rationale, Form()]) -> Response:
        return _act_form(request, user, notification_id, decision, lawful_basis, rationale)

    def _act_form(request: Request, user: User, notification_id: str,
                  decision: Decision | None, basis: LawfulBasis | None = None,
                  rationale: Rationale | None = None) -> Response:
        try:
            outcome = hub.act(user, notification_id, decision, basis, rationale)
        except NotFound:
            return page(request, "missing.html", user, status_code=404)
        flag = "1" if outcome.published else "0"
        return RedirectResponse(f"/alerts/{notification_id}?p={flag}", 303)

    @app.get("/api/alerts", response_model=list[AlertOut], tags=["alerts"])
    def api_queue(user: Annotated[User, Depends(api_user)], flt: Filter, paging: Paging,
                  response: Response) -> list[dict[str, Any]]:
        """One page of the queue (`page`, `limit`: 50 by default, at most 500). The body stays
        a list; `X-Total-Count` says how many alerts match in all, `Link` names the
        previous and next pages, so a client can always tell it has not seen everything."""
        now = hub.clock()
        result = hub.store.queue_page(user.agency, flt, now, *paging)
        response.headers["X-Total-Count"] = str(result.total)
        response.headers["X-Page"] = str(result.page)
        response.headers["X-Page-Size"] = str(result.size)
        links = page_links("/api/alerts", flt, result)
        if links:
            response.headers["Link"] = ", ".join(f'<{url}>; rel="{rel}"'
                                                 for rel, url in links.items())
        return [_summary(r, now) for r in result.rows]

    @app.get("/api/alerts/{notification_id}", response_model=AlertDetailOut, tags=["alerts"])
    def api_alert(user: Annotated[User, Depends(api_user)], notification_id: str
                  ) -> AlertDetailOut:
        try:
            return _detail(hub.view(user, notification_id), hub.clock())
        except NotFound:
            raise HTTPException(404, "no such alert") from None

    @app.post("/api/alerts/{notification_id}/ack", response_model=ActOut, tags=["alerts"])
    def api_ack(user: Annotated[User, Depends(api_user)], notification_id: str) -> ActOut:
        return _api_act(user, notification_id, None)

    @app.post("/api/alerts/{notification_id}/decision", response_model=ActOut, tags=["alerts"])
    def api_decide(user: Annotated[User, Depends(api_user)], notification_id: str,
                   body: DecisionIn) -> ActOut:
        return _api_act(user, notification_id, body.decision, body.lawful_basis,
                        body.rationale)

    def _api_act(user: User, notification_id: str, decision: Decision | None,
                 basis: LawfulBasis | None = None, rationale: Rationale | None = None
                 ) -> ActOut:
        try:
            outcome = hub.act(user, notification_id, decision, basis, rationale)
        except NotFound:
            raise HTTPException(404, "no such alert") from None
        return ActOut(ack_id=outcome.ack.ack_id, published=outcome.published)

    # --- re-identification ------------------------------------------------------------------

    def reid_service() -> HubReidentification:
        if reid is None:
            raise HTTPException(404, "re-identification is not configured for this hub")
        return reid

    @app.post("/alerts/{notification_id}/reidentification", include_in_schema=False)
    def reid_form(request: Request, user: FormUser, notification_id: str,
                  lawful_basis: Annotated[LawfulBasis, Form()],
                  purpose: Annotated[ReidPurpose, Form()],
                  agency: Annotated[list[str] | None, Form()] = None,
                  basis_reason: Annotated[str | None, Form()] = None) -> Response:
        try:
            reid_service().ask(user, notification_id, agency or [], lawful_basis, purpose,
                               basis_reason)
        except (NotFound, NoSuchRequest):
            return page(request, "missing.html", user, status_code=404)
        except ValidationError as exc:
            return RedirectResponse(f"/alerts/{notification_id}?e={exc.field}", 303)
        return RedirectResponse(f"/alerts/{notification_id}#reidentification", 303)

    @app.post("/alerts/{notification_id}/reidentification/{request_id}/open",
              include_in_schema=False, response_model=None)
    def reid_open_form(request: Request, user: FormUser, notification_id: str, request_id: str,
                       reason: Annotated[ViewReason, Form()]) -> Response:
        try:
            service = reid_service()
            identity = service.open(user, notification_id, request_id, reason)
            row = service.requests.get(user.agency, request_id)
        except (NotFound, NoSuchRequest):
            return page(request, "missing.html", user, status_code=404)
        response = page(request, "identity.html", user, identity=identity, answer=row,
                        notification_id=notification_id)
        response.headers.update(NO_STORE)
        return response

    @app.post("/alerts/{notification_id}/reidentification/{request_id}/keep",
              include_in_schema=False)
    def reid_keep_form(request: Request, user: FormUser, notification_id: str,
                       request_id: str) -> Response:
        try:
            reid_service().keep(user, notification_id, request_id)
        except (NotFound, NoSuchRequest):
            return page(request, "missing.html", user, status_code=404)
        return RedirectResponse(f"/alerts/{notification_id}#reidentification", 303)

    @app.get("/api/alerts/{notification_id}/reidentification", response_model=list[ReidOut],
             tags=["re-identification"])
    def api_reid_list(user: Annotated[User, Depends(api_user)], notification_id: str
                      ) -> list[ReidOut]:
        if hub.store.alert(user.agency, notification_id) is None:
            raise HTTPException(404, "no such alert")
        return [_reid_out(r) for r in reid_service().of_alert(user, notification_id)]

    @app.post("/api/alerts/{notification_id}/reidentification", response_model=list[ReidOut],
              tags=["re-identification"])
    def api_reid_ask(user: Annotated[User, Depends(api_user)], notification_id: str,
                     body: ReidIn) -> list[ReidOut]:
        try:
            rows = reid_service().ask(user, notification_id, body.agencies, body.lawful_basis,
                                      body.purpose, body.basis_reason)
        except (NotFound, NoSuchRequest):
            raise HTTPException(404, "no such alert") from None
        except ValidationError as exc:
            # FastAPI's own 422 shape, as described; the message names the field, never a value.
            raise RequestValidationError([{"type": "value_error", "loc": ("body", exc.field),
                                           "msg": str(exc), "input": None}]) from None
        return [_reid_out(r) for r in rows]

    @app.post("/api/alerts/{notification_id}/reidentification/{request_id}/open",
              response_model=IdentityOut, tags=["re-identification"])
    def api_reid_open(user: Annotated[User, Depends(api_user)], notification_id: str,
                      request_id: str, body: ViewIn, response: Response) -> IdentityOut:
        try:
            identity = reid_service().open(user, notification_id, request_id, body.reason)
        except (NotFound, NoSuchRequest):
            raise HTTPException(404, "no approved answer to open") from None
        response.headers.update(NO_STORE)
        return IdentityOut(first_name=identity.first_name, surname=identity.surname,
                           date_of_birth=identity.date_of_birth, nhs_number=identity.nhs_number,
                           postcode=identity.postcode, record_refs=list(identity.record_refs))

    return app
