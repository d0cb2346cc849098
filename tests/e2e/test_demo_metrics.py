"""A demo-sized run, scraped: every service's /metrics agrees with what the run did.

The demo runs every service with its own health port (<folder>/health.json). Once it has
settled (summary.json written, it then waits for Ctrl-C), this test reads the topics and the
inbox database itself, as the admin of the demo's broker, and checks the services' figures:
events the correlator consumed = records on the ingress topics, alerts it raised by tier =
records on `correlated` by tier, notifications the router routed by tier = records on the
alerts topics, alerts the inbox stored by hub and tier = its rows, dead letters counted by all
services = records on `deadletter`, by source topic. Every service is live and ready.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from safehub.bus import make_consumer
from safehub.consumers.deadletter import HEADER_SOURCE_TOPIC
from safehub.deploy.kafka.launcher import Cluster, free_port
from safehub.schemas.codec import decode
from safehub.schemas.records import CorrelatedAlert, RoutedAlert
from safehub.services.audit.reading import read_all

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVICES = {"correlator", "router", "inbox", "audit-sink", "web", "keyservice", "reid"}
Samples = list[tuple[str, dict[str, str], float]]


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _samples(text: str) -> Samples:
    return [(s.name, dict(s.labels), float(s.value))
            for f in text_string_to_metric_families(text) for s in f.samples]


def _sum(samples: Samples, name: str, by: tuple[str, ...] = (), **where: str) -> Counter[object]:
    out: Counter[object] = Counter()
    for n, labels, value in samples:
        if n == name and all(labels.get(k) == v for k, v in where.items()):
            key = tuple(labels.get(b, "") for b in by) if by else "all"
            out[key] += int(value)
    return +out


def test_every_service_metrics_agree_with_the_run(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder, state = tmp_path / "demo", tmp_path / "state"
    env = {**os.environ, "SAFEHUB_STATE": str(state), "PYTHONUNBUFFERED": "1",
           "SAFEHUB_LOG_FORMAT": "json"}
    env.pop("SAFEHUB_TOPIC_PREFIX", None)
    out_path = tmp_path / "demo.out"
    with out_path.open("w") as out:
        # --duration bounds the whole run if this test never gets to stop it.
        proc = subprocess.Popen(
            [sys.executable, "-m", "safehub.cli", "demo", "--folder", str(folder),
             "--children", "150", "--web-port", str(free_port()),
             "--reid-port", str(free_port()), "--duration", "170"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while not (folder / "summary.json").exists():
            assert proc.poll() is None, out_path.read_text()[-3000:]
            assert time.monotonic() < deadline, out_path.read_text()[-3000:]
            time.sleep(0.5)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["settled"], summary
        ports: dict[str, int] = json.loads((folder / "health.json").read_text())
        assert set(ports) == SERVICES

        for name, port in ports.items():
            assert _get(port, "/livez")[0] == 200, name
            status, body = _get(port, "/readyz")
            assert status == 200, (name, body)

        monkeypatch.setenv("SAFEHUB_STATE", str(state))
        cluster = Cluster("demo").state()
        assert cluster is not None
        admin = cluster.connection()
        probe = make_consumer(admin, None, client_id="metrics-test-topics")
        topics = sorted(probe.topics())
        probe.close()
        ingress = [t for t in topics if t.startswith("ingress.")]
        alert_topics = [t for t in topics if t.startswith("alerts.")]
        # Every committed record, from the beginning to the topics' end now.
        on_ingress = Counter(r.topic for r in read_all(admin, ingress))
        correlated = [decode(r.value, CorrelatedAlert) for r in read_all(admin, ["correlated"])]
        routed = [decode(r.value, RoutedAlert) for r in read_all(admin, alert_topics)]
        dead = Counter(dict(r.headers).get(HEADER_SOURCE_TOPIC, b"").decode()
                       for r in read_all(admin, ["deadletter"]))
        with sqlite3.connect(folder / "inbox.sqlite") as db:
            rows = Counter({(hub, tier): n for hub, tier, n in db.execute(
                "SELECT agency_id, tier, count(*) FROM inbox_alert GROUP BY agency_id, tier")})
        assert sum(on_ingress.values()) == summary["published"] > 100
        assert correlated and routed and rows

        # Counted once the offsets are committed: a scrape may just precede the last count.
        give_up = time.monotonic() + 15
        while True:
            scraped = {name: _samples(_get(port, "/metrics")[1]) for name, port in ports.items()}
            everything = [s for samples in scraped.values() for s in samples]
            figures = {
                "correlator in": _sum(scraped["correlator"], "safehub_events_in_total",
                                      ("topic",), service="correlator"),
                "correlator alerts": _sum(scraped["correlator"], "safehub_alerts_total",
                                          ("tier",), service="correlator"),
                "router in": _sum(scraped["router"], "safehub_events_in_total", ("topic",),
                                  service="router", topic="correlated"),
                "router routed": _sum(scraped["router"], "safehub_alerts_total",
                                      ("hub", "tier"), service="router"),
                "inbox stored": _sum(scraped["inbox"], "safehub_alerts_total", ("hub", "tier"),
                                     service="inbox"),
                "dead letters": _sum(everything, "safehub_dead_letters_total", ("topic",)),
            }
            truth = {
                "correlator in": Counter({(t,): n for t, n in on_ingress.items()}),
                "correlator alerts": Counter((a.tier.value,) for a in correlated),
                "router in": Counter({("correlated",): len(correlated)}),
                "router routed": Counter((r.receiver_agency, r.alert.tier.value)
                                         for r in routed),
                "inbox stored": Counter({k: n for k, n in rows.items()}),
                "dead letters": Counter({(t,): n for t, n in dead.items()}),
            }
            if figures == truth or time.monotonic() > give_up:
                break
            time.sleep(1)
        for what in truth:
            assert figures[what] == truth[what], what
        # The figures the operator watches for being behind are there too.
        assert _sum(scraped["correlator"], "safehub_event_latency_seconds_count")
        lags = [v for n, labels, v in scraped["inbox"] if n == "safehub_consumer_lag"]
        assert lags and all(v == 0 for v in lags), lags  # settled: nothing behind
        assert _sum(scraped["audit-sink"], "safehub_events_in_total")
        assert _sum(scraped["keyservice"], "safehub_requests_total", ("reason",),
                    reason="ok")
        # Re-identification requests pending, at the hubs (web) and at each agency's desk.
        for service, who in (("web", "csc-leeds"), ("reid", "education-leeds")):
            pending = {labels["hub"]: v for n, labels, v in scraped[service]
                       if n == "safehub_reid_requests_pending"}
            assert pending.get(who) == 0 and not any(pending.values()), (service, pending)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # as a user would: it stops its services and broker
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()  # its services die with it (supervisor.py); its broker is stopped here
            proc.wait(10)
            monkeypatch.setenv("SAFEHUB_STATE", str(state))
            Cluster("demo").down()
    _logs_are_json(folder / "logs")


def _logs_are_json(logs: Path) -> None:
    """Under SAFEHUB_LOG_FORMAT=json every service's log is one JSON object per line, with
    the same first fields everywhere and the service's own name."""
    names = {"audit-sink": "audit"}  # the command's name, `safehub audit sink`
    for service in SERVICES:
        lines = [ln for ln in (logs / f"{service}.log").read_text().splitlines() if ln.strip()]
        assert lines, service
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                pytest.fail(f"{service}: not a JSON log line: {line[:300]}")
            assert list(entry)[:5] == ["ts", "level", "logger", "service", "message"], entry
            assert entry["service"] == names.get(service, service), entry
