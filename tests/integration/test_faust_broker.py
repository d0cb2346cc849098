"""faust-streaming (aiokafka underneath) against the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safehub.bus import make_consumer, make_producer, send_all

pytestmark = pytest.mark.integration


def test_faust_agent_consumes_and_produces(
    kafka_bootstrap, topic_names, create_topics_fn, tmp_path
):
    src, dst = create_topics_fn(topic_names("echo-in"), topic_names("echo-out"), partitions=2)
    env = {
        **os.environ,
        "SAFEHUB_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "ECHO_APP_ID": topic_names("echo-app"),
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
        producer = make_producer(kafka_bootstrap, "echo-producer")
        values = {f"{i}".encode(): f"value-{i}".encode() for i in range(50)}
        send_all(producer, [(src, k, v, None) for k, v in values.items()])
        producer.close()

        consumer = make_consumer(kafka_bootstrap, None)
        from kafka import TopicPartition

        consumer.assign([TopicPartition(dst, p) for p in (0, 1)])
        consumer.seek_to_beginning()
        got: dict[bytes, bytes] = {}
        deadline = time.monotonic() + 90
        while len(got) < len(values) and time.monotonic() < deadline:
            assert worker.poll() is None, (tmp_path / "faust.log").read_text()[-3000:]
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    got[r.key] = r.value
        consumer.close()
        assert got == {k: v.upper() for k, v in values.items()}
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
