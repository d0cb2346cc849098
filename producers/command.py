"""`safehub publish --agency ID --from FILE`: pseudonymise an agency export and publish it.

Settings come from SAFEHUB_* variables (SAFEHUB_TOPIC_PREFIX, SAFEHUB_VAULT_URL, the keys'
SAFEHUB_KEYSERVICE_URL / _SECRET_FILE / _CA_FILE, SAFEHUB_KEY_EPOCH and
SAFEHUB_KEY_TRANSITION_EPOCH, or version 1's SAFEHUB_LINKAGE_KEY[_FILE] (see keysource.py),
and the Kafka connection's SAFEHUB_KAFKA_*, see safehub.connection), overridden by the flags.
The agency is its own Kafka principal (by default the one named by --agency, with its
password file in SAFEHUB_KAFKA_SECRETS): the broker lets it write its own ingress.<ID> and
nothing else.
Each unusable line is reported as `line N: field: rule`; the exit code is 1 if any line
failed, so a scheduler notices.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from safehub.bus import make_producer
from safehub.connection import KafkaConnection, state_folder
from safehub.errors import ConfigError
from safehub.producers.exports import (
    ColumnMapping,
    LineError,
    count_rows,
    example_mapping,
    load_mapping,
    read_export,
)
from safehub.producers.keysource import KeySource, key_source
from safehub.producers.publisher import (
    DeliveryReport,
    Outcome,
    Publisher,
    Rejected,
    Undelivered,
)
from safehub.producers.records import AgencyRecord
from safehub.producers.vault import Vault
from safehub.schemas.vocabulary import Sector
from safehub.settings import PublishEnv, TopicsEnv, load

log = logging.getLogger(__name__)
PROGRESS_MIN_ROWS = 1000  # a bar for a handful of lines is noise


@dataclass(frozen=True, slots=True)
class PublishSettings:
    agency_id: str
    source: Path
    mapping: ColumnMapping
    kafka: KafkaConnection
    topic_prefix: str
    vault_url: str
    keys: KeySource
    batch_size: int

    def __repr__(self) -> str:
        return (f"PublishSettings(agency_id={self.agency_id!r}, source={str(self.source)!r}, "
                f"kafka={self.kafka!r}, topic_prefix={self.topic_prefix!r})")


def default_vault_url(agency_id: str, env: Mapping[str, str]) -> str:
    folder = state_folder(env) / "vault"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / (agency_id + '.sqlite')}"


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> PublishSettings:
    if args.mapping:
        mapping = load_mapping(Path(args.mapping))
    elif args.sector:
        mapping = load_mapping(example_mapping(Sector(args.sector.upper())))
    else:
        raise ConfigError("say how to read the export: --mapping FILE or --sector NAME")
    kafka = KafkaConnection.from_env(args.agency, {**env, "SAFEHUB_KAFKA_BOOTSTRAP":
                                                   args.bootstrap} if args.bootstrap else env)
    return PublishSettings(
        agency_id=args.agency,
        source=Path(args.source),
        mapping=mapping,
        kafka=kafka,
        topic_prefix=load(TopicsEnv, env).prefix,
        vault_url=args.vault or load(PublishEnv, env).vault_url
        or default_vault_url(args.agency, env),
        keys=key_source(env, epoch=args.key_epoch, transition_epoch=args.transition_epoch,
                        url=args.keyservice, secret_file=args.keyservice_secret,
                        ca_file=args.keyservice_ca, key_file=args.key_file,
                        transition_key_file=args.transition_key_file,
                        hmac_epochs=args.hmac_epochs),
        batch_size=args.batch_size,
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agency", required=True, metavar="ID",
                        help="this agency's id (lower-case slug); events go to ingress.<ID>")
    parser.add_argument("--from", dest="source", required=True, metavar="FILE",
                        help="the export: .csv or .jsonl")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--mapping", metavar="TOML", help="the export's column mapping")
    how.add_argument("--sector", choices=[s.value.lower() for s in Sector],
                     help="use the bundled example mapping of this sector")
    parser.add_argument("--vault", metavar="URL",
                        help="SQLAlchemy URL of the re-identification vault "
                             "(default SAFEHUB_VAULT_URL, else a SQLite file in the state folder)")
    parser.add_argument("--keyservice", metavar="URL",
                        help="the key service (default SAFEHUB_KEYSERVICE_URL); without one, "
                             "version 1's HMAC linkage key")
    parser.add_argument("--keyservice-secret", metavar="FILE",
                        help="this agency's bearer secret for the key service, 0600 "
                             "(default SAFEHUB_KEYSERVICE_SECRET_FILE)")
    parser.add_argument("--keyservice-ca", metavar="FILE",
                        help="CA of the key service's certificate "
                             "(default SAFEHUB_KEYSERVICE_CA_FILE)")
    parser.add_argument("--key-epoch", type=int, default=None,
                        help="the current match-key epoch (default SAFEHUB_KEY_EPOCH, else "
                             "SAFEHUB_LINKAGE_KEY_EPOCH, else 1)")
    parser.add_argument("--transition-epoch", type=int, default=None,
                        help="during a key rotation, the epoch being moved to: events carry "
                             "keys under both (default SAFEHUB_KEY_TRANSITION_EPOCH)")
    parser.add_argument("--key-file", metavar="FILE",
                        help="version 1 HMAC linkage key as hex "
                             "(default SAFEHUB_LINKAGE_KEY[_FILE])")
    parser.add_argument("--transition-key-file", metavar="FILE",
                        help="version 1: the HMAC key of the transition epoch "
                             "(default SAFEHUB_LINKAGE_TRANSITION_KEY_FILE)")
    parser.add_argument("--hmac-epochs", metavar="LIST",
                        help="with a key service, the epochs still derived with the HMAC key "
                             "while migrating, e.g. 0,1 (default SAFEHUB_HMAC_EPOCHS)")
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap servers (default SAFEHUB_KAFKA_BOOTSTRAP)")
    parser.add_argument("--batch-size", type=int, default=2000, help=argparse.SUPPRESS)


def _records(
    rows: Iterator[tuple[int, AgencyRecord | LineError]], lines: list[int],
    errors: list[LineError], bar: tqdm,
) -> Iterator[AgencyRecord]:
    """Pass usable records on, noting each one's line; collect the unusable lines."""
    for line, parsed in rows:
        if isinstance(parsed, LineError):
            errors.append(parsed)
            bar.update(1)
            continue
        lines.append(line)
        yield parsed


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, os.environ)
    if not settings.source.is_file():
        raise ConfigError(f"no such export file: {settings.source}")
    total = count_rows(settings.source)
    keying, close_keys = settings.keys.open()
    vault = Vault.open(settings.vault_url)
    producer = make_producer(settings.kafka, f"safehub-publish-{settings.agency_id}")
    publisher: Publisher | None = None
    errors: list[LineError] = []
    lines: list[int] = []
    delivered = 0
    try:
        publisher = Publisher(producer, vault, keying, settings.agency_id,
                              settings.mapping.sector, settings.topic_prefix,
                              settings.batch_size,
                              renew=lambda: make_producer(
                                  settings.kafka, f"safehub-publish-{settings.agency_id}"))
        with tqdm(total=total, unit="line", file=sys.stderr,
                  disable=True if total < PROGRESS_MIN_ROWS else None) as bar:
            def seen(outcome: Outcome) -> None:
                bar.update(1)
            rows = read_export(settings.source, settings.mapping)
            outcomes = publisher.publish_many(_records(rows, lines, errors, bar), seen)
        for line, outcome in zip(lines, outcomes, strict=True):
            if isinstance(outcome, DeliveryReport):
                delivered += 1
            elif isinstance(outcome, Rejected):
                errors.append(LineError(line, outcome.field, outcome.rule))
            elif isinstance(outcome, Undelivered):
                errors.append(LineError(line, "delivery", f"not acknowledged ({outcome.reason})"))
    finally:
        # The one in use: a producer replaced for not settling records is closed already.
        (producer if publisher is None else publisher.producer).close()
        vault.close()
        close_keys()
    for error in sorted(errors, key=lambda e: e.line):
        print(f"{settings.source.name}: {error}", file=sys.stderr)
    print(f"published {delivered} event(s) to {publisher.topic}; "
          f"{len(errors)} line(s) failed")
    log.info("publish finished: %d delivered, %d failed", delivered, len(errors))
    return 1 if errors else 0
