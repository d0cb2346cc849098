"""`safehub web`: the hub's web page and HTTP API, on 127.0.0.1 only.

Settings (environment): the Kafka connection (SAFEHUB_KAFKA_BOOTSTRAP, SAFEHUB_KAFKA_SECRETS, a
folder holding each served hub's `<hub>.password`, SAFEHUB_KAFKA_CA_FILE; see safehub.connection),
SAFEHUB_TOPIC_PREFIX, SAFEHUB_WEB_USERS (users file, required), SAFEHUB_WEB_PORT (default 8080),
SAFEHUB_WEB_SECRET_FILE (the session signing key, a 0600 file; SAFEHUB_WEB_SECRET, its value,
is still read when no file is named; random per start if neither, which signs everyone out on
restart), SAFEHUB_INBOX_DATABASE_URL, SAFEHUB_REID_KEYS (folder of each hub's
re-identification private key `<hub>.key`, 0600: with it the alert page can ask the
contributing agencies who the child is and open their sealed answers; without it, it cannot).
`safehub web --hash-password` reads a password on stdin and prints the hash for the users file.
HTTPS by default, the session cookie marked Secure: --tls-cert FILE and --tls-key FILE (or
SAFEHUB_WEB_TLS_CERT and SAFEHUB_WEB_TLS_KEY), else a local certificate for 127.0.0.1 and
localhost from the project's local CA, kept in SAFEHUB_WEB_TLS_DIR (default ./safehub-web-tls;
its `ca.pem` is the file to trust, and the log names it). --plain-http-behind-proxy serves plain
HTTP instead, only for a TLS proxy in front on the same host or pod (as deploy/render's web
pod has).

The hubs served are the agencies of the users in the users file. Each has its own producer,
authenticated as that hub, which writes that hub's acks (to `alert-acks.<hub>`) and its users'
audit entries; SAFEHUB_KAFKA_PRINCIPAL may be left unset (if set, it must be one of those hubs).

Health, metrics and JSON logs: as every service (SAFEHUB_HEALTH_PORT, SAFEHUB_LOG_FORMAT; see
safehub.observability).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import secrets
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaProducer

from safehub import topics
from safehub.bus import make_producer
from safehub.clock import wall_clock_ms
from safehub.connection import KafkaConnection, connections_from_env
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.requests import ReidRequests
from safehub.consumers.inbox.store import InboxStore
from safehub.errors import ConfigError
from safehub.observability.watch import ServiceWatch, beating_server
from safehub.services.audit.journal import AuditJournal
from safehub.services.reid.sealing import load_private_key
from safehub.services.web.acks import KafkaAckPublisher, publish_pending, republish
from safehub.services.web.app import create_app
from safehub.services.web.hub import Hub, Outlet
from safehub.services.web.pages import PLAIN_HTTP_FLAG, server_config, serving_tls
from safehub.services.web.reidentification import (
    HubKeys,
    HubReidentification,
    KafkaRequestPublisher,
)
from safehub.services.web.users import Directory, User, hash_password, load_users
from safehub.settings import TopicsEnv, WebEnv, load
from safehub.shutdown import stop_on_signals

log = logging.getLogger(__name__)
SERVICE = "web"
HOST = "127.0.0.1"  # never exposed beyond loopback; a reverse proxy fronts it in deployment


@dataclass(frozen=True, slots=True)
class WebSettings:
    kafka: Mapping[str, KafkaConnection]  # hub -> its own principal's connection
    prefix: str
    users_file: Path
    users: Mapping[str, User]
    port: int
    secret: str
    database_url: str
    reid_keys: Path | None = None

    @classmethod
    def from_env(cls, loaded: WebEnv | None = None) -> WebSettings:
        env = loaded or load(WebEnv)
        if env.users is None:
            raise ConfigError("SAFEHUB_WEB_USERS must name the hub's users file")
        users = load_users(env.users)
        hubs = tuple(sorted({u.agency for u in users.values()}))
        if not hubs:
            raise ConfigError(f"{env.users}: no [[user]]: the web service would serve no hub")
        return cls(
            kafka=connections_from_env(hubs),
            prefix=load(TopicsEnv).prefix,
            users_file=env.users, users=users, port=env.port,
            secret=_session_secret(env),
            database_url=env.database_url,
            reid_keys=env.reid_keys,
        )


def outlets(kafka: Mapping[str, KafkaConnection], prefix: str
            ) -> tuple[dict[str, Outlet], dict[str, KafkaProducer]]:
    """One producer per hub, as that hub: its acks to its own ack topic, its users' audit."""
    out: dict[str, Outlet] = {}
    producers: dict[str, KafkaProducer] = {}
    try:
        for hub, connection in kafka.items():
            producer = make_producer(connection, f"safehub-web-{hub}")
            producers[hub] = producer
            out[hub] = Outlet(AuditJournal(producer, topics.audit(prefix), "web"),
                              KafkaAckPublisher(producer, topics.acks(prefix, hub)))
    except BaseException:
        for p in producers.values():
            p.close()
        raise
    return out, producers


