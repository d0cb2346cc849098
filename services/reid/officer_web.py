"""The designated officer's page (Jinja2) and JSON API for an agency's re-identification requests.

Sign-in, sessions and CSRF as on the hub's page (`safehub.services.web.pages`: users file, scrypt,
signed cookie, per-session CSRF tokens). A user sees only their own agency's requests:
another agency's request id is answered 404, so its existence is not disclosed. The request page
shows the agency's own records behind each handle it issued, the officer's own data; the JSON
API shows references only, never an identity.

No `from __future__ import annotations`: FastAPI reads endpoint annotations at runtime.
"""

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel

from safehub.errors import BrokerError, StoreError
from safehub.schemas.records import ReidResponse
from safehub.schemas.vocabulary import DeclineReason
from safehub.services.reid.desk import AlreadyDecided, DeskError
from safehub.services.reid.office import NotFound, Office
from safehub.services.reid.store import StoredRequest
from safehub.services.web.pages import SignedInPages
from safehub.services.web.users import Directory, User

TEMPLATES = Path(__file__).with_name("templates")


class RequestOut(BaseModel):
    request_id: str
    alert_id: str
    hub_id: str
    lawful_basis: str
    purpose: str
    requested_by: str
    requested_at: int
    received_at: int
    status: str
    outcome: str | None
    decline_reason: str | None


class HandleOut(BaseModel):
    reid_handle: str
    person_ref: str | None
    record_refs: list[str]
    identity_held: bool


class RequestDetailOut(RequestOut):
    handles_asked: int
    known: list[HandleOut]  # the handles this agency issued; the others are not its to answer


class DeclineIn(BaseModel):
    reason: DeclineReason


class AnswerOut(BaseModel):
    request_id: str
    response_id: str
    outcome: str
    decline_reason: str | None


def _out(s: StoredRequest) -> dict[str, Any]:
    r = s.request
    return {"request_id": r.request_id, "alert_id": r.alert_id, "hub_id": r.hub_id,
            "lawful_basis": r.lawful_basis.value, "purpose": r.purpose.value,
            "requested_by": r.user_ref, "requested_at": r.requested_at,
            "received_at": s.received_at, "status": s.status,
            "outcome": s.outcome.value if s.outcome else None,
            "decline_reason": s.decline_reason.value if s.decline_reason else None}


def _answer_out(response: ReidResponse) -> AnswerOut:
    return AnswerOut(request_id=response.request_id, response_id=response.response_id,
                     outcome=response.outcome.value,
                     decline_reason=response.decline_reason.value
                     if response.decline_reason else None)


# What the coded values mean, in the words an information-governance officer uses.
LABELS = {
    "DPA_SCH8_PARA4_SAFEGUARDING": "DPA 2018 Schedule 8 paragraph 4 (safeguarding of children "
                                   "and individuals at risk)",
    "DPA_SCH1_PARA18_SAFEGUARDING": "DPA 2018 Schedule 1 paragraph 18 (safeguarding of "
                                    "children and individuals at risk)",
    "CONSENT": "Consent",
    "OTHER": "Other",
    "SECTION_47_ENQUIRY": "Section 47 enquiry",
    "MASH_RESEARCH": "MASH research",
    "BASIS_NOT_MET": "The lawful basis is not met",
    "NOT_NECESSARY_OR_PROPORTIONATE": "Not necessary or proportionate",
    "PREJUDICES_INVESTIGATION": "Sharing would prejudice an investigation",
    "SHARED_BY_OTHER_ROUTE": "Shared by another route",
}


