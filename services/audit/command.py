"""`safehub audit sink|verify|replay`.

The sink is a service (it writes the ledger and publishes checkpoints). `verify` and `replay`
are the auditors' tools: they open the store read-only, read topics without a consumer group,
and write nothing but their own report file.

Health, metrics and JSON logs: as every service (SAFEHUB_HEALTH_PORT, SAFEHUB_LOG_FORMAT; see
safehub.observability).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from safehub import topics
from safehub.connection import KafkaConnection
from safehub.deploy.registry import Service
from safehub.errors import ConfigError
from safehub.services.audit.checkpoint import load_signing_key
from safehub.settings import AuditEnv, TopicsEnv, load

AUDITOR = "auditor"  # the principal of verify and replay: reads every topic, writes nothing


@dataclass(frozen=True, slots=True)
class AuditSettings:
    kafka: KafkaConnection
    prefix: str
    database_url: str

    @property
    def audit_topic(self) -> str:
        return topics.audit(self.prefix)


def settings_from_env(principal: str, env: dict[str, str] | None = None) -> AuditSettings:
    """`principal` is the default: the sink runs as `audit-sink`, verify and replay as
    `auditor` (read-only, no consumer group), unless SAFEHUB_KAFKA_PRINCIPAL says otherwise."""
    return AuditSettings(
        kafka=KafkaConnection.from_env(principal, env),
        prefix=load(TopicsEnv, env).prefix,
        database_url=load(AuditEnv, env).database_url,
    )


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    sink = sub.add_parser("sink", help="keep the Merkle log of `audit` and sign checkpoints")
    sink.add_argument("--db", help="SQLAlchemy URL of the audit store (SAFEHUB_AUDIT_DB_URL)")
    sink.add_argument("--key-file", type=Path,
                      help="Ed25519 seed in hex (else SAFEHUB_AUDIT_SIGNING_KEY)")
    sink.add_argument("--origin", help="the log's name (SAFEHUB_AUDIT_ORIGIN)")
    sink.add_argument("--checkpoint-every", type=int,
                      help="entries (SAFEHUB_AUDIT_CHECKPOINT_EVERY)")
    sink.add_argument("--checkpoint-seconds", type=float,
                      help="seconds (SAFEHUB_AUDIT_CHECKPOINT_SECONDS)")

    verify = sub.add_parser("verify", help="check the audit log against its checkpoints")
    verify.add_argument("--db", help="SQLAlchemy URL of the audit store (read-only)")
    verify.add_argument("--public-key", help="hex, or a file holding it "
                        "(else SAFEHUB_AUDIT_PUBLIC_KEY)")
    verify.add_argument("--no-topic", action="store_true",
                        help="check the store against its checkpoints only")
    verify.add_argument("--report", type=Path, help="write the findings as JSON here")
    verify.add_argument("--pin", type=Path, metavar="FILE",
                        help="a checkpoint saved earlier (--save-pin): the log must extend it, "
                             "else it reports a fork or a rollback")
    verify.add_argument("--save-pin", type=Path, metavar="FILE",
                        help="if the log verifies, save its accepted head here for --pin")
    verify.add_argument("--witness-key", metavar="PUB",
                        help="hex, or a file holding it: accept only a head this witness "
                             "cosigned")
    verify.add_argument("--witnessed", type=Path, action="append", default=[], metavar="FILE",
                        help="a checkpoint the witness cosigned (`safehub audit witness`)")

    witness = sub.add_parser("witness", help="cosign the log's newest checkpoint if it extends "
                             "the last one this witness cosigned")
    witness.add_argument("--db", help="SQLAlchemy URL of the audit store (read-only)")
    witness.add_argument("--public-key", help="the hub's checkpoint key: hex, or a file holding "
                         "it (else SAFEHUB_AUDIT_PUBLIC_KEY)")
    witness.add_argument("--key-file", type=Path, required=True,
                         help="the witness's Ed25519 seed in hex (a 0600 file the hub never sees)")
    witness.add_argument("--name", default="witness.safehub.local",
                         help="the witness's key name in its cosignature lines")
    witness.add_argument("--state", type=Path, required=True,
                         help="the last checkpoint this witness cosigned (kept by the witness)")
    witness.add_argument("--checkpoint", type=Path,
                         help="a checkpoint note to cosign (default: the store's newest)")
    witness.add_argument("--out", type=Path, help="write the cosigned checkpoint here")

    replay = sub.add_parser("replay", help="re-derive every alert from the ingress topics")
    replay.add_argument("--agency", action="append", default=[], metavar="ID",
                        help="ingress agency to replay (repeatable; default: every "
                             "ingress.* topic)")
    replay.add_argument("--from-ms", type=int,
                        help="replay only ingress records appended at or after this time "
                             "(ms UTC); alerts raised before it are left out of the comparison")
    replay.add_argument("--rules", type=Path,
                        help="replay with this rules file instead of each alert's version")
    replay.add_argument("--inbox-db", action="append", default=[], metavar="URL",
                        help="also compare with the alerts stored in this inbox database")
    replay.add_argument("--report", type=Path, default=Path("replay-report.json"))
    replay.add_argument("--no-progress", action="store_true")
    replay.add_argument("--workers", type=int, default=0, metavar="N",
                        help="processes replaying linkage blocks in parallel (default: one per "
                             "core; 1 replays in this process)")


def run(args: argparse.Namespace) -> int:
    sink = args.audit_command == "sink"
    settings = settings_from_env(Service.AUDIT_SINK if sink else AUDITOR)
    if getattr(args, "db", None):
        settings = replace(settings, database_url=args.db)
    if args.audit_command == "sink":
        return _run_sink(args, settings)
    if args.audit_command == "verify":
        return _run_verify(args, settings)
    if args.audit_command == "witness":
        from safehub.services.audit.verifier import run_witness

        return run_witness(args, settings)
    from safehub.services.audit.auditor import run_replay

    return run_replay(args, settings)


def _run_sink(args: argparse.Namespace, settings: AuditSettings) -> int:
    from safehub.services.audit.sink import (
        SERVICE,
        SinkSettings,
        open_sink,
        run_until_stopped,
    )

    # Flags over variables; read when the sink runs, not when the parser is built (a bad
    # variable must not break `safehub --help`).
    env = load(AuditEnv)
    every = env.checkpoint_every if args.checkpoint_every is None else args.checkpoint_every
    seconds = (env.checkpoint_seconds if args.checkpoint_seconds is None
               else args.checkpoint_seconds)
    if every < 1 or seconds <= 0:
        raise ConfigError("checkpoint intervals must be positive")
    sink_settings = SinkSettings(
        kafka=settings.kafka,
        audit_topic=settings.audit_topic,
        deadletter_topic=topics.deadletter(settings.prefix),
        database_url=settings.database_url,
        origin=args.origin or env.origin,
        key_file=args.key_file,
        checkpoint_every=every,
        checkpoint_interval_ms=int(seconds * 1000),
    )
    key = load_signing_key(args.key_file)
    from safehub.consuming import run_service
    from safehub.observability.watch import ServiceWatch
    from safehub.shutdown import stop_on_signals

    watch = ServiceWatch(SERVICE)
    sink = open_sink(sink_settings, key, watch)
    stop = stop_on_signals()
    try:
        # Exit 75 on a broker or database failure, 70 on a bug (sink.POLICY): restarted, the
        # sink resumes after the last leaf in its ledger.
        return run_service(lambda: run_until_stopped(sink, stop), logging.getLogger(
            "safehub.services.audit.sink"), SERVICE)
    finally:
        watch.close()
        sink.close()


def _run_verify(args: argparse.Namespace, settings: AuditSettings) -> int:
    from safehub.services.audit.verifier import run_verify

    return run_verify(args, settings)
