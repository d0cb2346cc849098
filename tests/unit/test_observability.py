"""The metrics registry, the JSON log formatter and the health logic, without a broker."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from safehub.errors import BrokerError, ConfigError, ValidationError
from safehub.observability.health import (
    HealthServer,
    Heartbeat,
    Liveness,
    Readiness,
    port_from_env,
    serve_from_env,
)
from safehub.observability.logs import JsonFormatter, format_from_env
from safehub.observability.metrics import REGISTRY, ServiceMetrics, reason_of
from safehub.observability.readiness import MAX_ABANDONED, Assignments, Probe
from safehub.observability.watch import ServiceWatch
from tests.fixtures.clock import ManualClock


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_metrics_share_label_names_and_count_per_service() -> None:
    m = ServiceMetrics("unit-a")
    m.consumed("t.in", 3)
    m.produced("t.out")
    m.alert("HIGH", "csc-x")
    m.alert("HIGH", "csc-x")
    m.escalation("csc-y")
    m.dead_letter("t.in", ValidationError("tier", "not a tier"))
    m.dead_letter("t.in", KeyError("secret value"))
    m.lag("t.in", 2, 7)
    m.reid_pending("csc-x", 4)
    assert sample("safehub_events_in_total", service="unit-a", topic="t.in") == 3
    assert sample("safehub_events_out_total", service="unit-a", topic="t.out") == 1
    assert sample("safehub_alerts_total", service="unit-a", tier="HIGH", hub="csc-x") == 2
    assert sample("safehub_escalations_total", service="unit-a", hub="csc-y") == 1
    assert sample("safehub_dead_letters_total", service="unit-a", topic="t.in",
                  reason="ValidationError:tier") == 1
    # A library's message may quote data: only its class is a reason.
    assert sample("safehub_dead_letters_total", service="unit-a", topic="t.in",
                  reason="KeyError") == 1
    assert sample("safehub_consumer_lag", service="unit-a", topic="t.in", partition="2") == 7
    assert sample("safehub_reid_requests_pending", service="unit-a", hub="csc-x") == 4
    names = {"service", "topic", "partition", "tier", "reason", "hub"}
    for family in REGISTRY.collect():
        if family.name.startswith("safehub_"):
            for s in family.samples:
                assert set(s.labels) - {"le"} <= names, (family.name, s.labels)


def test_reason_never_holds_a_message() -> None:
    assert reason_of(BrokerError("could not reach 10.0.0.1 about JOHN SMITH")) == "BrokerError"
    assert reason_of(ValidationError("nhs number", "x")) == "ValidationError"


def test_latency_and_batch_histograms() -> None:
    m = ServiceMetrics("unit-b")
    m.latency_since([1_000_000, 1_002_000, 0], now_s=1_003.0)  # 3 s, 1 s; 0 is no timestamp
    m.batch(0.02)
    assert sample("safehub_event_latency_seconds_count", service="unit-b") == 2
    assert sample("safehub_event_latency_seconds_sum", service="unit-b") == pytest.approx(4.0)
    assert sample("safehub_batch_seconds_count", service="unit-b") == 1


def test_json_log_lines_have_the_same_fields_and_extras() -> None:
    fmt = JsonFormatter("router")
    record = logging.LogRecord("safehub.x", logging.WARNING, __file__, 1, "sent %d", (3,), None)
    record.topic = "alerts.csc-a"
    line = json.loads(fmt.format(record))
    assert line["level"] == "WARNING" and line["logger"] == "safehub.x"
    assert line["service"] == "router" and line["message"] == "sent 3"
    assert line["topic"] == "alerts.csc-a"
    assert line["ts"].endswith("Z") and "T" in line["ts"]
    assert list(line)[:5] == ["ts", "level", "logger", "service", "message"]
    try:
        raise BrokerError("down")
    except BrokerError:
        import sys
        record = logging.LogRecord("safehub.x", logging.ERROR, __file__, 1, "oops", (),
                                   sys.exc_info())
    line = json.loads(fmt.format(record))
    assert line["exc_type"] == "BrokerError" and "Traceback" in line["exc"]


def test_log_format_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEHUB_LOG_FORMAT", raising=False)
    assert format_from_env() == "text"
    monkeypatch.setenv("SAFEHUB_LOG_FORMAT", "JSON")
    assert format_from_env() == "json"
    assert format_from_env("text") == "text"
    monkeypatch.setenv("SAFEHUB_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="SAFEHUB_LOG_FORMAT"):
        format_from_env()


def test_liveness_follows_the_oldest_heartbeat() -> None:
    clock = ManualClock(1000.0)
    beat = Heartbeat(clock)
    live = Liveness(beat, stall_s=30)
    # Not live before the first beat: the orchestrator's startup probe bounds a start.
    assert live.status()[0] == "starting"
    clock.now += 1000
    assert live.status()[0] == "starting"
    beat.beat("csc-a")
    beat.beat("csc-b")
    assert live.status()[0] == "live"
    clock.now += 20
    beat.beat("csc-a")
    clock.now += 15  # csc-b has not beaten for 35 s: one wedged consumer thread is enough
    state, detail = live.status()
    assert state == "wedged" and detail["heartbeat_age_s"] == 35


def test_probe_is_ready_only_on_a_recent_answer() -> None:
    clock = ManualClock(1000.0)
    answers: list[object] = []

    def ask() -> None:
        if answers and isinstance(answers[-1], Exception):
            raise answers[-1]

    probe = Probe("broker", ask, stale_s=6, clock=clock)
    assert probe.check() == "broker not yet answered"
    probe.once()
    assert probe.check() is None
    clock.now += 7  # the probe's call hangs: the last answer grows stale
    assert probe.check() == "broker has not answered for 7 s"
    answers.append(OSError("refused by 10.1.2.3"))
    probe.once()
    assert probe.check() == "broker unreachable (OSError)"
    answers.append(None)
    probe.once()
    assert probe.check() is None


def _until(condition: object, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a_probe_call_that_never_returns_is_left_and_the_next_goes_to_a_new_client() -> None:
    """The CI failure: kafka-python's metadata wait had not returned 30 s after the broker was
    back. The running probe gives up on a call after `hung_s` and asks on a new thread, with a
    client of its own (made per thread, as broker_probe makes them); the stuck one closes its
    client when its call ends."""
    release = threading.Event()
    clients: list[str] = []
    closed: list[str] = []
    mine = threading.local()

    def ask() -> None:
        if getattr(mine, "client", None) is None:
            mine.client = f"client-{len(clients)}"
            clients.append(mine.client)
        if mine.client == "client-0":
            release.wait()  # the first client's call hangs until the test lets it go

    def close() -> None:
        closed.append(mine.client)

    probe = Probe("broker", ask, every_s=0.05, stale_s=0.5, close=close, hung_s=0.3).start()
    try:
        assert _until(lambda: probe.check() is None), probe.check()
        assert clients == ["client-0", "client-1"] and probe.abandoned == 1
        assert closed == []  # the stuck call has not returned: its client is still in use
        release.set()
        assert _until(lambda: closed == ["client-0"]), closed
    finally:
        probe.stop()
    assert _until(lambda: closed == ["client-0", "client-1"]), closed


def test_a_probe_whose_every_call_hangs_holds_a_bounded_number_of_clients() -> None:
    release = threading.Event()
    clients: list[int] = []

    def ask() -> None:
        clients.append(1)
        release.wait()

    probe = Probe("broker", ask, every_s=0.01, stale_s=0.1, hung_s=0.05).start()
    try:
        time.sleep(1.5)  # 30 hang periods
        assert probe.check() is not None
        # The abandoned ones, and the one it now waits on.
        assert len(clients) == MAX_ABANDONED + 1 and probe.abandoned == MAX_ABANDONED
    finally:
        probe.stop()
        release.set()


def test_assignments_name_the_consumers_without_partitions() -> None:
    held = Assignments()
    held.expect("csc-a")
    held.expect("csc-b")
    assert held.check() == "no partitions assigned to csc-a, csc-b"
    held.saw("csc-a", 3)
    assert held.check() == "no partitions assigned to csc-b"
    held.saw("csc-b", 1)
    assert held.check() is None


def test_readiness_reports_every_check_and_survives_a_failing_one() -> None:
    def broken() -> str | None:
        raise RuntimeError("boom with data")

    ready, checks = Readiness([("a", lambda: None), ("b", broken)]).status()
    assert not ready
    assert checks == {"a": "ok", "b": "check failed: RuntimeError"}


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_health_server_serves_the_three_paths() -> None:
    clock = ManualClock(1000.0)
    beat = Heartbeat(clock)
    state: dict[str, str | None] = {"why": "broker unreachable (NoBrokersAvailable)"}
    server = HealthServer("unit-c", Liveness(beat, 10),
                          Readiness([("broker", lambda: state["why"])])).start()
    try:
        status, body = _get(server.port, "/readyz")
        assert status == 503
        assert json.loads(body) == {"service": "unit-c", "status": "not ready",
                                    "checks": {"broker": "broker unreachable (NoBrokersAvailable)"}}
        state["why"] = None
        assert _get(server.port, "/readyz")[0] == 200
        status, body = _get(server.port, "/livez")
        assert status == 503 and json.loads(body)["status"] == "starting"
        beat.beat()
        assert _get(server.port, "/livez")[0] == 200
        clock.now += 11
        status, body = _get(server.port, "/livez")
        assert status == 503 and json.loads(body)["status"] == "wedged"
        beat.beat()
        ServiceMetrics("unit-c").consumed("t", 5)
        status, body = _get(server.port, "/metrics")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert "safehub_events_in" in families
        ready = {s.labels["service"]: s.value for s in families["safehub_ready"].samples}
        assert ready["unit-c"] == 1.0  # the broker check answers ok by now
        assert _get(server.port, "/nothing")[0] == 404
    finally:
        server.stop()


def test_health_port_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEHUB_HEALTH_PORT", raising=False)
    assert port_from_env() is None
    assert serve_from_env("unit-d", Heartbeat()) is None
    assert ServiceWatch("unit-d").serve(consumers=["x"]) is None
    monkeypatch.setenv("SAFEHUB_HEALTH_PORT", "http")
    with pytest.raises(ConfigError, match="SAFEHUB_HEALTH_PORT"):
        port_from_env()
    monkeypatch.setenv("SAFEHUB_HEALTH_PORT", "0")
    monkeypatch.setenv("SAFEHUB_HEALTH_STALL_S", "soon")
    with pytest.raises(ConfigError, match="SAFEHUB_HEALTH_STALL_S"):
        serve_from_env("unit-d", Heartbeat())
    monkeypatch.setenv("SAFEHUB_HEALTH_STALL_S", "30")
    watch = ServiceWatch("unit-d")
    server = watch.serve(consumers=["csc-a"])
    try:
        assert server is not None and server.port > 0
        status, body = _get(server.port, "/readyz")
        assert status == 503 and "csc-a" in json.loads(body)["checks"]["partitions"]
        watch.heartbeat.beat("csc-a")
        status, body = _get(server.port, "/livez")
        assert status == 200 and json.loads(body)["bound_s"] == 30
    finally:
        watch.close()
