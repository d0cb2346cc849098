"""`safehub web`: the hub's web page and HTTP API, on 127.0.0.1 only.

Settings (environment): SAFEHUB_KAFKA_BOOTSTRAP, SAFEHUB_TOPIC_PREFIX, SAFEHUB_WEB_USERS (users
file, required), SAFEHUB_WEB_PORT (default 8080), SAFEHUB_WEB_SECRET (session signing key;
random per start if unset, which signs everyone out on restart), SAFEHUB_INBOX_DATABASE_URL.
`safehub web --hash-password` reads a password on stdin and prints the hash for the users file.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from safehub.bus import make_producer
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.store import InboxStore
from safehub.errors import ConfigError
from safehub.services.audit.journal import AuditJournal
from safehub.services.web.acks import KafkaAckPublisher, publish_pending
from safehub.services.web.app import create_app
from safehub.services.web.hub import Hub
from safehub.services.web.users import Directory, hash_password, load_users

log = logging.getLogger(__name__)
HOST = "127.0.0.1"  # never exposed beyond loopback; a reverse proxy with TLS fronts it


@dataclass(frozen=True, slots=True)
class WebSettings:
    bootstrap: str
    prefix: str
    users_file: Path
    port: int
    secret: str
    database_url: str

    @classmethod
    def from_env(cls) -> WebSettings:
        users = os.environ.get("SAFEHUB_WEB_USERS")
        if not users:
            raise ConfigError("SAFEHUB_WEB_USERS must name the hub's users file")
        try:
            port = int(os.environ.get("SAFEHUB_WEB_PORT", "8080"))
        except ValueError as exc:
            raise ConfigError("SAFEHUB_WEB_PORT must be a number") from exc
        return cls(
            bootstrap=os.environ.get("SAFEHUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
            prefix=os.environ.get("SAFEHUB_TOPIC_PREFIX", ""),
            users_file=Path(users), port=port,
            secret=os.environ.get("SAFEHUB_WEB_SECRET") or secrets.token_urlsafe(32),
            database_url=os.environ.get("SAFEHUB_INBOX_DATABASE_URL",
                                        "sqlite:///safehub-inbox.db"),
        )


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hash-password", action="store_true",
                        help="read a password from stdin, print its hash for the users file")


def run(args: argparse.Namespace) -> int:
    if args.hash_password:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
        print(hash_password(password.rstrip("\n")))
        return 0
    import uvicorn

    settings = WebSettings.from_env()
    directory = Directory(load_users(settings.users_file))
    store = InboxStore(make_engine(settings.database_url))
    migrate(store.engine)
    producer = make_producer(settings.bootstrap, "safehub-web")
    publisher = KafkaAckPublisher(producer, f"{settings.prefix}alert-acks")
    journal = AuditJournal(producer, f"{settings.prefix}audit", "web")
    hub = Hub(store, journal, publisher, wall_clock_ms)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    # uvicorn handles the signal itself (graceful shutdown), then restores these handlers and
    # raises the signal again; ours turn that into a clean exit 0 instead of death by SIGTERM.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def republish() -> None:
        # Acks stored while the broker was away go out as soon as it is back.
        while not stop.wait(5.0):
            publish_pending(store, publisher, wall_clock_ms)

    threading.Thread(target=republish, name="ack-outbox", daemon=True).start()
    server = uvicorn.Server(uvicorn.Config(create_app(hub, directory, settings.secret), host=HOST,
                                           port=settings.port, log_level="warning"))
    log.info("hub web on http://%s:%d", HOST, settings.port)
    try:
        server.run()  # uvicorn handles SIGINT/SIGTERM and returns
    finally:
        stop.set()
        producer.close()
    return 0
