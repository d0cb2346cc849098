"""Run the real Apache Kafka broker (KRaft) on loopback, without Docker.

The broker's jars come from Maven Central through Maven, once, into a cache outside the
repository. `up` formats fresh storage and starts 1 or 3 combined broker+controller nodes;
`down` stops exactly the processes `up` recorded, and nothing else.

The cluster is secure by default, like the real one:
- CLIENT (SASL_SSL, SCRAM-SHA-512) is the only listener clients use;
- INTERNAL (replication) and CONTROLLER (KRaft) are TLS with a required client certificate:
  only a holder of the node certificate (principal User:safehub-node) gets in;
- StandardAuthorizer with no ACL meaning no access; super users are the nodes and `admin`.
The CA, the node key and `secrets/` (one 0600 password file per principal) are made at the
first `up` and kept by `down`, so that a client's CA and password files stay valid across
restarts; `down(purge=True)` removes them too. The admin's SCRAM credential is written through
the INTERNAL listener with the node certificate, so no password is ever on a command line, in
an environment value or in a properties file.

Kafka 4.4 is the newest release on Maven Central that both clients work against:
kafka-python 3.x negotiates current API versions, and aiokafka 0.14 (under faust-streaming)
keeps the pre-KIP-896 versions Kafka 4 still accepts. The integration tests prove both.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safehub.connection import (
    KafkaConnection,
    ensure_password,
    local_cluster_folder,
    password_path,
    write_secret,
)
from safehub.deploy.kafka import class_archive
from safehub.deploy.kafka.certificates import NODE_PRINCIPAL, Certificates, ensure_certificates
from safehub.deploy.registry import ADMIN
from safehub.errors import BrokerError, SafehubError
from safehub.settings import PlacesEnv, load

KAFKA_VERSION = "4.4.0"
SLF4J_VERSION = "1.7.36"  # the SLF4J API line Kafka 4.4 is built against
# A 2-core, 24 GB machine runs up to three nodes beside the tests and services.
HEAP = ("-Xms256m", "-Xmx768m")
JVM_FLAGS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
             # slf4j-simple writes no time by default; an operator reading a node's log needs it.
             "-Dorg.slf4j.simpleLogger.showDateTime=true",
             "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSSZ")
DEFAULT_BROKER_PORT = 19092
READY_TIMEOUT_S = 90.0
# While the nodes start, kafka-python's reconnect backoff would grow to tens of seconds and
# leave `up` sleeping long after the broker is ready; the launcher's own clients retry briskly.
PROBE = {"request_timeout_ms": 5000, "bootstrap_timeout_ms": 5000,
         "reconnect_backoff_max_ms": 500}
SECRETS = "secrets"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


def cache_dir() -> Path:
    # XDG_CACHE_HOME is the desktop's convention, not a setting of ours.
    base = load(PlacesEnv).cache or Path(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "safehub")
    return base / f"kafka-{KAFKA_VERSION}"


def state_root() -> Path:
    """The folder of all local clusters (`local_cluster_folder(name)` is one of them)."""
    return local_cluster_folder().parent


def _need(tool: str, what: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(f"{tool} not found on PATH: {what}")
    return path


def _jvm(java: str, classpath: str, write_archive: bool) -> list[str]:
    """A broker-side JVM up to its main class: the brokers' flags, for the storage formatter
    too, since a class archive maps only in a JVM set up as the one that made it."""
    vm = (*HEAP, *JVM_FLAGS)
    archive = class_archive.jvm_flags(java, classpath, cache_dir() / "class-archive",
                                      write=write_archive, vm=vm)
    return [java, *vm, *archive, "-cp", classpath]


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
    broker_port: int  # CLIENT listener (SASL_SSL): the one clients use
    controller_port: int  # CONTROLLER listener (mutual TLS)
    internal_port: int  # INTERNAL listener (mutual TLS): replication between brokers
    pid: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def internal_address(self) -> str:
        return f"127.0.0.1:{self.internal_port}"

    @property
    def controller_address(self) -> str:
        return f"127.0.0.1:{self.controller_port}"


@dataclass(frozen=True)
class ClusterState:
    name: str
    nodes: tuple[Node, ...]
    root: str

    @property
    def bootstrap(self) -> str:
        """The CLIENT listeners: the only way in for clients."""
        return ",".join(n.address for n in self.nodes)

    @property
    def internal_bootstrap(self) -> str:
        return ",".join(n.internal_address for n in self.nodes)

    @property
    def secrets_dir(self) -> Path:
        return Path(self.root) / SECRETS

    @property
    def ca_file(self) -> Path:
        return Certificates(Path(self.root)).ca_file

    @property
    def node_file(self) -> Path:
        return Certificates(Path(self.root)).node_file

    def connection(self, principal: str = ADMIN) -> KafkaConnection:
        """How `principal` reaches this cluster (its password file is in `secrets/`)."""
        return KafkaConnection(
            bootstrap=self.bootstrap,
            principal=principal,
            password_file=password_path(self.secrets_dir, principal),
            ca_file=self.ca_file,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @staticmethod
    def from_json(text: str) -> ClusterState:
        raw = json.loads(text)
        # A state file written before the INTERNAL listener existed has no internal port.
        nodes = tuple(Node(**{"internal_port": 0, **n}) for n in raw["nodes"])
        return ClusterState(name=raw["name"], nodes=nodes, root=raw["root"])


def free_port() -> int:
    return free_ports(1)[0]


# Below Linux's ephemeral range (32768-60999). A port is chosen here and bound by a service a
# moment later; one from the ephemeral range could meanwhile become the source port of one of
# this machine's outgoing connections (a demo opens hundreds), and the service then fails with
# "address already in use" (seen once in a clean-clone run).
_CHOSEN_PORTS = range(20000, 32768)


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports: each socket stays bound until all are chosen, so
    none is handed out twice."""
    sockets: list[socket.socket] = []
    try:
        for port in random.sample(_CHOSEN_PORTS, len(_CHOSEN_PORTS)):
            if len(sockets) == count:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        while len(sockets) < count:  # the whole range taken: any free port at all
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
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


