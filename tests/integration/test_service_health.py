"""A running service's /readyz follows its broker: ready, the broker stopped -> 503 naming the
broker within a bound, the broker back -> ready again within a bound. /livez stays 200
throughout (waiting for a dependency is not being wedged) and /metrics counts what the service
did.

The service is a hub inbox on a single broker of its own (the launcher's), never the session's
shared cluster, which other tests are using.

And the router's figures on the shared secure broker: alerts routed by hub and tier,
escalations by hub, a dead letter by coded reason, events in, latency and batch time.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from safehub.bus import make_consumer, make_producer, send_all
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.consumer import InboxConsumer, RetryPolicy
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.store import InboxStore
from safehub.deploy.kafka.launcher import Cluster, ClusterState
from safehub.deploy.topics import TopicSpec, create_topics
from safehub.observability.metrics import REGISTRY
from safehub.observability.watch import ServiceWatch
from safehub.schemas.codec import encode
from safehub.schemas.records import CorrelatedAlert
from safehub.services.audit.journal import AuditJournal
from safehub.services.router.service import Router, input_topics
from safehub.services.router.store import RouterStore
from safehub.topics import service_group
from tests.conftest import Namespace
from tests.fixtures.brokers import own_cluster
from tests.fixtures.router import HOUR, MON_10, correlated_alert, routing_table

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HUB = "csc-health"
PREFIX = "hz."
BROKER_GONE_S = 20.0  # probe every 2 s, stale after 6 s: 503 well within this
BROKER_START_S = 240.0
BROKER_BACK_S = 30.0  # from the broker answering again: reconnect and probe


@pytest.fixture
def own_broker() -> Iterator[tuple[Cluster, ClusterState]]:
    with own_cluster("health") as running:
        yield running


def _get(port: int, path: str) -> tuple[int, dict[str, object] | str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            body = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read().decode(), e.code
    return status, (json.loads(body) if path != "/metrics" else body)


def _until(port: int, path: str, status: int, within_s: float) -> tuple[float, object]:
    started = time.monotonic()
    last: object = None
    while time.monotonic() - started < within_s:
        code, last = _get(port, path)
        if code == status:
            return time.monotonic() - started, last
        time.sleep(0.25)
    pytest.fail(f"{path} not {status} within {within_s} s; last answer {last}")


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_readyz_follows_the_broker(own_broker: tuple[Cluster, ClusterState], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cluster, state = own_broker
    admin = state.connection()
    topic = f"{PREFIX}alerts.{HUB}"
    create_topics(admin, [TopicSpec(topic, 2, 1, {}),
                          TopicSpec(f"{PREFIX}deadletter", 1, 1, {})])
    store = InboxStore(make_engine(f"sqlite:///{tmp_path / 'inbox.db'}"))
    migrate(store.engine)
    watch = ServiceWatch("inbox-health-test")
    consumer = make_consumer(admin, f"{PREFIX}{HUB}", [topic], client_id="health-inbox")
    producer = make_producer(admin, "health-deadletter")
    inbox = InboxConsumer(consumer, store, DeadLetterSink(producer, f"{PREFIX}deadletter"),
                          PREFIX, lambda: time.time_ns() // 1_000_000,
                          RetryPolicy(0.2, 1.0), producer=producer, watch=watch, part=HUB)
    monkeypatch.setenv("SAFEHUB_HEALTH_PORT", "0")
    server = watch.serve(admin, store.engine, consumers=[HUB])
    assert server is not None
    stop = threading.Event()
    runner = threading.Thread(target=inbox.run, args=(stop,), daemon=True)
    runner.start()
    try:
        _until(server.port, "/readyz", 200, 30)
        # Two records that are not alerts: dead-lettered, and counted as such.
        sender = make_producer(admin, "health-sender")
        send_all(sender, [(topic, b"k", b"not an alert", None)] * 2)
        sender.close()
        deadline = time.monotonic() + 30
        while inbox.deadlettered < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        _, text = _get(server.port, "/metrics")
        assert isinstance(text, str)
        assert _metric(text, "safehub_events_in_total", service="inbox-health-test",
                       topic=topic) == 2
        assert _metric(text, "safehub_dead_letters_total", service="inbox-health-test",
                       topic=topic) == 2
        assert _metric(text, "safehub_consumer_lag", service="inbox-health-test",
                       topic=topic) == 0

        cluster.kill_node(1)
        took, body = _until(server.port, "/readyz", 503, BROKER_GONE_S)
        assert isinstance(body, dict) and body["checks"]["broker"] != "ok", body  # type: ignore[index]
        assert body["checks"]["database"] == "ok"  # type: ignore[index]
        assert _get(server.port, "/livez")[0] == 200

        cluster.restart_node(1)
        # The broker's own start (a JVM, its old session to expire) is not under test and may
        # take a minute on a loaded CI machine: wait for it, then time the service.
        cluster.wait_ready(1, timeout=BROKER_START_S)
        back, _ = _until(server.port, "/readyz", 200, BROKER_BACK_S)
        assert _get(server.port, "/livez")[0] == 200
        print(f"not ready {took:.1f} s after the broker stopped, ready {back:.1f} s after it "
              "answered again")
    finally:
        stop.set()
        runner.join(15)
        watch.close()
        inbox.close()


def _alert(n: int, la: str) -> CorrelatedAlert:
    return correlated_alert("metrics", n, la)


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_router_counts_routed_alerts_escalations_and_dead_letters(
        secure_namespace: Callable[..., Namespace], tmp_path: Path) -> None:
    table = routing_table()
    ns = secure_namespace(agencies={"police-wy": "POLICE"}, hubs=sorted(table.receivers()))
    correlated = f"{ns.prefix}correlated"
    leeds, unknown = _alert(1, "E08000035"), _alert(2, "E06000999")
    producer = make_producer(ns.connection("correlator"), "test-correlator")
    send_all(producer, [(correlated, a.cluster_id.encode(), encode(a), None)
                        for a in (leeds, unknown)] + [(correlated, b"bad", b"not an alert", None)])
    producer.close()

    kafka = ns.connection("router")
    store = RouterStore(make_engine(f"sqlite:///{tmp_path / 'router.db'}"))
    store.migrate()
    out = make_producer(kafka, "test-router")
    now = [MON_10]
    service = f"router-{ns.prefix}"
    router = Router(table, make_consumer(kafka, service_group(ns.prefix, "router"),
                                         input_topics(table, ns.prefix), client_id="test-router"),
                    out, store, AuditJournal(out, f"{ns.prefix}audit", "router"),
                    DeadLetterSink(out, f"{ns.prefix}deadletter"), ns.prefix, lambda: now[0],
                    ServiceWatch(service))
    try:
        consumed, deadline = 0, time.monotonic() + 30
        while consumed < 3:
            assert time.monotonic() < deadline, "router did not consume its input in time"
            consumed += router.step(timeout_ms=200)
        # One working day on, neither alert acknowledged: both escalate.
        now[0] = MON_10 + 24 * HOUR
        router.step(timeout_ms=100)
        now[0] += HOUR
        router.step(timeout_ms=100)
    finally:
        router.close()

    assert _value("safehub_events_in_total", service=service, topic=correlated) == 3
    for hub in ("csc-leeds", "hub-duty", "leeds-manager", "hub-manager"):
        assert _value("safehub_alerts_total", service=service, tier="ESCALATING", hub=hub) == 1
        assert _value("safehub_events_out_total", service=service,
                      topic=f"{ns.prefix}alerts.{hub}") == 1
    assert _value("safehub_escalations_total", service=service, hub="leeds-manager") == 1
    assert _value("safehub_escalations_total", service=service, hub="hub-manager") == 1
    assert _value("safehub_escalations_total", service=service, hub="csc-leeds") == 0
    reasons = [s.labels["reason"] for f in REGISTRY.collect() for s in f.samples
               if s.name == "safehub_dead_letters_total" and s.labels["service"] == service]
    assert len(reasons) == 1 and reasons[0].startswith("ValidationError"), reasons
    assert _value("safehub_batch_seconds_count", service=service) >= 1
    assert _value("safehub_event_latency_seconds_count", service=service) == 3
