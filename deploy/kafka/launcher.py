"""Run the real Apache Kafka broker (KRaft) on loopback, without Docker.

The broker's jars come from Maven Central through Maven, once, into a cache outside the
repository. `up` formats fresh storage and starts 1 or 3 combined broker+controller nodes;
`down` stops exactly the processes `up` recorded, and nothing else.

Kafka 4.4 is the newest release on Maven Central that both clients work against:
kafka-python 3.x negotiates current API versions, and aiokafka 0.14 (under faust-streaming)
keeps the pre-KIP-896 versions Kafka 4 still accepts. The integration tests prove both.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from safehub.errors import BrokerError

KAFKA_VERSION = "4.4.0"
SLF4J_VERSION = "1.7.36"  # the SLF4J API line Kafka 4.4 is built against
# A 2-core, 24 GB machine runs up to three nodes beside the tests and services.
HEAP = ("-Xms256m", "-Xmx768m")
JVM_FLAGS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
DEFAULT_BROKER_PORT = 19092
READY_TIMEOUT_S = 90.0


def cache_dir() -> Path:
    base = os.environ.get("SAFEHUB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "safehub"
    )
    return Path(base) / f"kafka-{KAFKA_VERSION}"


def state_root() -> Path:
    base = os.environ.get("SAFEHUB_STATE") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "safehub"
    )
    return Path(base) / "kafka"


def _need(tool: str, what: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(f"{tool} not found on PATH: {what}")
    return path


def fetch_jars() -> Path:
    """Download the pinned broker jars once; return the folder holding them."""
    libs = cache_dir() / "libs"
    stamp = cache_dir() / "complete"
    if stamp.exists():
        return libs
    mvn = _need("mvn", "Maven is needed once to fetch the Kafka broker jars from Maven Central")
    _need("java", "the Kafka broker needs a Java runtime (17 or newer)")
    pom = Path(__file__).with_name("pom.xml")
    tmp = cache_dir().with_suffix(".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        mvn, "-B", "-q", "-f", str(pom),
        f"-Dkafka.version={KAFKA_VERSION}", f"-Dslf4j.version={SLF4J_VERSION}",
        "dependency:copy-dependencies", "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp / 'libs'}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise BrokerError(f"Maven could not fetch Kafka {KAFKA_VERSION}:\n{tail}")
    (tmp / "complete").write_text(KAFKA_VERSION)
    shutil.rmtree(cache_dir(), ignore_errors=True)
    tmp.rename(cache_dir())
    return libs


@dataclass(frozen=True)
class Node:
    node_id: int
    broker_port: int
    controller_port: int
    pid: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.broker_port}"


@dataclass(frozen=True)
class ClusterState:
    name: str
    nodes: tuple[Node, ...]
    root: str

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @staticmethod
    def from_json(text: str) -> ClusterState:
        raw = json.loads(text)
        nodes = tuple(Node(**n) for n in raw["nodes"])
        return ClusterState(name=raw["name"], nodes=nodes, root=raw["root"])


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports: each socket stays bound until all are chosen, so
    the kernel cannot hand the same port out twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _is_our_broker(pid: int, root: str) -> bool:
    """True only for a live JVM running kafka.Kafka with a config under our root."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    cmdline = raw.split(b"\0")
    args = [a.decode(errors="replace") for a in cmdline]
    return "kafka.Kafka" in args and any(a.startswith(root) for a in args)


def _properties(node: Node, nodes: tuple[Node, ...], data_dir: Path) -> str:
    n = len(nodes)
    voters = ",".join(f"{x.node_id}@127.0.0.1:{x.controller_port}" for x in nodes)
    props = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port},"
        f"CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        # Topics are created explicitly from deploy/topics.toml, never by a typo.
        "auto.create.topics.enable": "false",
        "num.partitions": 1,
        "default.replication.factor": n,
        "min.insync.replicas": 2 if n >= 3 else 1,
        "offsets.topic.replication.factor": n,
        "transaction.state.log.replication.factor": n,
        "transaction.state.log.min.isr": 2 if n >= 3 else 1,
        "group.initial.rebalance.delay.ms": 0,
        "unclean.leader.election.enable": "false",
        "log.flush.interval.messages": 9223372036854775807,
        "num.network.threads": 2,
        "num.io.threads": 4,
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


