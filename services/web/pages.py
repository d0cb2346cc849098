"""What the hub's page and the agencies' re-identification page share: sign-in with a signed
session cookie (SameSite=strict, HttpOnly, Secure when served over TLS) naming a session this
process issued and has not signed out, sign-in throttling, a per-session CSRF token on every
form, a same-origin check on every POST, security headers on every response, server-rendered
Jinja2 pages with the same filters, and the sign-in and sign-out routes.

No `from __future__ import annotations`: FastAPI reads the route annotations at runtime.
"""

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from safehub.errors import ConfigError
from safehub.services.web.users import Directory, SignInThrottle, User

if TYPE_CHECKING:  # uvicorn is imported only by the commands that serve
    import uvicorn

log = logging.getLogger(__name__)
LONDON = ZoneInfo("Europe/London")
SESSION_HOURS = 8

# The pages are plain forms with one inline <style> block in each base template and no script:
# scripts are refused outright; inline styles are allowed (a nonce or hash would have to be
# kept in step with the templates, and escaped output cannot inject a <style> element anyway).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": under it browsers send "Origin: null" with the pages' own form POSTs,
    # which the same-origin check must refuse. "same-origin" still sends no address (alert ids
    # are in the paths) to another site, and a cross-site POST still carries Origin: null.
    "Referrer-Policy": "same-origin",
    # Every page and API answer is about children or their alerts: no cache keeps a copy.
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP level 2
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def same_origin(headers: Headers) -> bool:
    """Whether a state-changing request may come from a page of this site.

    Browsers send Origin on every cross-origin POST (form or fetch), and Sec-Fetch-Site on
    every request: either saying another site refuses it. A request with neither comes from a
    program, not a browser a page could drive, and is allowed (the API's own clients). The
    origin is compared with the Host the request was sent to, so a reverse proxy in front
    must pass Host through. "same-site" is refused too: a sibling subdomain is another party,
    and SameSite=strict cookies would still go with its requests.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host")
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


@dataclass(frozen=True, slots=True)
class Tls:
    """The certificate chain and private key a page is served with (PEM files)."""

    cert: Path
    key: Path

    @classmethod
    def from_options(cls, cert: str | None, key: str | None) -> "Tls | None":
        """Both or neither: a certificate without its key (or the reverse) is a mistake that
        must not quietly fall back to plain HTTP."""
        if not cert and not key:
            return None
        if not cert or not key:
            raise ConfigError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
        tls = cls(Path(cert), Path(key))
        for path in (tls.cert, tls.key):
            if not path.is_file():
                raise ConfigError(f"TLS file not found: {path}")
        return tls


PLAIN_HTTP_FLAG = "--plain-http-behind-proxy"


def local_certificate(folder: Path) -> tuple[Tls, Path]:
    """A certificate for 127.0.0.1 and localhost from the project's local CA in `folder`
    (safehub.deploy.kafka.certificates, made once and kept), and the CA file a browser or
    client must trust. Its own folder, never the Kafka cluster's: that node certificate is
    also the brokers' client identity, which a web process must not hold."""
    from safehub.deploy.kafka.certificates import ensure_certificates

    certs = ensure_certificates(folder)
    # node.pem holds the key and the chain; Python's ssl reads it as both.
    return Tls(certs.node_file, certs.node_file), certs.ca_file


def serving_tls(cert: str | None, key: str | None, plain_http: bool, local: Path
                ) -> Tls | None:
    """How a page is served: HTTPS by default. With a certificate and key, those; without,
    a local certificate made in `local` (its CA's path is logged, for the browser to trust).
    Plain HTTP only when told so explicitly (`--plain-http-behind-proxy`), for a TLS proxy in
    front on the same host or pod."""
    if plain_http:
        if cert or key:
            raise ConfigError(f"{PLAIN_HTTP_FLAG} and a TLS certificate: choose one")
        log.warning("serving plain HTTP (%s): only for a TLS proxy in front", PLAIN_HTTP_FLAG)
        return None
    tls = Tls.from_options(cert, key)
    if tls is not None:
        return tls
    tls, ca_file = local_certificate(local)
    log.warning("no --tls-cert/--tls-key: serving HTTPS with a local certificate for 127.0.0.1 "
                "and localhost; trust its CA, %s", ca_file)
    return tls


def server_config(app: FastAPI, host: str, port: int, tls: Tls | None) -> "uvicorn.Config":
    """The server of a page: over TLS when given a certificate (the app then marks its cookie
    Secure, see `SignedInPages.install`), else plain HTTP for a TLS proxy in front (only when
    `serving_tls` was told so)."""
    import uvicorn

    if tls is None:
        return uvicorn.Config(app, host=host, port=port, log_level="warning")
    return uvicorn.Config(app, host=host, port=port, log_level="warning",
                          ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key))


