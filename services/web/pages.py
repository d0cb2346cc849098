"""What the hub's page and the agencies' re-identification page share: sign-in with a signed
session cookie (SameSite=strict, HttpOnly), a per-session CSRF token on every form, server-
rendered Jinja2 pages with the same filters, and the sign-in and sign-out routes.

No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.
"""

import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

from safehub.services.web.users import Directory, User

LONDON = ZoneInfo("Europe/London")
SESSION_HOURS = 8


def when(ms: int | None) -> str:
    """An event time as a practitioner reads it: local (UK) time, to the minute."""
    if ms is None:
        return ""
    local = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(LONDON)
    return local.strftime("%a %d %b %Y %H:%M")


def labeller(labels: Mapping[str, str]) -> Callable[[str | None], str]:
    """A coded value in words: its label if it has one, else the code in sentence case."""
    def label(symbol: str | None) -> str:
        text = symbol or ""
        return labels.get(text) or text.replace("_", " ").capitalize()
    return label


class SignedInPages:
    """Sign-in and page rendering for one app. `admits` says whom this app serves at all: a
    user it does not admit cannot sign in, and an old session of theirs is not honoured."""

    def __init__(self, templates: Path, directory: Directory, landing: str,
                 admits: Callable[[User], bool] = lambda _user: True,
                 labels: Mapping[str, str] | None = None) -> None:
        self.templates = Jinja2Templates(directory=str(templates))
        self.templates.env.filters["when"] = when
        self.templates.env.filters["label"] = labeller(labels or {})
        self.directory = directory
        self.landing = landing
        self.admits = admits

    def install(self, app: FastAPI, session_secret: str, cookie: str) -> None:
        """The session middleware and the /login and /logout routes."""
        app.add_middleware(SessionMiddleware, secret_key=session_secret, same_site="strict",
                           https_only=False, max_age=SESSION_HOURS * 3600,
                           session_cookie=cookie)

        @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
        def login_form(request: Request) -> HTMLResponse:
            return self.page(request, "login.html", None, error=None)

        @app.post("/login", include_in_schema=False, response_model=None)
        def login(request: Request, ref: Annotated[str, Form()],
                  password: Annotated[str, Form()]) -> Response:
            user = self.directory.authenticate(ref, password)
            if user is None or not self.admits(user):
                return self.page(request, "login.html", None,
                                 error="Unknown user or wrong password.")
            request.session.clear()
            request.session["user"] = user.ref
            return RedirectResponse(self.landing, 303)

        @app.post("/logout", include_in_schema=False)
        def logout(request: Request) -> RedirectResponse:
            request.session.clear()
            return RedirectResponse("/login", 303)

    def current(self, request: Request) -> User | None:
        ref = request.session.get("user")
        user = self.directory.get(ref) if isinstance(ref, str) else None
        return user if user is not None and self.admits(user) else None

    def api_user(self, request: Request) -> User:
        """The signed-in user, for the JSON API (a FastAPI dependency); 401 otherwise."""
        user = self.current(request)
        if user is None:
            raise HTTPException(401, "sign in first")
        return user

    def csrf(self, request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = secrets.token_urlsafe(24)
            request.session["csrf"] = token
        return token

    def check_csrf(self, request: Request, token: str) -> None:
        if not secrets.compare_digest(token, str(request.session.get("csrf", ""))):
            raise HTTPException(400, "stale form: reload the page")

    def page(self, request: Request, name: str, user: User | None, status_code: int = 200,
             **context: Any) -> HTMLResponse:
        return self.templates.TemplateResponse(request, name, {
            "user": user, "csrf": self.csrf(request), **context}, status_code=status_code)