class Cluster:
    """One local cluster, named so that the demo and a test session can run side by side."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.root = state_root() / name
        self.state_file = self.root / "cluster.json"

    # -- inspection ---------------------------------------------------------------------
    def state(self) -> ClusterState | None:
        if not self.state_file.exists():
            return None
        return ClusterState.from_json(self.state_file.read_text())

    def running_nodes(self) -> list[Node]:
        st = self.state()
        if st is None:
            return []
        return [n for n in st.nodes if _is_our_broker(n.pid, st.root)]

    def log_tail(self, node_id: int, lines: int = 20) -> str:
        log = self.root / f"node-{node_id}.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    # -- lifecycle -----------------------------------------------------------------------
    def up(self, nodes: int = 1, base_port: int | None = None) -> ClusterState:
        if nodes not in (1, 3):
            raise BrokerError("a local cluster has 1 node, or 3 for fault tests")
        live = self.running_nodes()
        if live:
            st = self.state()
            assert st is not None
            raise BrokerError(
                f"cluster '{self.name}' is already running (pids "
                f"{', '.join(str(n.pid) for n in live)}; bootstrap {st.bootstrap}); "
                "run `safehub kafka down` first"
            )
        libs = fetch_jars()
        java = _need("java", "the Kafka broker needs a Java runtime (17 or newer)")
        layout = self._layout(nodes, base_port)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        cluster_id = new_cluster_id()
        classpath = f"{libs}/*"
        for node in layout:
            props = self.root / f"node-{node.node_id}.properties"
            props.write_text(_properties(node, layout, self.root / f"data-{node.node_id}"))
            fmt = subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "format",
                 "-t", cluster_id, "-c", str(props)],
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise BrokerError(
                    f"formatting node {node.node_id} failed:\n{fmt.stdout}{fmt.stderr}"
                )
        started = tuple(self._spawn(java, classpath, node) for node in layout)
        state = ClusterState(name=self.name, nodes=started, root=str(self.root))
        self.state_file.write_text(state.to_json())
        try:
            self.wait_ready(len(started))
        except BrokerError:
            self.down()
            raise
        return state

    def _layout(self, nodes: int, base_port: int | None) -> tuple[Node, ...]:
        if base_port is None:
            ports = free_ports(2 * nodes)
            return tuple(Node(i + 1, ports[2 * i], ports[2 * i + 1]) for i in range(nodes))
        layout = tuple(
            Node(i + 1, base_port + i, base_port + 100 + i) for i in range(nodes)
        )
        for n in layout:
            for port in (n.broker_port, n.controller_port):
                if _port_taken(port):
                    raise BrokerError(
                        f"port {port} on 127.0.0.1 is taken; stop what holds it or choose "
                        "another with --port"
                    )
        return layout

    def _spawn(self, java: str, classpath: str, node: Node) -> Node:
        props = self.root / f"node-{node.node_id}.properties"
        log = open(self.root / f"node-{node.node_id}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [java, *HEAP, *JVM_FLAGS, "-cp", classpath, "kafka.Kafka", str(props)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop the broker in order
        )
        log.close()
        # While the JVM launcher execs, /proc shows an empty cmdline for a moment; wait until
        # the process is recognisably ours so that status and down can trust /proc.
        deadline = time.monotonic() + 10
        while not _is_our_broker(proc.pid, str(self.root)) and proc.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        return Node(node.node_id, node.broker_port, node.controller_port, proc.pid)

    def wait_ready(self, expected_brokers: int, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until the cluster answers metadata with every broker; explain a failure."""
        from kafka import KafkaAdminClient  # imported here: `kafka status` should start fast
        from kafka.errors import KafkaError

        st = self.state()
        assert st is not None
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            for node in st.nodes:
                if not _is_our_broker(node.pid, st.root):
                    raise BrokerError(
                        f"broker node {node.node_id} exited during start; last lines of its log:\n"
                        + self.log_tail(node.node_id)
                    )
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=st.bootstrap, request_timeout_ms=5000,
                    client_id="safehub-launcher",
                )
                try:
                    meta = admin.describe_cluster()
                finally:
                    admin.close()
                if len(meta.get("brokers", [])) >= expected_brokers:
                    return
                last_error = f"{len(meta.get('brokers', []))} of {expected_brokers} brokers up"
            except KafkaError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise BrokerError(
            f"cluster did not answer metadata requests within {timeout:.0f}s ({last_error}); "
            f"last lines of node 1's log:\n{self.log_tail(1)}"
        )

    def kill_node(self, node_id: int, sig: int = signal.SIGKILL) -> None:
        """Stop one node abruptly (fault tests)."""
        st = self.state()
        assert st is not None
        node = next(n for n in st.nodes if n.node_id == node_id)
        if _is_our_broker(node.pid, st.root):
            os.kill(node.pid, sig)
            _wait_gone(node.pid, 30.0)

    def restart_node(self, node_id: int) -> None:
        st = self.state()
        assert st is not None
        java = _need("java", "the Kafka broker needs a Java runtime (17 or newer)")
        classpath = f"{fetch_jars()}/*"
        nodes = tuple(
            self._spawn(java, classpath, n) if n.node_id == node_id else n for n in st.nodes
        )
        self.state_file.write_text(
            ClusterState(name=st.name, nodes=nodes, root=st.root).to_json()
        )

    def down(self, timeout: float = 30.0) -> list[int]:
        """Stop the processes this cluster recorded; return their pids."""
        st = self.state()
        if st is None:
            return []
        stopped = []
        for node in st.nodes:
            if _is_our_broker(node.pid, st.root):
                os.kill(node.pid, signal.SIGTERM)
                stopped.append(node.pid)
        deadline = time.monotonic() + timeout
        for pid in stopped:
            if not _wait_gone(pid, max(0.1, deadline - time.monotonic())):
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 10.0)
        shutil.rmtree(self.root, ignore_errors=True)
        return stopped


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Reap our own child if it is one; otherwise just probe.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        try:
            if stat.read_text().split()[2] == "Z":
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.1)
    return False


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID, URL-safe base64.

    Like Kafka's own Uuid.randomUuid, never one starting with "-": kafka-storage would read it
    as an option ("--cluster-id: expected one argument"), which failed 1 in 64 starts.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