def _accepting(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return True
    except OSError:
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


def _properties(node: Node, nodes: tuple[Node, ...], data_dir: Path, certs: Certificates) -> str:
    n = len(nodes)
    voters = ",".join(f"{x.node_id}@127.0.0.1:{x.controller_port}" for x in nodes)
    props: dict[str, Any] = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"CLIENT://127.0.0.1:{node.broker_port},"
        f"INTERNAL://127.0.0.1:{node.internal_port},"
        f"CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"CLIENT://127.0.0.1:{node.broker_port},"
        f"INTERNAL://127.0.0.1:{node.internal_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "INTERNAL",
        "listener.security.protocol.map": "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL",
        # Clients: SCRAM over TLS, credentials kept in the metadata log.
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.client.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.client.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        # Nodes: mutual TLS with the node certificate; nothing else opens these listeners.
        "listener.name.internal.ssl.client.auth": "required",
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs.node_file),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs.ca_file),
        "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
        # No ACL means no access; the nodes and the bootstrap admin are super users.
        "authorizer.class.name": AUTHORIZER,
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"{NODE_PRINCIPAL};User:{ADMIN}",
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
        # A killed node's partitions move, and its restarted self may register again, only when
        # its session expires: 9 s by default, most of a killed broker's way back (measured).
        "broker.session.timeout.ms": 4000,
        "broker.heartbeat.interval.ms": 1000,
        "num.network.threads": 2,
        "num.io.threads": 4,
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


