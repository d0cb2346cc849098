"""The key service's HTTP interface (FastAPI): a thin shell around oprf, keys and quota.

POST /v1/evaluate  {"epoch": N, "elements": [base64 of 32-byte blinded elements]}
                -> {"epoch": N, "evaluated": [base64 of 32-byte elements]}, same order.
GET  /v1/usage     per-agency use in the current minute and UTC day, and the limits (operators).
GET  /healthz      liveness and the epochs served.

Encodings are RFC 9497's (standard base64 with padding), so an agency's client in any language
can call it. Errors are JSON {"detail": "..."}; they name what was wrong and where (the element's
index), never a value: a blinded element reveals nothing, but the rule is kept everywhere.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from safehub.errors import ConfigError, SafehubError, ValidationError
from safehub.observability.metrics import ServiceMetrics
from safehub.services.keyservice import oprf
from safehub.services.keyservice.credentials import Credentials
from safehub.services.keyservice.keys import KeyDirectory
from safehub.services.keyservice.quota import QuotaBook, Refusal, iso

log = logging.getLogger(__name__)

MAX_BATCH = 4096
# A full batch is about 4096 * 47 bytes of JSON; anything much bigger is not a batch.
MAX_BODY_BYTES = 1024 * 1024

Audit = Callable[[Refusal, int], None]  # (refusal, epoch): record a refused request
Clock = Callable[[], int]  # now, int ms UTC
SaveCounts = Callable[[dict[str, list[int]]], None]


class _Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _decode_elements(raw: list[Any]) -> list[bytes]:
    out = []
    for index, item in enumerate(raw):
        where = f"elements[{index}]"
        if not isinstance(item, str):
            raise _Refused(400, f"{where}: must be a base64 string")
        try:
            element = binascii.a2b_base64(item, strict_mode=True)
        except (binascii.Error, ValueError):
            raise _Refused(400, f"{where}: not valid base64") from None
        if len(element) != oprf.ELEMENT_BYTES:
            raise _Refused(400, f"{where}: must decode to {oprf.ELEMENT_BYTES} bytes, "
                                f"got {len(element)}")
        try:
            oprf.deserialize_element(element, where)
        except ValidationError as exc:
            raise _Refused(400, str(exc)) from None
        out.append(element)
    return out


def _parse(body: bytes) -> tuple[int, list[Any]]:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _Refused(400, "body must be JSON: {\"epoch\": N, \"elements\": [...]}") from None
    if not isinstance(doc, dict):
        raise _Refused(400, "body must be a JSON object with epoch and elements")
    epoch = doc.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise _Refused(400, "epoch: must be an integer >= 0")
    elements = doc.get("elements")
    if not isinstance(elements, list):
        raise _Refused(400, "elements: must be a list of base64 strings")
    if len(elements) > MAX_BATCH:
        raise _Refused(413, f"elements: a batch of {len(elements)} is more than {MAX_BATCH}; "
                            f"split it into batches of at most {MAX_BATCH}")
    return epoch, elements


def create_app(keys: KeyDirectory, quotas: QuotaBook, auth: Credentials, audit: Audit,
               clock: Clock, save_counts: SaveCounts | None = None,
               metrics: ServiceMetrics | None = None) -> FastAPI:
    """`save_counts` is given the quota counters after every charge (under the lock);
    `metrics` counts each evaluation request by outcome (ok, or the refusal's status)."""
    metrics = metrics or ServiceMetrics("keyservice")
    app = FastAPI(title="safehub key service", docs_url=None, redoc_url=None,
                  openapi_url=None)
    quota_lock = threading.Lock()

    def evaluate(agency: str, body: bytes) -> dict[str, Any]:
        epoch, raw = _parse(body)
        try:
            key = keys.get(epoch)
        except ConfigError as exc:
            log.error("epoch %d: %s", epoch, exc)
            raise _Refused(500, f"epoch {epoch}: its key file is invalid (see the service "
                                f"log)") from None
        if key is None:
            raise _Refused(404, f"epoch {epoch}: no key on this service (never created, or "
                                f"destroyed after rotation); epochs served: {keys.epochs()}")
        elements = _decode_elements(raw)
        now = clock()
        with quota_lock:
            refusal = quotas.charge(agency, len(elements), now)
            if refusal is None and save_counts is not None:
                try:
                    save_counts(quotas.counts())
                except OSError as exc:
                    # Fail closed: counts that a restart would forget are no limit.
                    log.error("quota state not saved: %s", exc)
                    raise _Refused(503, "the service cannot keep its quota counts now; "
                                        "try again later") from None
        if refusal is not None:
            log.warning("refused: %s", refusal.message)
            try:
                audit(refusal, epoch)
            except SafehubError as exc:
                # Still refused; the operator must know the audit trail has a gap.
                log.error("quota refusal of %s not audited: %s", agency, exc)
            retry = max(1, -(-(refusal.resets_at_ms - now) // 1000))
            raise _Refused(429, refusal.message, {"Retry-After": str(retry)})
        evaluated = [binascii.b2a_base64(key.evaluate(e), newline=False).decode()
                     for e in elements]
        log.debug("%s: %d elements under epoch %d", agency, len(evaluated), epoch)
        return {"epoch": epoch, "evaluated": evaluated}

    @app.post("/v1/evaluate")
    async def evaluate_route(request: Request) -> JSONResponse:
        try:
            agency = auth.agency_for(_bearer(request))
            if agency is None:
                log.warning("unauthenticated request from %s",
                            request.client.host if request.client else "?")
                raise _Refused(401, "unknown or missing bearer secret",
                               {"WWW-Authenticate": "Bearer"})
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise _Refused(413, f"body larger than {MAX_BODY_BYTES} bytes")
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _Refused(413, f"body larger than {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
            # Scalar multiplications are CPU work: off the event loop.
            result = await run_in_threadpool(evaluate, agency, b"".join(chunks))
            metrics.request("ok")
            return JSONResponse(result)
        except _Refused as refused:
            metrics.request(f"http_{refused.status}")
            return JSONResponse({"detail": refused.detail}, refused.status, refused.headers)

    @app.get("/v1/usage")
    def usage_route(request: Request) -> JSONResponse:
        if not auth.is_operator(_bearer(request)):
            return JSONResponse({"detail": "operator bearer secret required"}, 401,
                                {"WWW-Authenticate": "Bearer"})
        now = clock()
        with quota_lock:
            rows = quotas.usage(auth.agencies, now)
        return JSONResponse({"at": iso(now), "agencies": [
            {"agency": u.agency,
             "minute": {"used": u.minute.used, "limit": u.minute.limit,
                        "resets_at": iso(u.minute.resets_at_ms)},
             "day": {"used": u.day.used, "limit": u.day.limit,
                     "resets_at": iso(u.day.resets_at_ms)}}
            for u in rows]})

    @app.get("/healthz")
    def health_route() -> dict[str, Any]:
        return {"status": "ok", "epochs": keys.epochs()}

    return app


def refusal_subject(agency: str, epoch: int, at_ms: int) -> str:
    """The audit subject of a refusal: one per (agency, epoch, minute), 32 hex chars, so that
    an auditor sees one subject for a burst of refused calls in the same minute."""
    h = hashlib.sha256(b"safehub-keyservice-quota-v1")
    for part in (agency.encode(), str(epoch).encode(), str(at_ms // 60_000).encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.hexdigest()[:32]


def refusal_digest(refusal: Refusal, epoch: int) -> bytes:
    """What was refused, so that two refusals in one minute are two entries, not one."""
    text = (f"{refusal.agency}|{epoch}|{refusal.window}|{refusal.limit}|{refusal.used}|"
            f"{refusal.requested}|{refusal.at_ms}")
    return hashlib.sha256(text.encode()).digest()