def create_app(offices: Mapping[str, Office], directory: Directory,
               session_secret: str, secure_cookies: bool = False) -> FastAPI:
    # No /docs or /redoc (they load script from a public CDN); /openapi.json stays public, as
    # on the hub's page (safehub.services.web.app says why).
    app = FastAPI(title="safehub re-identification desk", version="1",
                  description="Re-identification requests made to this agency.",
                  docs_url=None, redoc_url=None)
    pages = SignedInPages(TEMPLATES, directory, landing="/requests",
                          admits=lambda user: user.agency in offices, labels=LABELS,
                          sign_in_note="For the agency's designated officer for "
                                       "re-identification requests.")
    pages.install(app, session_secret, cookie="safehub_reid", secure=secure_cookies)
    current, api_user, page = pages.current, pages.api_user, pages.page
    PageUser = Annotated[User, Depends(pages.page_user)]
    FormUser = Annotated[User, Depends(pages.form_user)]

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def error(request: Request, status: int, text: str) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": text}, status)
        return HTMLResponse(f"<p id=\"error\">{html.escape(text)}</p>", status)

    @app.exception_handler(StoreError)
    async def store_down(request: Request, _exc: StoreError) -> Response:
        return error(request, 503, "The agency's database is unavailable; try again shortly.")

    @app.exception_handler(BrokerError)
    async def broker_down(request: Request, _exc: BrokerError) -> Response:
        # Nothing is decided that was not sent to the hub and recorded in the audit log.
        return error(request, 503, "The message broker is unavailable; nothing was sent and "
                                   "the request is still pending. Try again shortly.")

    @app.exception_handler(AlreadyDecided)
    async def decided(request: Request, _exc: AlreadyDecided) -> Response:
        return error(request, 409, "This request has already been answered.")

    @app.exception_handler(DeskError)
    async def refused(request: Request, exc: DeskError) -> Response:
        return error(request, 409, str(exc))

    @app.exception_handler(NotFound)
    async def missing(request: Request, _exc: NotFound) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": "no such request"}, 404)
        return page(request, "missing.html", current(request), status_code=404)

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/requests", 303)

    @app.get("/requests", response_class=HTMLResponse, include_in_schema=False,
             response_model=None)
    def pending_page(request: Request, user: PageUser) -> Response:
        return page(request, "requests.html", user, rows=offices[user.agency].pending())

    @app.get("/requests/{request_id}", response_class=HTMLResponse, include_in_schema=False,
             response_model=None)
    def request_page(request: Request, user: PageUser, request_id: str) -> Response:
        view = offices[user.agency].view(request_id)
        return page(request, "request.html", user, view=view, reasons=list(DeclineReason),
                    done=request.query_params.get("done"))

    @app.post("/requests/{request_id}/approve", include_in_schema=False, response_model=None)
    def approve_form(user: FormUser, request_id: str) -> Response:
        offices[user.agency].approve(request_id, user.ref)
        return RedirectResponse(f"/requests/{request_id}?done=approved", 303)

    @app.post("/requests/{request_id}/decline", include_in_schema=False, response_model=None)
    def decline_form(user: FormUser, request_id: str,
                     reason: Annotated[DeclineReason, Form()]) -> Response:
        offices[user.agency].decline(request_id, user.ref, reason)
        return RedirectResponse(f"/requests/{request_id}?done=declined", 303)

    @app.get("/api/requests", response_model=list[RequestOut], tags=["requests"])
    def api_pending(user: Annotated[User, Depends(api_user)]) -> list[dict[str, Any]]:
        return [_out(s) for s in offices[user.agency].pending()]

    @app.get("/api/requests/{request_id}", response_model=RequestDetailOut, tags=["requests"])
    def api_request(user: Annotated[User, Depends(api_user)], request_id: str
                    ) -> RequestDetailOut:
        view = offices[user.agency].view(request_id)
        return RequestDetailOut(
            **_out(view.stored), handles_asked=len(view.request.reid_handles),
            known=[HandleOut(reid_handle=h.reid_handle, person_ref=h.person_ref,
                             record_refs=list(h.record_refs),
                             identity_held=h.identity is not None) for h in view.records])

    @app.post("/api/requests/{request_id}/approve", response_model=AnswerOut,
              tags=["requests"])
    def api_approve(user: Annotated[User, Depends(api_user)], request_id: str) -> AnswerOut:
        return _answer_out(offices[user.agency].approve(request_id, user.ref))

    @app.post("/api/requests/{request_id}/decline", response_model=AnswerOut,
              tags=["requests"])
    def api_decline(user: Annotated[User, Depends(api_user)], request_id: str,
                    body: DeclineIn) -> AnswerOut:
        return _answer_out(offices[user.agency].decline(request_id, user.ref, body.reason))

    return app