class Cluster:
    """One local cluster, named so that the demo and a test session can run side by side."""

    def __init__(self, name: str = "default") -> None:
        self.name = name
        self.root = local_cluster_folder(name)
        self.state_file = self.root / "cluster.json"
        self.certificates = Certificates(self.root)

    @property
    def secrets_dir(self) -> Path:
        """One 0600 `<principal>.password` file per principal; kept across down/up."""
        return self.root / SECRETS

    @property
    def ca_file(self) -> Path:
        """The CA clients trust; kept across down/up."""
        return self.certificates.ca_file

    def _kept(self) -> set[str]:
        return {*self.certificates.names, SECRETS}

    def _clear(self, purge: bool) -> None:
        """Remove data, logs, properties and state; the CA, node key and secrets unless purge."""
        if purge:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        if not self.root.is_dir():
            return
        kept = self._kept()
        for entry in self.root.iterdir():
            if entry.name in kept:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def _admin_password(self) -> str:
        return ensure_password(self.secrets_dir, ADMIN)

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
        self._clear(purge=False)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self.secrets_dir.mkdir(mode=0o700, exist_ok=True)
        self.secrets_dir.chmod(0o700)
        certs = ensure_certificates(self.root)
        self._admin_password()  # made now, so a failed start still leaves it for the next
        cluster_id = new_cluster_id()
        classpath = f"{libs}/*"
        for node in layout:
            props = self.root / f"node-{node.node_id}.properties"
            write_secret(props, _properties(node, layout, self.root / f"data-{node.node_id}",
                                            certs))
            fmt = subprocess.run(
                [*_jvm(java, classpath, write_archive=False),
                 "kafka.tools.StorageTool", "format",
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
            self.bootstrap_admin()
            self.wait_ready(len(started))
        except BrokerError:
            self.down()
            raise
        return state

    def _layout(self, nodes: int, base_port: int | None) -> tuple[Node, ...]:
        if base_port is None:
            ports = free_ports(3 * nodes)
            return tuple(Node(i + 1, ports[3 * i], ports[3 * i + 1], ports[3 * i + 2])
                         for i in range(nodes))
        layout = tuple(
            Node(i + 1, base_port + i, base_port + 100 + i, base_port + 200 + i)
            for i in range(nodes)
        )
        for n in layout:
            for port in (n.broker_port, n.controller_port, n.internal_port):
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
            # One node writes the archive: the others would write the same classes again.
            [*_jvm(java, classpath, write_archive=node.node_id == 1), "kafka.Kafka", str(props)],
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
        return Node(node.node_id, node.broker_port, node.controller_port, node.internal_port,
                    proc.pid)

    def _check_alive(self, st: ClusterState) -> None:
        for node in st.nodes:
            if not _is_our_broker(node.pid, st.root):
                raise BrokerError(
                    f"broker node {node.node_id} exited during start; last lines of its log:\n"
                    + self.log_tail(node.node_id)
                )

    def node_client(self, **overrides: Any) -> dict[str, Any]:
        """kafka-python settings for the node's own identity on the INTERNAL listeners (mutual
        TLS, super user): how the launcher writes the first credential, before any exists."""
        st = self.state()
        assert st is not None
        node_file = str(self.certificates.node_file)
        return {
            "bootstrap_servers": st.internal_bootstrap,
            "security_protocol": "SSL",
            "ssl_cafile": str(self.certificates.ca_file),
            "ssl_certfile": node_file,  # key and chain in one file, as Kafka reads it
            "ssl_keyfile": node_file,
            "client_id": "safehub-launcher",
            **overrides,
        }

    def bootstrap_admin(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Give the `admin` principal its SCRAM-SHA-512 credential from `secrets/admin.password`.

        Sent as the node over mutual TLS, salted and hashed by the client (the request carries
        PBKDF2 output, not the password); the password never leaves this process otherwise.
        """
        # imported here: `kafka status` should start fast (bus applies kafka_python_fixes)
        from kafka.admin import ScramMechanism, UserScramCredentialUpsertion
        from kafka.errors import KafkaError

        from safehub.bus import admin_with

        st = self.state()
        assert st is not None
        password = self._admin_password()
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            self._check_alive(st)
            try:
                admin = admin_with(self.node_client(**PROBE))
                try:
                    result = admin.alter_user_scram_credentials([
                        UserScramCredentialUpsertion(ADMIN, ScramMechanism.SCRAM_SHA_512,
                                                     password)
                    ])
                finally:
                    admin.close()
                error = result.get(ADMIN)
                if error is None:
                    return
                last_error = f"the broker refused the admin credential: {error}"
            except KafkaError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise BrokerError(
            f"could not give '{ADMIN}' its credential within {timeout:.0f}s ({last_error}); "
            f"last lines of node 1's log:\n{self.log_tail(1)}"
        )

    def wait_ready(self, expected_brokers: int, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until `admin`, on the CLIENT listeners, sees every broker and each of them
        accepts connections; explain a failure.

        Authentication failures are retried: a new SCRAM credential reaches each broker through
        the metadata log, a moment after the controller accepted it. A broker is listed once it
        is unfenced, and opens its listeners only after that (its log says "Awaiting socket
        connections" after "The broker has been unfenced"): under load, a client that came at
        once was refused (a test fixture's first call, in a clean-clone run).
        """
        from kafka.errors import KafkaError

        from safehub.bus import make_admin

        st = self.state()
        assert st is not None
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            self._check_alive(st)
            try:
                admin = make_admin(st.connection(), "safehub-launcher", **PROBE)
                try:
                    meta = admin.describe_cluster()
                finally:
                    admin.close()
                brokers = meta.get("brokers", [])
                closed = [f"{b['host']}:{b['port']}" for b in brokers
                          if not _accepting(str(b["host"]), int(b["port"]))]
                if len(brokers) >= expected_brokers and not closed:
                    return
                last_error = (f"{len(brokers)} of {expected_brokers} brokers up"
                              + (f", not yet accepting on {', '.join(closed)}" if closed else ""))
            except (KafkaError, SafehubError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise BrokerError(
            f"cluster did not answer '{ADMIN}' within {timeout:.0f}s ({last_error}); "
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

    def down(self, timeout: float = 30.0, purge: bool = False) -> list[int]:
        """Stop the processes this cluster recorded and remove their data; return their pids.

        The CA, the node key and `secrets/` stay for the next `up` unless `purge`.
        """
        st = self.state()
        if st is None:
            if purge:
                self._clear(purge=True)
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
        self._clear(purge)
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
