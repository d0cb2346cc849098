"""`safehub deadletter list|show|replay`: the on-call operator's view of `deadletter`.

Runs as the `deadletter-operator` principal (SAFEHUB_KAFKA_PRINCIPAL to override; the other
SAFEHUB_KAFKA_* settings as every service, SAFEHUB_TOPIC_PREFIX), which may read `deadletter`,
write `audit` and replay markers, and write only the topics a dead letter may go back to
(deploy/acl.py). Every command reads the topic from the beginning to its end offsets at start,
and stops.

A dead letter's value is an agency's record (pseudonymised, but theirs): nothing prints it
unless asked with `show --raw` (hex), or `show --out FILE` (the bytes, in a new 0600 file).
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from safehub import topics
from safehub.bus import make_producer
from safehub.connection import KafkaConnection
from safehub.deploy.acl import replay_targets
from safehub.deploy.registry import Registry, Service, load_registry
from safehub.errors import BrokerError, ConfigError, SafehubError
from safehub.services.audit.journal import AuditJournal
from safehub.services.deadletters import letters as dl
from safehub.services.deadletters.replay import Replayer, plan
from safehub.services.deadletters.topic import read_all
from safehub.settings import RegistryEnv, TopicsEnv, load

EXIT_CODES = """exit codes:
  0  done (replay: every chosen dead letter sent, or --dry-run)
  1  refused or failed: an unknown offset, a record without a dead letter's source headers, a
     source topic the principal may not write, a letter already replayed (without --again),
     nothing matching a replay's filter, a broker or setting error
  2  usage error (arguments)