class Hardening:
    """ASGI middleware: refuses cross-site POSTs (403) before any route runs, and adds the
    security headers to every response, errors and redirects included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        if scope["method"] not in SAFE_METHODS and not same_origin(Headers(scope=scope)):
            refused = PlainTextResponse("cross-site request refused", 403)
            await refused(scope, receive, send_hardened)
            return
        await self.app(scope, receive, send_hardened)


class LiveSessions:
    """The sessions this process issued and that are not signed out or expired: the signed
    cookie only names one, so a copied cookie is useless once its session is signed out, and
    every session ends when the process restarts. Bounded: expired ones are dropped as new ones
    open, and past `limit` the oldest go first."""

    def __init__(self, lifetime_s: float, limit: int = 100_000) -> None:
        self.lifetime_s = lifetime_s
        self.limit = limit
        self._opened: dict[str, float] = {}  # insertion order is opening order
        self._lock = threading.Lock()

    def open(self, now: float) -> str:
        sid = secrets.token_urlsafe(24)
        with self._lock:
            for old, opened in list(self._opened.items()):
                if now - opened < self.lifetime_s and len(self._opened) < self.limit:
                    break
                del self._opened[old]
            self._opened[sid] = now
        return sid

    def alive(self, sid: object, now: float) -> bool:
        with self._lock:
            opened = self._opened.get(sid) if isinstance(sid, str) else None
        return opened is not None and now - opened < self.lifetime_s

    def close(self, sid: object) -> None:
        if isinstance(sid, str):
            with self._lock:
                self._opened.pop(sid, None)


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


# The templates every app shares: the page layout (page.html, which an app's base.html
# extends) and the sign-in form (login.html); an app's own templates are found first.
PAGE_TEMPLATES = Path(__file__).with_name("page_templates")


class SignInFirst(Exception):
    """A page or form asked for without a live session: the browser is sent to sign in."""


class SignedInPages:
    """Sign-in and page rendering for one app. `admits` says whom this app serves at all: a
    user it does not admit cannot sign in, and an old session of theirs is not honoured.
    `sign_in_note`: a line the sign-in page shows above the form (whom the app is for)."""

    def __init__(self, templates: Path, directory: Directory, landing: str,
                 admits: Callable[[User], bool] = lambda _user: True,
                 labels: Mapping[str, str] | None = None,
                 throttle: SignInThrottle | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sign_in_note: str | None = None) -> None:
        self.templates = Jinja2Templates(directory=[str(templates), str(PAGE_TEMPLATES)])
        self.templates.env.globals["sign_in_note"] = sign_in_note
        self.templates.env.filters["when"] = when
        self.templates.env.filters["label"] = labeller(labels or {})
        self.directory = directory
        self.landing = landing
        self.admits = admits
        self.throttle = throttle or SignInThrottle()
        self.clock = clock
        self.sessions = LiveSessions(SESSION_HOURS * 3600)

    def install(self, app: FastAPI, session_secret: str, cookie: str,
                secure: bool = False) -> None:
        """The session and hardening middleware and the /login and /logout routes. `secure`:
        served over TLS, so the cookie is marked Secure (never sent over plain HTTP)."""
        app.add_middleware(SessionMiddleware, secret_key=session_secret, same_site="strict",
                           https_only=secure, max_age=SESSION_HOURS * 3600,
                           session_cookie=cookie)
        # Added last, so outermost: cross-site requests are refused before anything else runs.
        app.add_middleware(Hardening)

        @app.exception_handler(SignInFirst)
        async def sign_in_first(_request: Request, _exc: SignInFirst) -> RedirectResponse:
            return RedirectResponse("/login", 303)

        @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
        def login_form(request: Request) -> HTMLResponse:
            return self.page(request, "login.html", None, error=None)

        @app.post("/login", include_in_schema=False, response_model=None)
        def login(request: Request, ref: Annotated[str, Form()],
                  password: Annotated[str, Form()]) -> Response:
            address = request.client.host if request.client else ""
            now = self.clock()
            if not self.throttle.allowed(ref, address, now):
                refused = self.page(request, "login.html", None, status_code=429,
                                    error="Too many failed sign-ins; try again later.")
                refused.headers["Retry-After"] = str(int(self.throttle.window_s))
                return refused
            user = self.directory.authenticate(ref, password)
            if user is None or not self.admits(user):
                self.throttle.failed(ref, address, now)
                return self.page(request, "login.html", None,
                                 error="Unknown user or wrong password.")
            self.throttle.succeeded(ref)
            self.sessions.close(request.session.get("sid"))
            request.session.clear()
            request.session["user"] = user.ref
            request.session["sid"] = self.sessions.open(now)
            return RedirectResponse(self.landing, 303)

        @app.post("/logout", include_in_schema=False)
        def logout(request: Request) -> RedirectResponse:
            self.sessions.close(request.session.get("sid"))
            request.session.clear()
            return RedirectResponse("/login", 303)

    def current(self, request: Request) -> User | None:
        if not self.sessions.alive(request.session.get("sid"), self.clock()):
            return None
        ref = request.session.get("user")
        user = self.directory.get(ref) if isinstance(ref, str) else None
        return user if user is not None and self.admits(user) else None

    def api_user(self, request: Request) -> User:
        """The signed-in user, for the JSON API (a FastAPI dependency); 401 otherwise."""
        user = self.current(request)
        if user is None:
            raise HTTPException(401, "sign in first")
        return user

    def page_user(self, request: Request) -> User:
        """The signed-in user, for a page (a FastAPI dependency); else off to sign in."""
        user = self.current(request)
        if user is None:
            raise SignInFirst
        return user

    def form_user(self, request: Request, token: Annotated[str, Form(alias="csrf")]) -> User:
        """The signed-in user, for a form post whose CSRF token this checks (a FastAPI
        dependency); else off to sign in."""
        user = self.page_user(request)
        self.check_csrf(request, token)
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
