"""No Kafka client is constructed outside the client layer (issue 23).

Walks the syntax tree of every Python file of the repository (the package, the services,
producers, consumers, deploy, bench and tests folders; the package's service folders are
symlinks to the top-level ones, so each file is read once) and fails on any call that builds a
kafka-python or aiokafka client outside `safehub/bus.py`. A client built there has the
project's security settings (the principal's SASL_SSL connection) and delivery settings; one
built by hand has whatever its author remembered. A deliberate exception to those settings (a
wrong password, a plaintext attempt, the launcher's node identity) goes through
`bus.admin_with` and is visible at the call.

The one client the project does not build itself is faust's aiokafka consumer in the
correlator: faust constructs it inside its driver, from the settings `KafkaConnection.faust()`
gives the app (services/correlator/app.py), and services/correlator/transport.py only adjusts
it after faust made it. The last test holds that exception to exactly this shape.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import safehub

PACKAGE = Path(safehub.__file__).parent
ROOT = PACKAGE.parent.parent
LAYER = PACKAGE / "bus.py"
CLIENTS = frozenset({
    "KafkaProducer", "KafkaConsumer", "KafkaAdminClient", "KafkaClient",
    "AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaClient", "AIOKafkaAdminClient",
})
SKIPPED_DIRS = frozenset({".venv", ".git", "node_modules", "__pycache__", "build", "dist"})
# What the walk must at least see, so that a moved folder does not make the test pass vacuously.
EXPECTED = ("services/audit/reading.py", "deploy/kafka/launcher.py", "bench/replay_bench.py",
            "tests/fixtures/access.py", "src/safehub/bus.py")


def _sources() -> Iterator[Path]:
    stack = [ROOT]
    while stack:
        folder = stack.pop()
        for path in sorted(folder.iterdir()):
            if path.is_symlink() or path.name in SKIPPED_DIRS:
                continue
            if path.is_dir():
                stack.append(path)
            elif path.suffix == ".py":
                yield path


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def constructions(path: Path) -> list[str]:
    """`line: Class` for each call in the file that builds a Kafka client."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [f"{node.lineno}: {name}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and (name := _called_name(node)) in CLIENTS]


def test_the_walk_sees_the_whole_tree() -> None:
    seen = {p.relative_to(ROOT).as_posix() for p in _sources()}
    assert set(EXPECTED) <= seen, set(EXPECTED) - seen


def test_the_layer_builds_every_kind_of_client() -> None:
    built = {entry.split(": ")[1] for entry in constructions(LAYER)}
    assert {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient", "AIOKafkaProducer",
            "AIOKafkaConsumer"} <= built


def test_no_kafka_client_is_constructed_outside_the_layer() -> None:
    offences = {
        path.relative_to(ROOT).as_posix(): found
        for path in _sources() if path.resolve() != LAYER.resolve()
        if (found := constructions(path))
    }
    assert not offences, ("build these through safehub.bus (make_producer, make_consumer, "
                          f"make_admin, make_aio_producer, make_aio_consumer, admin_with): "
                          f"{offences}")


def test_the_faust_exception_is_faust_s_own_consumer() -> None:
    """faust's consumer is made by faust from the app's settings, which come from the
    correlator's KafkaConnection; our transport only takes the one faust made."""
    correlator = ROOT / "services" / "correlator"
    transport = (correlator / "transport.py").read_text()
    assert "super()._create_worker_consumer(transport)" in transport
    assert not constructions(correlator / "transport.py")
    assert ".kafka.faust()" in (correlator / "app.py").read_text()