"""
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class DeadletterSettings:
    kafka: KafkaConnection
    prefix: str
    registry: Registry

    @property
    def topic(self) -> str:
        return topics.deadletter(self.prefix)


def settings_from_env(registry_file: str | None,
                      env: dict[str, str] | None = None) -> DeadletterSettings:
    path = Path(registry_file) if registry_file else load(RegistryEnv, env).registry
    return DeadletterSettings(KafkaConnection.from_env(Service.DEADLETTER_OPERATOR, env),
                              load(TopicsEnv, env).prefix, load_registry(path))


def operator_name(given: str | None, principal: str) -> str:
    """Who replays, for the audit log: --by, else the login name, as a slug."""
    raw = given if given is not None else _login()
    slug = _SLUG.sub("-", raw.lower()).strip("-")[:64].strip("-")
    if not slug:
        if given is not None:
            raise ConfigError(f"--by {given!r}: needs letters or digits")
        return principal
    return slug


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXIT_CODES
    parser.add_argument("--registry", help="agency registry (SAFEHUB_REGISTRY; default "
                                           "deploy/agencies.toml): which topics replay may write")
    sub = parser.add_subparsers(dest="deadletter_command", metavar="ACTION", required=True)

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--source", metavar="TOPIC", help="only letters from this source topic")
        p.add_argument("--reason", metavar="TEXT",
                       help="only letters whose error message contains TEXT (any case)")
        p.add_argument("--since", metavar="WHEN",
                       help="only letters dead-lettered since WHEN: an ISO date or date-time "
                            "(UTC by default) or a duration back from now (90m, 6h, 7d)")
        p.add_argument("--limit", type=int, metavar="N",
                       help="at most N refused records (a record dead-lettered more than once "
                            "counts once), oldest first")

    listing = sub.add_parser("list", help="one line per dead letter, oldest first",
                             epilog=EXIT_CODES,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    filters(listing)
    listing.add_argument("--summary", action="store_true",
                         help="then the count of the listed letters by source and reason")

    show = sub.add_parser("show", help="one dead letter's metadata (never its bytes unless "
                                       "--raw or --out)", epilog=EXIT_CODES,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("offset", metavar="OFFSET", help="OFFSET or PARTITION:OFFSET on deadletter")
    show.add_argument("--raw", action="store_true", help="also print the value in hex")
    show.add_argument("--out", type=Path, metavar="FILE",
                      help="write the value's bytes to FILE (new, mode 0600); nothing on screen")

    replay = sub.add_parser(
        "replay", help="send dead letters back to their source topic, audited",
        description="Send the chosen dead letters' original key and value back to their "
                    "source topic, once the cause is fixed. Each replay is audited "
                    "(DEADLETTER_REPLAYED) and marked on deadletter; a letter already "
                    "replayed is refused unless --again. By filter, letters already replayed "
                    "are left out unless --again.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    replay.add_argument("offsets", nargs="*", metavar="OFFSET",
                        help="OFFSET or PARTITION:OFFSET on deadletter (or choose by filter)")
    filters(replay)
    replay.add_argument("--dry-run", action="store_true", help="say what would be sent; send "
                                                                "nothing")
    replay.add_argument("--again", action="store_true", help="replay letters replayed before")
    replay.add_argument("--by", metavar="NAME", help="who replays, for the audit log "
                                                     "(default: the login name)")
    replay.set_defaults(_replay_parser=replay)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_env(args.registry)
    if args.deadletter_command == "replay" and args.offsets and (
            args.source or args.reason or args.since or args.limit is not None):
        args._replay_parser.error("give OFFSETs or filters (--source, --reason, --since), "
                                  "not both")
    if args.deadletter_command == "replay" and not args.offsets and not (
            args.source or args.reason):
        args._replay_parser.error("choose letters: OFFSET..., or --source and/or --reason")
    now = int(time.time() * 1000)
    since = dl.parse_since(args.since, now) if getattr(args, "since", None) else None
    values = args.deadletter_command != "list"
    contents = dl.classify(read_all(settings.kafka, settings.topic, values), settings.topic)
    if args.deadletter_command == "list":
        return _list(args, contents, since)
    if args.deadletter_command == "show":
        return _show(args, contents)
    return _replay(args, settings, contents, since, now)


def _list(args: argparse.Namespace, contents: dl.Contents, since: int | None) -> int:
    chosen = dl.select(contents.letters, args.source, args.reason, since)
    records = dl.distinct(chosen)
    shown = records if args.limit is None else records[:args.limit]
    for letter, copies in shown:
        print(dl.line(letter, len(contents.record_replays(letter)), copies))
    repeats = len(chosen) - len(records)
    print(f"{len(shown)} of {len(dl.distinct(contents.letters))} refused record(s) in "
          f"{len(contents.letters)} dead letter(s)"
          + (f" ({repeats} of those listed repeat a record already dead-lettered: its "
             "consumer stopped before committing and refused it again)" if repeats else "")
          + f"; {len(contents.markers)} replay marker(s); {len(contents.foreign)} other "
            "record(s)")
    if args.summary:
        print("\ncount  source  reason")
        for source, reason, n in dl.summary(chosen):
            print(f"{n:>5}  {source}  {reason}")
    return 0


def _show(args: argparse.Namespace, contents: dl.Contents) -> int:
    letter = contents.find(dl.Position.parse(args.offset))
    for name, value in dl.metadata(letter, contents.record_replays(letter),
                                   contents.copies_of(letter)):
        print(f"{name + ':':<20} {value}")
    if args.out is not None:
        _write_private(args.out, letter.value or b"")
        print(f"value written to {args.out} (0600)")
    elif args.raw:
        print("value (hex):" if letter.value is not None else "value: null")
        data = letter.value or b""
        for i in range(0, len(data), 32):
            print(f"  {data[i:i + 32].hex()}")
    return 0


def _write_private(path: Path, data: bytes) -> None:
    try:
        # O_EXCL: never overwrite (or follow a link to) an existing file with an agency's record.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(f"--out {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _replay(args: argparse.Namespace, settings: DeadletterSettings, contents: dl.Contents,
            since: int | None, now: int) -> int:
    if args.offsets:
        chosen = [contents.find(dl.Position.parse(o)) for o in args.offsets]
    else:
        matching = dl.select(contents.letters, args.source, args.reason, since)
        if not args.again:
            matching = [x for x in matching if not contents.record_replays(x)]
        matching = [x for x, _ in dl.distinct(matching)]  # copies of one record go once
        chosen = matching if args.limit is None else matching[:args.limit]
        if not chosen:
            print("no dead letter matches (letters replayed before need --again)",
                  file=sys.stderr)
            return 1
    decided = plan(contents, chosen, replay_targets(settings.registry, settings.prefix),
                   args.again)
    for refusal in decided.refused:
        print(f"refused {refusal.position}: {refusal.why}", file=sys.stderr)
    if decided.refused:
        print("nothing replayed", file=sys.stderr)
        return 1
    if args.dry_run:
        for letter in decided.send:
            print(f"would replay {dl.line(letter)}")
        print(f"{len(decided.send)} dead letter(s) would be replayed (dry run)")
        return 0
    principal = settings.kafka.principal
    actor = operator_name(args.by, principal)
    producer = make_producer(settings.kafka, "safehub-deadletter-replay")
    replayer = Replayer(producer, AuditJournal(producer, topics.audit(settings.prefix), principal),
                        settings.topic, actor)
    done = 0
    try:
        for letter in decided.send:
            r = replayer.replay(letter, contents, now)
            done += 1
            print(f"replayed {letter.position} to {r.topic}[{r.partition}]@{r.offset} "
                  f"(marker {r.marker})")
    except SafehubError as exc:
        raise BrokerError(f"{exc}; {done} of {len(decided.send)} replayed before the failure "
                          "(see `safehub deadletter list`)") from exc
    finally:
        producer.close(timeout=10)
    print(f"{done} dead letter(s) replayed by {actor} as {principal}")
    return 0
