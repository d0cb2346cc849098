"""`/metrics`, `/livez` and `/readyz` on a small HTTP server on its own thread.

- `/livez`: the main loop has made progress within a bound (a `Heartbeat` the loop touches);
  503 when it is wedged, so an orchestrator restarts the process.
- `/readyz`: the dependencies answer (`readiness` checks: broker, database, partitions); 503
  with a JSON body naming what is not ready, so traffic and alerts wait for it.
- `/metrics`: the project's registry (safehub.observability.metrics) in Prometheus' text form.

Settings (environment): SAFEHUB_HEALTH_PORT (no server unless set; 0 picks a free port; the
containers set 9102, the port named `health`), SAFEHUB_HEALTH_HOST (default 127.0.0.1; the
containers set 0.0.0.0), SAFEHUB_HEALTH_STALL_S (how long the loop may make no progress before
`/livez` fails, default 120).

Until the loop first beats, `/livez` answers 503 "starting": how long a start may take is the
orchestrator's startup probe's to bound (deploy/k8s: the correlator rebuilds its tables from
their changelogs before its loop runs, which may take many minutes), not a guess made here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from safehub.observability.metrics import HEARTBEAT_AGE, READY, REGISTRY
from safehub.settings.common import DEFAULT_STALL_S, HealthEnv
from safehub.settings.loader import load

log = logging.getLogger(__name__)

# A check answers None when ready, else a short reason of our own (never a library message).
Check = Callable[[], "str | None"]


class Heartbeat:
    """When each part of a service's main loop (one per consumer thread) last made progress."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def beat(self, part: str = "main") -> None:
        with self._lock:
            self._last[part] = self._clock()

    def age_s(self) -> float | None:
        """Seconds since the part that has waited longest last beat; None before any beat."""
        with self._lock:
            if not self._last:
                return None
            return self._clock() - min(self._last.values())


class Liveness:
    """Live while the heartbeat is younger than `stall_s`; "starting" (not live) until the
    loop first beats."""

    def __init__(self, heartbeat: Heartbeat, stall_s: float = DEFAULT_STALL_S) -> None:
        self.heartbeat = heartbeat
        self.stall_s = stall_s

    def status(self) -> tuple[str, dict[str, Any]]:
        """("live" | "starting" | "wedged", details)."""
        age = self.heartbeat.age_s()
        if age is None:
            return "starting", {"bound_s": self.stall_s}
        state = "live" if age <= self.stall_s else "wedged"
        return state, {"heartbeat_age_s": round(age, 3), "bound_s": self.stall_s}


class Readiness:
    """Ready when every named check answers None."""

    def __init__(self, checks: Iterable[tuple[str, Check]] = ()) -> None:
        self.checks: list[tuple[str, Check]] = list(checks)

    def add(self, name: str, check: Check) -> None:
        self.checks.append((name, check))

    def status(self) -> tuple[bool, dict[str, str]]:
        results: dict[str, str] = {}
        for name, check in self.checks:
            try:
                why = check()
            except Exception as exc:  # noqa: BLE001 - a failing check is an answer, not a crash
                why = f"check failed: {type(exc).__name__}"
            results[name] = "ok" if why is None else why
        return all(v == "ok" for v in results.values()), results


class HealthServer:
    """The three endpoints for one service, served on a daemon thread until `stop`."""

    def __init__(self, service: str, liveness: Liveness, readiness: Readiness,
                 host: str = "127.0.0.1", port: int = 0,
                 registry: CollectorRegistry = REGISTRY) -> None:
        self.service = service
        self.liveness = liveness
        self.readiness = readiness
        self._registry = registry
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"health-{self.service}")
        self._thread.start()
        log.info("%s health: /metrics, /livez, /readyz on port %d", self.service, self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a path: the server's whole behaviour."""
        if path == "/metrics":
            # Both from state the checks hold already (the probes ask on their own threads):
            # a scrape is as current as a probe, whoever else asks /readyz.
            age = self.liveness.heartbeat.age_s()
            if age is not None:
                HEARTBEAT_AGE.labels(self.service).set(age)
            READY.labels(self.service).set(1 if self.readiness.status()[0] else 0)
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/livez":
            state, detail = self.liveness.status()
            body = {"service": self.service, "status": state, **detail}
            return (200 if state == "live" else 503), "application/json", \
                json.dumps(body).encode()
        if path == "/readyz":
            ready, checks = self.readiness.status()
            READY.labels(self.service).set(1 if ready else 0)
            body = {"service": self.service, "status": "ready" if ready else "not ready",
                    "checks": checks}
            return (200 if ready else 503), "application/json", json.dumps(body).encode()
        return 404, "application/json", b'{"status": "not found"}'

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, kind, body = server.answer(self.path.split("?", 1)[0])
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args  # a probe every few seconds is not news for the log

        return Handler


def port_from_env() -> int | None:
    return load(HealthEnv).port


def serve_from_env(service: str, heartbeat: Heartbeat,
                   checks: Sequence[tuple[str, Check]] = ()) -> HealthServer | None:
    """Start the service's health server if SAFEHUB_HEALTH_PORT is set; None otherwise."""
    env = load(HealthEnv)
    if env.port is None:
        return None
    liveness = Liveness(heartbeat, env.stall_s)
    return HealthServer(service, liveness, Readiness(checks), env.host, env.port).start()
