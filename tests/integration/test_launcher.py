"""The local launcher: clean lifecycle, and a 3-node cluster surviving the loss of a node."""

from __future__ import annotations

import os
import time

import pytest
from kafka import TopicPartition

from safehub.bus import make_consumer, make_producer, send_all
from safehub.deploy.kafka.launcher import Cluster, _is_our_broker
from safehub.deploy.topics import TopicSpec, create_topics
from safehub.errors import BrokerError

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _java_pids_for(root: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _is_our_broker(int(entry), root):
            pids.append(int(entry))
    return pids


def test_up_down_leaves_nothing_and_refuses_a_second_up():
    cluster = Cluster(f"lifecycle-{os.getpid()}")
    state = cluster.up(nodes=1)
    try:
        assert len(_java_pids_for(state.root)) == 1
        with pytest.raises(BrokerError, match="already running"):
            cluster.up(nodes=1)
    finally:
        stopped = cluster.down()
    assert stopped == [state.nodes[0].pid]
    assert _java_pids_for(state.root) == []
    assert cluster.running_nodes() == []
    assert cluster.down() == []  # a second down touches nothing


def test_port_taken_is_reported_clearly():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} .*taken"):
            Cluster(f"porttaken-{os.getpid()}").up(nodes=1, base_port=port)


def test_three_nodes_survive_one_killed_with_acks_all():
    cluster = Cluster(f"fault-{os.getpid()}")
    state = cluster.up(nodes=3)
    try:
        topic = "fault-test"
        create_topics(state.bootstrap, [TopicSpec(topic, 3, 3, {"min.insync.replicas": "2"})])
        producer = make_producer(state.bootstrap, "fault-producer")
        before = send_all(producer, [(topic, f"a{i}".encode(), b"x", None) for i in range(300)])

        cluster.kill_node(2)  # abrupt: SIGKILL
        assert len(cluster.running_nodes()) == 2
        after = send_all(producer, [(topic, f"b{i}".encode(), b"y", None) for i in range(300)],
                         timeout=120)
        producer.close()
        acknowledged = {(r.partition, r.offset) for r in before + after}
        assert len(acknowledged) == 600

        consumer = make_consumer(state.bootstrap, None)
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        consumer.seek_to_beginning()
        read: set[tuple[int, int]] = set()
        keys: set[bytes] = set()
        deadline = time.monotonic() + 60
        while len(read) < 600 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    read.add((r.partition, r.offset))
                    keys.add(r.key)
        consumer.close()
        assert acknowledged <= read
        assert len(keys) == 600
    finally:
        cluster.down()
    assert _java_pids_for(state.root) == []
