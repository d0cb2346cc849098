"""What the correlator relies on inside faust-streaming and aiokafka, checked when it starts.

The correlator keeps faust (docs/decisions/0001-keep-faust.md) but corrects it in a few
places (transport.py, stalls.py, membership.py, log_end.py, committed.py) through attributes
and methods that are not faust's or aiokafka's public API. A release may rename or drop any of
them without notice, and the corrections would then silently do nothing (an attribute set on
an object that no longer reads it) while the worker kept running: events skipped, recovery
never ending. So the versions are pinned exactly in pyproject.toml, and `check()` refuses to
start a worker on any other version or on one that lacks an attribute listed here. Upgrading
faust or aiokafka means re-reading each entry below against the new source, then changing
VERSIONS.

Every private name transport.py, stalls.py, membership.py, log_end.py and committed.py use is
listed; tests/unit/test_faust_contract.py checks that the list is complete.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import metadata

from safehub.errors import ConfigError

VERSIONS = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0", "mode-streaming": "0.7.1"}


@dataclass(frozen=True, slots=True)
class Reliance:
    """One private name: the class (module:qualname) that must define it, and why we use it.

    `assigned_in` names the method whose source assigns it, for instance attributes (which a
    class does not carry until an instance is built)."""

    owner: str
    name: str
    why: str
    assigned_in: str | None = None


RELIANCES = (
    Reliance("aiokafka.consumer.consumer:AIOKafkaConsumer", "_fetch_max_wait_ms",
             "shorter fetch wait (transport.py): faust fixes 1,500 ms", "__init__"),
    Reliance("aiokafka.consumer.consumer:AIOKafkaConsumer", "_isolation_level",
             "read_committed for the transactional changelog", "__init__"),
    Reliance("aiokafka.consumer.consumer:AIOKafkaConsumer", "_group_instance_id",
             "static membership (KIP-345)", "__init__"),
    Reliance("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread",
             "_create_worker_consumer", "where the three settings above are applied"),
    Reliance("faust.transport.drivers.aiokafka:Consumer", "_new_consumer_thread",
             "installs the consumer thread that applies them"),
    Reliance("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_highwaters",
             "recovery's targets: the log's end, open transactions counted (log_end.py)"),
    Reliance("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread", "_ensure_consumer",
             "the aiokafka consumer whose connections log_end.py asks with"),
    Reliance("aiokafka.consumer.consumer:AIOKafkaConsumer", "_client",
             "its connections and metadata, for ListOffsets (log_end.py)", "__init__"),
    Reliance("faust.transport.consumer:Consumer", "_getmany",
             "records what recovery fetched (recovery past transaction markers)"),
    Reliance("faust.tables.recovery:Recovery", "_set_recovery_ended",
             "ends recovery past transaction markers without faust's 5 s wait, as faust's own "
             "check does (transport.py)"),
    Reliance("faust.transport.consumer:Consumer", "_add_gap",
             "no commit past offsets faust lost"),
    Reliance("faust.transport.consumer:Consumer", "_new_offset",
             "no commit past a single message lost inside faust (transport.py)"),
    Reliance("faust.transport.consumer:Consumer", "_acked",
             "the acked offsets a commit would start from: none past a message in flight "
             "(in_flight.py)", "__init__"),
    Reliance("faust.transport.consumer:Consumer", "_acked_index",
             "whether the message at the committed offset is acked", "__init__"),
    Reliance("faust.transport.consumer:Consumer", "_gap",
             "offsets the log has no record at (gaps), from the committed offset on",
             "__init__"),
    Reliance("faust.transport.consumer:Consumer", "_committed_offset",
             "seek partitions without a commit to their beginning; stall detection",
             "__init__"),
    Reliance("faust.transport.consumer:Consumer", "_commit_fut",
             "an offset commit under way: a held commit that is no hole (stalls.py)",
             "commit"),
    Reliance("faust.transport.consumer:Consumer", "_unacked_messages",
             "messages handed to the agent or the refusals lane, not yet acked (stalls.py)",
             "__init__"),
    Reliance("faust.transport.consumer:Consumer", "_read_offset",
             "the fetch loop's last offset handed on per partition: a record taken into the "
             "refusals lane counts as handed on (transport.py)", "__init__"),
    Reliance("faust.transport.consumer:Consumer", "_buffered_partitions",
             "tells a paused partition from one with buffered records", "__init__"),
    Reliance("faust.transport.consumer:Consumer", "_get_active_partitions",
             "finds partitions left paused after a rebalance"),
    Reliance("aiokafka.consumer.group_coordinator:GroupCoordinator", "_do_heartbeat",
             "each heartbeat's send time and answer (membership.py)"),
    Reliance("aiokafka.consumer.group_coordinator:GroupCoordinator", "_do_rejoin_group",
             "each completed join (membership.py)"),
    Reliance("aiokafka.consumer.group_coordinator:GroupCoordinator", "_send_req",
             "sees each OffsetFetch answer's group error (committed.py)"),
    Reliance("aiokafka.consumer.group_coordinator:GroupCoordinator", "_rejoin_needed_fut",
             "done after a heartbeat that found a rebalance under way", "__init__"),
    Reliance("aiokafka.consumer.group_coordinator:GroupCoordinator", "_session_timeout_ms",
             "the session timeout the coordinator applies", "__init__"),
    Reliance("aiokafka.consumer.group_coordinator:GroupCoordinator", "_rebalance_timeout_ms",
             "the rebalance timeout the coordinator applies", "__init__"),
)


def _resolve(owner: str) -> type:
    module_name, _, qualname = owner.partition(":")
    obj: object = __import__(module_name, fromlist=["_"])
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise TypeError(f"{owner} is not a class")
    return obj


def problems() -> list[str]:
    """Everything that differs from what the correlator was written against."""
    found = []
    for distribution, pinned in VERSIONS.items():
        try:
            installed = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            found.append(f"{distribution} is {installed}; the correlator is checked against "
                         f"{pinned} only")
    for r in RELIANCES:
        cls = _resolve(r.owner)
        if r.assigned_in is None:
            present = hasattr(cls, r.name)
        else:
            source = inspect.getsource(getattr(cls, r.assigned_in))
            present = f"self.{r.name} =" in source or f"self.{r.name}:" in source
        if not present:
            found.append(f"{r.owner} no longer has {r.name} ({r.why})")
    return found


def check() -> None:
    """Refuse to run a worker whose corrections might silently not apply."""
    found = problems()
    if found:
        raise ConfigError("faust/aiokafka differ from what the correlator relies on: "
                          + "; ".join(found))
