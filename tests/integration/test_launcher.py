"""The local launcher: clean lifecycle, a secure-by-default cluster (SASL_SSL for clients,
mutual TLS between nodes, an authorizer), and a 3-node cluster surviving the loss of a node."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.admin import NewTopic, ScramMechanism, UserScramCredentialUpsertion
from kafka.errors import KafkaConfigurationError, KafkaError

from safehub.bus import (
    admin_with,
    make_admin,
    make_consumer,
    make_producer,
    send_all,
    send_and_confirm,
)
from safehub.connection import KafkaConnection, local_cluster_folder, write_secret
from safehub.deploy.kafka.launcher import Cluster, ClusterState, _is_our_broker
from safehub.errors import BrokerError
from tests.fixtures.brokers import own_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Every refusal below must come quickly: a client that hangs would prove nothing.
REFUSAL_S = 20.0


def _java_pids_for(root: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _is_our_broker(int(entry), root):
            pids.append(int(entry))
    return pids


def _create_topic(conn: KafkaConnection, name: str, partitions: int, replicas: int,
                  config: dict[str, str] | None = None) -> None:
    admin = make_admin(conn, "launcher-test")
    try:
        admin.create_topics([NewTopic(name, partitions, replicas, topic_configs=config or {})])
    finally:
        admin.close()


def _api_versions_answered(port: int, ca_file: Path, client_pem: Path | None) -> bool:
    """Whether a TLS connection to this port gets a Kafka answer to ApiVersions v0."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if client_pem is not None:
        context.load_cert_chain(str(client_pem))
    client_id = b"probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(struct.pack(">i", len(body)) + body)
            head = b""
            while len(head) < 8:
                chunk = tls.recv(8 - len(head))
                if not chunk:
                    return False
                head += chunk
    except (ssl.SSLError, OSError):
        return False
    return struct.unpack(">ii", head)[1] == 7


@pytest.fixture(scope="module")
def secure() -> Iterator[ClusterState]:
    with own_cluster("secure") as (_cluster, state):
        yield state


def test_up_down_leaves_nothing_running_and_keeps_the_ca_and_secrets():
    cluster = Cluster(f"lifecycle-{os.getpid()}")
    assert cluster.root == local_cluster_folder(cluster.name)
    state = cluster.up(nodes=1)
    try:
        assert len(_java_pids_for(state.root)) == 1
        with pytest.raises(BrokerError, match="already running"):
            cluster.up(nodes=1)
        conn = state.connection()
        assert conn.ca_file == cluster.ca_file
        assert conn.password_file == cluster.secrets_dir / "admin.password"
        ca_before = cluster.ca_file.read_bytes()
        password_before = conn.password()

        stopped = cluster.down()
        assert stopped == [state.nodes[0].pid]
        assert _java_pids_for(state.root) == []
        assert cluster.running_nodes() == []
        assert cluster.down() == []  # a second down touches nothing
        kept = sorted(p.name for p in cluster.root.iterdir())
        assert kept == ["ca.key", "ca.pem", "node.pem", "secrets"]

        # The next up reuses them: a client's CA and password files stay valid.
        again = cluster.up(nodes=1)
        assert cluster.ca_file.read_bytes() == ca_before
        assert conn.password() == password_before
        # (the ports are new: only the bootstrap changes)
        admin = make_admin(replace(conn, bootstrap=again.bootstrap), "lifecycle",
                           request_timeout_ms=10_000)
        try:
            assert len(admin.describe_cluster()["brokers"]) == 1
        finally:
            admin.close()
        assert cluster.down() == [again.nodes[0].pid]
    finally:
        cluster.down(purge=True)
    assert not cluster.root.exists()


def test_port_taken_is_reported_clearly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} .*taken"):
            Cluster(f"porttaken-{os.getpid()}").up(nodes=1, base_port=port)
    Cluster(f"porttaken-{os.getpid()}").down(purge=True)


def test_plaintext_client_is_refused(secure: ClusterState):
    start = time.monotonic()
    with pytest.raises(KafkaError) as caught:
        admin = admin_with({"bootstrap_servers": secure.bootstrap, "request_timeout_ms": 3000,
                            "bootstrap_timeout_ms": 3000})
        try:
            admin.describe_cluster()
        finally:
            admin.close()
    assert time.monotonic() - start < REFUSAL_S
    # Refused by the broker, not by a mistake in this test's client settings.
    assert not isinstance(caught.value, KafkaConfigurationError), caught.value


def _failed_scram_logins(state: ClusterState) -> int:
    return sum(log.read_text(errors="replace").count(
        "invalid credentials with SASL mechanism SCRAM-SHA-512")
        for log in Path(state.root).glob("node-*.log"))


