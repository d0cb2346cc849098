"""faust-streaming (aiokafka underneath) against the real, secure broker: its consumer, its
consumer group and its producer authenticate as the correlator principal and work within that
principal's ACLs (read an ingress topic, write `correlated`, the group `<prefix>correlator`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import TopicPartition

from safehub.bus import make_consumer, make_producer, send_all
from safehub.topics import correlator_group

pytestmark = pytest.mark.integration


def test_faust_agent_consumes_and_produces(secure_namespace, tmp_path):
    ns = secure_namespace(agencies={"police-a": "POLICE"}, hubs=["csc-a"], partitions=2)
    src, dst = ns.ingress("police-a"), ns.correlated
    env = {
        **os.environ,
        **ns.env("correlator"),
        "ECHO_APP_ID": correlator_group(ns.prefix),
        "ECHO_IN": src,
        "ECHO_OUT": dst,
    }
    app = Path(__file__).with_name("faust_echo.py")
    log = open(tmp_path / "faust.log", "wb")  # noqa: SIM115 - held by the worker process
    worker = subprocess.Popen(
        [sys.executable, str(app), "worker", "-l", "warn"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    try:
        producer = make_producer(ns.connection("police-a"), "echo-producer")
        values = {f"{i}".encode(): f"value-{i}".encode() for i in range(50)}
        send_all(producer, [(src, k, v, None) for k, v in values.items()])
        producer.close()

        consumer = make_consumer(ns.kafka, None)
        consumer.assign([TopicPartition(dst, p)
                         for p in sorted(consumer.partitions_for_topic(dst) or ())])
        consumer.seek_to_beginning()
        got: dict[bytes, bytes] = {}
        deadline = time.monotonic() + 90
        while len(got) < len(values) and time.monotonic() < deadline:
            assert worker.poll() is None, (tmp_path / "faust.log").read_text()[-3000:]
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    got[r.key] = r.value
        consumer.close()
        assert got == {k: v.upper() for k, v in values.items()}, \
            (tmp_path / "faust.log").read_text()[-3000:]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
