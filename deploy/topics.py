"""Topic definitions (deploy/topics.toml) and the admin step that creates them."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from safehub import topics
from safehub.bus import make_admin
from safehub.config_files import read_toml
from safehub.connection import KafkaConnection
from safehub.deploy.registry import REGISTRY_FILE, Registry, load_registry
from safehub.errors import BrokerError
from safehub.settings import TopicsEnv, load

TOPICS_FILE = Path(__file__).with_name("topics.toml")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


def registry_specs(registry: Registry, brokers: int, prefix: str = "",
                   path: Path = TOPICS_FILE) -> list[TopicSpec]:
    """Every topic of the registry's agencies and hubs, and the internal ones."""
    return load_specs(registry.agencies, brokers, path, prefix, hubs=registry.hubs)


def load_specs(
    agencies: Iterable[str], brokers: int, path: Path = TOPICS_FILE, prefix: str = "",
    hubs: Iterable[str] = (),
) -> list[TopicSpec]:
    """Expand the definitions for these agencies and hubs on a cluster of `brokers` nodes.

    `prefix` namespaces every name (tests use it so that they never see each other's data).
    """
    raw = read_toml(path)
    defaults = raw.get("defaults", {})
    rf = min(int(defaults.get("replication_factor", 1)), brokers)
    isr = min(int(defaults.get("min_insync_replicas", 1)), rf)
    agency_list = sorted(set(agencies))
    hub_list = sorted(set(hubs))
    specs: list[TopicSpec] = []
    for t in raw.get("topic", []):
        config = {
            "retention.ms": str(t.get("retention_ms", -1)),
            "cleanup.policy": str(t.get("cleanup_policy", "delete")),
            "min.insync.replicas": str(isr if rf > 1 else 1),
        }
        name = str(t["name"])
        if "{agency}" in name:
            names = [name.format(agency=a) for a in agency_list]
        elif "{hub}" in name:
            names = [name.format(hub=h) for h in hub_list]
        else:
            names = [name]
        specs.extend(
            TopicSpec(prefix + n, int(t["partitions"]), rf, config) for n in names
        )
    return specs


def create_topics(kafka: KafkaConnection, specs: Iterable[TopicSpec]) -> list[str]:
    """Create what is missing; return the names created. Existing topics are left as they are."""
    admin = make_admin(kafka)
    created = []
    try:
        existing = set(admin.list_topics())
        todo = [s for s in specs if s.name not in existing]
        for spec in todo:
            try:
                admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, spec.replication_factor,
                              topic_configs=spec.config)],
                    timeout_ms=30_000,
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass
    except KafkaError as exc:
        raise BrokerError(f"creating topics failed: {exc}") from exc
    finally:
        admin.close()
    return created


def delete_topics_with_prefix(kafka: KafkaConnection, prefix: str) -> list[str]:
    """Delete every topic named `prefix...` (a test's or a benchmark's own); return the names."""
    admin = make_admin(kafka)
    try:
        mine = [t for t in admin.list_topics() if t.startswith(prefix)]
        if mine:
            admin.delete_topics(mine)
    except KafkaError as exc:
        raise BrokerError(f"deleting topics {prefix}* failed: {exc}") from exc
    finally:
        admin.close()
    return mine


def broker_count(kafka: KafkaConnection) -> int:
    admin = make_admin(kafka)
    try:
        return len(admin.describe_cluster()["brokers"])
    except KafkaError as exc:
        raise BrokerError(f"cannot describe cluster at {kafka.bootstrap}: {exc}") from exc
    finally:
        admin.close()


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["create", "list"])
    parser.add_argument("--registry", type=Path, default=REGISTRY_FILE,
                        help="the agency registry whose agencies' and hubs' topics to make "
                             "(default deploy/agencies.toml)")
    parser.add_argument("--agency", action="append", default=[], metavar="ID",
                        help="only this registry agency's per-agency topics, besides the shared "
                             "ones (repeatable)")


def run(args: argparse.Namespace) -> int:
    # Creating topics is the admin principal's job alone.
    kafka = KafkaConnection.from_env("admin")
    prefix = load(TopicsEnv).prefix
    registry = load_registry(args.registry)
    for agency in args.agency:
        registry.get(agency)
    agencies = args.agency or registry.agencies
    specs = load_specs(agencies, broker_count(kafka), prefix=prefix, hubs=registry.hubs)
    if args.action == "list":
        for s in specs:
            print(f"{s.name}\tpartitions={s.partitions}\treplication={s.replication_factor}")
        return 0
    created = create_topics(kafka, specs)
    print(f"created {len(created)} topic(s); {len(specs) - len(created)} already existed")
    notice = onboarding_notice(created)
    if notice:
        print(notice)
    return 0


def onboarding_notice(created: Iterable[str]) -> str | None:
    """What the operator must do after new ingress topics appear: the correlator resolves its
    ingress topics when it starts (services/correlator/app.py), so a new agency's events wait
    on their topic, unlost but uncorrelated, until the workers restart."""
    new = [name for name in created if topics.mentions_ingress(name)]
    if not new:
        return None
    return (f"new ingress topic(s) {', '.join(new)}: restart the correlator workers so that "
            "they subscribe (the events wait on the topic until then); with several workers, "
            "stop them all before starting any again")