def reidentification(hub: Hub, settings: WebSettings, producers: Mapping[str, KafkaProducer]
                     ) -> HubReidentification | None:
    """Each hub's key pair and request publisher (as that hub), if keys are configured."""
    if settings.reid_keys is None:
        log.warning("SAFEHUB_REID_KEYS is not set: re-identification requests are off")
        return None
    keys = {h: HubKeys(load_private_key(settings.reid_keys, h),
                       KafkaRequestPublisher(producers[h], settings.prefix))
            for h in producers}
    return HubReidentification(hub, ReidRequests(hub.store.engine), keys)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hash-password", action="store_true",
                        help="read a password from stdin, print its hash for the users file")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="serve over HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    parser.add_argument(PLAIN_HTTP_FLAG, dest="plain_http", action="store_true",
                        help="serve plain HTTP, for a TLS proxy in front (default: HTTPS, "
                             "with a local certificate if none is given)")


def run(args: argparse.Namespace) -> int:
    if args.hash_password:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
        print(hash_password(password.rstrip("\n")))
        return 0
    env = load(WebEnv)
    tls = serving_tls(args.tls_cert or _text(env.tls_cert), args.tls_key or _text(env.tls_key),
                      getattr(args, "plain_http", False), env.tls_dir)
    settings = WebSettings.from_env(env)
    directory = Directory(settings.users)
    store = InboxStore(make_engine(settings.database_url))
    migrate(store.engine)
    hub_outlets, producers = outlets(settings.kafka, settings.prefix)
    hub = Hub(store, hub_outlets, wall_clock_ms)
    reid = reidentification(hub, settings, producers)
    # uvicorn stops on the signal first; see safehub.shutdown.
    stop = stop_on_signals()

    # Acks (and re-identification requests) stored while the broker or the database was away
    # go out as soon as both are back; the thread outlives any error of a round.
    rounds: list[Callable[[], object]] = [
        lambda: publish_pending(store, hub.publishers, wall_clock_ms)]
    if reid is not None:
        rounds.append(reid.send_pending)
    watch = ServiceWatch(SERVICE)
    rounds.append(lambda: count_pending_requests(store, sorted(settings.kafka), watch))
    # The broker as the first hub served: every hub's principal reaches the same brokers.
    watch.serve(next(iter(settings.kafka.values())), store.engine)
    threading.Thread(target=republish, args=(stop, rounds), name="ack-outbox",
                     daemon=True).start()
    app = create_app(hub, directory, settings.secret, reid, secure_cookies=tls is not None)
    # Live while uvicorn's loop turns (it beats the heartbeat on each tick).
    server = beating_server(server_config(app, HOST, settings.port, tls), watch)
    log.info("hub web on %s://%s:%d", "https" if tls else "http", HOST, settings.port)
    try:
        server.run()  # uvicorn handles SIGINT/SIGTERM and returns
    finally:
        stop.set()
        watch.close()
        for producer in producers.values():
            producer.close()
    return 0


def count_pending_requests(store: InboxStore, hubs: Sequence[str], watch: ServiceWatch) -> None:
    """Re-identification requests each hub has sent and no agency has answered yet."""
    import sqlalchemy as sa

    from safehub.consumers.inbox.models import InboxReidRequest
    from safehub.consumers.inbox.requests import OPEN

    with store.engine.connect() as conn:
        counts = dict(conn.execute(
            sa.select(InboxReidRequest.hub_id, sa.func.count())
            .where(InboxReidRequest.status == OPEN).group_by(InboxReidRequest.hub_id)).all())
    for hub in hubs:
        watch.metrics.reid_pending(hub, int(counts.get(hub, 0)))


def _session_secret(env: WebEnv) -> str:
    """SAFEHUB_WEB_SECRET_FILE (0600, like every secret here), else SAFEHUB_WEB_SECRET, else
    a random one per start (which signs everyone out on a restart)."""
    chosen = env.secret_file or env.secret
    return chosen.reveal() if chosen else secrets.token_urlsafe(32)


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)
