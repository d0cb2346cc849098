"""`safehub reid serve`: the agencies' re-identification service and their officers' page.

One process may serve several agencies (the demo runs one for all of them); each has its own
principal (its own consumer of `reid-requests.<agency>` in its own group, its own producer for
responses and audit), its own vault and case file; they share one request database (with an
agency column) and one web page, where each officer sees only their own agency's requests.

Settings (flags, else environment):
- --agency ID (repeatable) or SAFEHUB_REID_AGENCIES (comma-separated): the agencies served;
- --users FILE or SAFEHUB_REID_USERS: the officers (the hub's users-file format; `agency` is the
  agency id; hash passwords with `safehub web --hash-password`);
- --hub-keys DIR or SAFEHUB_REID_HUB_KEYS: the hubs' registered public keys, `<hub>.pub`;
- --listen HOST:PORT or SAFEHUB_REID_LISTEN (default 127.0.0.1:8090);
- --database URL or SAFEHUB_REID_DATABASE_URL (default sqlite:///safehub-reid.db);
- --vault AGENCY=URL (repeatable), else --vault-dir DIR or SAFEHUB_REID_VAULT_DIR
  (`<dir>/<agency>.sqlite`), else the publisher's default vault of the agency;
- --export AGENCY=PATH (repeatable) and --mapping AGENCY=PATH (default: the example mapping of
  the agency's sector): the agency's own records, where identities come from;
- --registry FILE or SAFEHUB_REGISTRY (default deploy/agencies.toml);
- the officers' page is HTTPS, its session cookie Secure: --tls-cert FILE and --tls-key FILE,
  or SAFEHUB_REID_TLS_CERT and SAFEHUB_REID_TLS_KEY, else a local certificate for 127.0.0.1
  from the project's local CA in SAFEHUB_REID_TLS_DIR (default ./safehub-reid-tls; trust its
  `ca.pem`); --plain-http-behind-proxy only for a TLS proxy in front;
- SAFEHUB_REID_SECRET (session signing key; random per start if unset), SAFEHUB_TOPIC_PREFIX,
  and the Kafka connection (SAFEHUB_KAFKA_BOOTSTRAP, SAFEHUB_KAFKA_SECRETS holding each served
  agency's `<agency>.password`, SAFEHUB_KAFKA_CA_FILE; see safehub.connection).

From Python: `serve(ReidSettings(...))`, with case files built in memory if need be.

Health, metrics and JSON logs: as every service (SAFEHUB_HEALTH_PORT, SAFEHUB_LOG_FORMAT; see
safehub.observability).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaProducer

from safehub import topics
from safehub.bus import make_consumer, make_producer
from safehub.clock import wall_clock_ms
from safehub.connection import KafkaConnection, connections_from_env
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.consumer import RetryPolicy
from safehub.deploy.registry import Kind, Registry, load_registry
from safehub.errors import ConfigError
from safehub.observability.watch import ServiceWatch, beating_server
from safehub.producers.command import default_vault_url
from safehub.producers.exports import example_mapping, load_mapping
from safehub.producers.vault import Vault
from safehub.services.reid.casefile import CaseFile
from safehub.services.reid.listener import RequestListener
from safehub.services.reid.office import Office
from safehub.services.reid.store import RequestStore
from safehub.services.web.pages import PLAIN_HTTP_FLAG, Tls, server_config, serving_tls
from safehub.services.web.users import Directory, User, load_users
from safehub.settings import RegistryEnv, ReidEnv, TopicsEnv, load
from safehub.settings.agency import REID_LISTEN
from safehub.shutdown import stop_on_signals
from safehub.topics import reid_requests, service_group

log = logging.getLogger(__name__)
SERVICE = "reid"
DEFAULT_LISTEN = REID_LISTEN


@dataclass(frozen=True)
class ReidSettings:
    kafka: Mapping[str, KafkaConnection]  # agency -> its own principal's connection
    prefix: str
    registry: Registry
    hub_keys: Path
    vaults: Mapping[str, str]  # agency -> vault URL
    case_files: Mapping[str, CaseFile]
    users: Mapping[str, User]
    database_url: str = "sqlite:///safehub-reid.db"
    host: str = "127.0.0.1"
    port: int = 8090
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    tls: Tls | None = None

    @property
    def agencies(self) -> tuple[str, ...]:
        return tuple(sorted(self.kafka))

    def __repr__(self) -> str:
        return (f"ReidSettings(agencies={self.agencies}, prefix={self.prefix!r}, "
                f"listen={self.host}:{self.port})")


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        agency, sep, value = item.partition("=")
        if not sep or not agency or not value:
            raise ConfigError(f"{flag} takes AGENCY=VALUE")
        out[agency] = value
    return out


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        if not sep or not host:
            raise ValueError
        return host, int(port)
    except ValueError:
        raise ConfigError(f"--listen must be HOST:PORT, got {text!r}") from None


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> ReidSettings:
    v = load(ReidEnv, env)
    named = list(args.agency) or list(v.agencies)
    if not named:
        raise ConfigError("no agency: pass --agency or set SAFEHUB_REID_AGENCIES")
    agencies = tuple(sorted(set(named)))
    registry = load_registry(Path(args.registry) if args.registry
                             else load(RegistryEnv, env).registry)
    for agency in agencies:
        if registry.get(agency).kind is not Kind.AGENCY:
            raise ConfigError(f"{agency} is not an agency in the registry")
    users_file = args.users or v.users
    if not users_file:
        raise ConfigError("name the officers' users file: --users or SAFEHUB_REID_USERS")
    hub_keys = args.hub_keys or v.hub_keys
    if not hub_keys:
        raise ConfigError("name the hubs' public keys folder: --hub-keys or "
                          "SAFEHUB_REID_HUB_KEYS")
    vaults = _pairs(args.vault, "--vault")
    vault_dir = args.vault_dir or v.vault_dir
    for agency in agencies:
        if agency not in vaults:
            vaults[agency] = (f"sqlite:///{Path(vault_dir) / (agency + '.sqlite')}" if vault_dir
                              else default_vault_url(agency, env))
    exports: dict[str, list[Path]] = {}
    for item in args.export:
        agency, where = next(iter(_pairs([item], "--export").items()))
        exports.setdefault(agency, []).append(Path(where))
    mappings = _pairs(args.mapping, "--mapping")
    unknown = (set(exports) | set(mappings) | set(vaults)) - set(agencies)
    if unknown:
        raise ConfigError(f"--export, --mapping or --vault name agencies not served: "
                          f"{sorted(unknown)}")
    case_files: dict[str, CaseFile] = {}
    for agency in agencies:
        case = CaseFile()
        if agency in exports:
            sector = registry.get(agency).sector
            assert sector is not None  # the registry gives every agency a sector
            mapping_path = Path(mappings[agency]) if agency in mappings else example_mapping(
                sector)
            mapping = load_mapping(mapping_path)
            for export in exports[agency]:
                case.add_export(export, mapping)
        case_files[agency] = case
    host, port = parse_listen(args.listen or v.listen)
    return ReidSettings(
        kafka=connections_from_env(agencies, env), prefix=load(TopicsEnv, env).prefix,
        registry=registry, hub_keys=Path(hub_keys), vaults=vaults, case_files=case_files,
        users=load_users(Path(users_file)),
        database_url=args.database or v.database_url,
        host=host, port=port, secret=v.secret.reveal() if v.secret else secrets.token_urlsafe(32),
        tls=serving_tls(getattr(args, "tls_cert", None) or _text(v.tls_cert),
                        getattr(args, "tls_key", None) or _text(v.tls_key),
                        getattr(args, "plain_http", False), v.tls_dir))


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


@dataclass
class Desks:
    """Everything `serve` runs, built and connected; `close` releases it all."""

    store: RequestStore
    offices: dict[str, Office] = field(default_factory=dict)
    listeners: dict[str, RequestListener] = field(default_factory=dict)
    producers: list[KafkaProducer] = field(default_factory=list)
    vaults: list[Vault] = field(default_factory=list)

    def close(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        for producer in self.producers:
            producer.close()
        for vault in self.vaults:
            vault.close()
        self.store.close()


def build(settings: ReidSettings, clock: Callable[[], int] = wall_clock_ms,
          retry: RetryPolicy | None = None, watch: ServiceWatch | None = None) -> Desks:
    desks = Desks(RequestStore.open(settings.database_url))
    try:
        for agency in settings.agencies:
            kafka = settings.kafka[agency]
            vault = Vault.open(settings.vaults[agency])
            desks.vaults.append(vault)
            producer = make_producer(kafka, f"safehub-reid-{agency}")
            desks.producers.append(producer)
            office = Office(agency, settings.prefix, desks.store, vault.resolve,
                            settings.case_files.get(agency, CaseFile()), settings.hub_keys,
                            producer, clock)
            consumer = make_consumer(kafka, service_group(settings.prefix, agency),
                                     [reid_requests(settings.prefix, agency)],
                                     client_id=f"safehub-reid-{agency}")
            desks.offices[agency] = office
            desks.listeners[agency] = RequestListener(
                consumer, office, DeadLetterSink(producer, topics.deadletter(settings.prefix)),
                settings.registry.hubs, retry or RetryPolicy(), watch)
    except BaseException:
        desks.close()
        raise
    return desks


def serve(settings: ReidSettings, stop: threading.Event | None = None) -> int:
    """Run the listeners and the officers' page until `stop` is set (or SIGINT/SIGTERM when
    called on the main thread); an unexpected error on any listener stops everything."""
    from safehub.services.reid.officer_web import create_app

    stop = stop or threading.Event()
    failures: list[BaseException] = []
    health = ServiceWatch(SERVICE)
    desks = build(settings, watch=health)
    # Live while the page's loop turns and each listener polls; ready when the broker and
    # the store answer and each agency's listener holds its requests topic.
    server = beating_server(server_config(
        create_app(desks.offices, Directory(settings.users), settings.secret,
                   secure_cookies=settings.tls is not None),
        settings.host, settings.port, settings.tls), health)
    health.serve(settings.kafka[settings.agencies[0]], desks.store.engine,
                 consumers=list(settings.agencies))

    def listen(listener: RequestListener) -> None:
        try:
            listener.run(stop)
        except BaseException as exc:
            failures.append(exc)
            stop.set()
            raise

    def watch() -> None:
        stop.wait()
        server.should_exit = True

    threads = [threading.Thread(target=listen, args=(listener,), daemon=True,
                                name=f"reid-{agency}")
               for agency, listener in desks.listeners.items()]
    threads.append(threading.Thread(target=watch, daemon=True, name="reid-stop"))
    for t in threads:
        t.start()
    log.info("re-identification desk for %s on %s://%s:%d", ", ".join(settings.agencies),
             "https" if settings.tls else "http", settings.host, settings.port)
    try:
        server.run()  # on the main thread uvicorn handles SIGINT/SIGTERM and returns
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        health.close()
        desks.close()
    if failures:
        raise failures[0]
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("serve", help="serve agencies' re-identification requests and officers")
    p.add_argument("--agency", action="append", default=[], metavar="ID",
                   help="an agency to serve (repeatable)")
    p.add_argument("--users", metavar="FILE", help="the officers' users file (TOML)")
    p.add_argument("--hub-keys", metavar="DIR", help="folder of the hubs' <hub>.pub keys")
    p.add_argument("--listen", metavar="HOST:PORT", help=f"default {DEFAULT_LISTEN}")
    p.add_argument("--database", metavar="URL", help="SQLAlchemy URL of the request store")
    p.add_argument("--vault", action="append", default=[], metavar="AGENCY=URL",
                   help="an agency's vault (repeatable)")
    p.add_argument("--vault-dir", metavar="DIR", help="vaults as <dir>/<agency>.sqlite")
    p.add_argument("--export", action="append", default=[], metavar="AGENCY=PATH",
                   help="an agency's export file: its own records (repeatable)")
    p.add_argument("--mapping", action="append", default=[], metavar="AGENCY=PATH",
                   help="the column mapping of an agency's export")
    p.add_argument("--registry", metavar="FILE", help="the agency registry")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="serve the officers' page over HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument(PLAIN_HTTP_FLAG, dest="plain_http", action="store_true",
                   help="serve the page over plain HTTP, for a TLS proxy in front")


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, os.environ)
    # uvicorn stops on the signal first; see safehub.shutdown.
    stop = stop_on_signals()
    return serve(settings, stop)