def test_wrong_password_and_unknown_user_are_refused(secure: ClusterState, tmp_path: Path):
    for principal in ("admin", "nobody"):
        password_file = tmp_path / f"{principal}.password"
        write_secret(password_file, "not-the-password")
        conn = KafkaConnection(secure.bootstrap, principal, password_file, secure.ca_file)
        failed_before = _failed_scram_logins(secure)
        start = time.monotonic()
        with pytest.raises(BrokerError) as caught:
            admin = make_admin(conn, "wrong-password", request_timeout_ms=3000,
                               bootstrap_timeout_ms=3000)
            admin.close()
        assert time.monotonic() - start < REFUSAL_S
        assert "not-the-password" not in str(caught.value)
        # kafka-python only reports a timeout (it often sees the broker's close before the
        # error response); the broker says why it refused.
        deadline = time.monotonic() + 5
        while _failed_scram_logins(secure) == failed_before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _failed_scram_logins(secure) > failed_before


def test_internal_and_controller_listeners_need_the_node_certificate(secure: ClusterState):
    node = secure.nodes[0]
    for port in (node.internal_port, node.controller_port):
        # The probe itself works: with the node's certificate the listener answers.
        assert _api_versions_answered(port, secure.ca_file, secure.node_file)
        assert not _api_versions_answered(port, secure.ca_file, None)
    # Nor does a SCRAM client get anywhere on them.
    internal = KafkaConnection(node.internal_address, "admin",
                               secure.connection().password_file, secure.ca_file)
    with pytest.raises(BrokerError):
        make_admin(internal, "no-cert", request_timeout_ms=3000,
                   bootstrap_timeout_ms=3000).close()


def test_admin_works_and_an_unauthorised_principal_sees_nothing(secure: ClusterState,
                                                                  tmp_path: Path):
    conn = secure.connection()
    topic = f"secure-{os.getpid()}"
    _create_topic(conn, topic, 1, 1)
    producer = make_producer(conn, "secure-producer")
    send_and_confirm(producer, topic, b"hello", key=b"k")
    producer.close()
    consumer = make_consumer(conn, None)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while not values and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            values.extend(r.value for r in records)
    consumer.close()
    assert values == [b"hello"]

    # A principal with a valid credential and no ACL: authenticated, authorised for nothing.
    write_secret(tmp_path / "reader.password", "reader-password-for-this-test")
    admin = make_admin(conn, "secure-admin")
    try:
        assert admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
            "reader", ScramMechanism.SCRAM_SHA_512, "reader-password-for-this-test")]) == {
            "reader": None}
        assert topic in admin.list_topics()
    finally:
        admin.close()
    reader = KafkaConnection(secure.bootstrap, "reader", tmp_path / "reader.password",
                             secure.ca_file)
    deadline = time.monotonic() + 30
    while True:  # the new credential reaches the broker through the metadata log
        try:
            reader_admin = make_admin(reader, "reader", request_timeout_ms=5000)
            break
        except BrokerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        assert topic not in reader_admin.list_topics()
    finally:
        reader_admin.close()


def test_no_password_in_process_listings_or_logs_and_secret_files_are_private(
        secure: ClusterState):
    password = secure.connection().password()
    root = Path(secure.root)
    for private in (secure.connection().password_file, root / "ca.key", secure.node_file,
                    *root.glob("node-*.properties")):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert stat.S_IMODE(secure.secrets_dir.stat().st_mode) == 0o700

    listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True,
                             check=True, timeout=10).stdout
    assert "kafka.Kafka" in listing
    assert password not in listing
    for node in secure.nodes:
        for what in ("cmdline", "environ"):
            assert password.encode() not in Path(f"/proc/{node.pid}/{what}").read_bytes()
    for text_file in [*root.glob("node-*.log"), *root.glob("node-*.properties"),
                      root / "cluster.json"]:
        assert password not in text_file.read_text(errors="replace"), text_file


def test_three_nodes_survive_one_killed_with_acks_all():
    cluster = Cluster(f"fault-{os.getpid()}")
    state = cluster.up(nodes=3)
    try:
        conn = state.connection()
        topic = "fault-test"
        _create_topic(conn, topic, 3, 3, {"min.insync.replicas": "2"})
        producer = make_producer(conn, "fault-producer")
        before = send_all(producer, [(topic, f"a{i}".encode(), b"x", None) for i in range(300)])

        cluster.kill_node(2)  # abrupt: SIGKILL
        assert len(cluster.running_nodes()) == 2
        after = send_all(producer, [(topic, f"b{i}".encode(), b"y", None) for i in range(300)],
                         timeout=120)
        producer.close()
        acknowledged = {(r.partition, r.offset) for r in before + after}
        assert len(acknowledged) == 600

        consumer = make_consumer(conn, None)
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

        # The killed node rejoins over mutual TLS and the admin sees all three again.
        cluster.restart_node(2)
        assert len(cluster.running_nodes()) == 3
        cluster.wait_ready(3)
    finally:
        cluster.down(purge=True)
    assert _java_pids_for(state.root) == []
