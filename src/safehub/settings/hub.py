"""Settings of the hub side: router, inbox, hub web page, audit sink and auditors' tools,
dead-letter tooling. Each class holds one service's own variables; the shared ones (Kafka,
topic prefix, health, logs) are in safehub.settings.common."""

# setting() returns a dataclasses.field, which is what RUF009 cannot see.
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safehub.deploy.registry import REGISTRY_FILE
from safehub.services.router.table import DEFAULT_ROUTING_PATH
from safehub.settings.common import tls_cert_setting, tls_dir_setting, tls_key_setting
from safehub.settings.loader import (
    FilePath,
    Integer,
    Names,
    Number,
    Secret,
    SecretFile,
    SecretText,
    Text,
    Url,
    setting,
)

DATABASES = ("sqlite", "postgresql")
ROUTER_MAX_OUTAGE_S = 900.0


def _database(name: str, default: str, what: str) -> str:
    return setting(name, Url(DATABASES, drivers=True), default, f"SQLAlchemy URL of {what}")  # type: ignore[no-any-return]


def _inbox_database() -> str:
    return _database("SAFEHUB_INBOX_DATABASE_URL", "sqlite:///safehub-inbox.db",
                     "the hubs' inbox database")


def _reid_keys() -> Path | None:
    return setting("SAFEHUB_REID_KEYS", FilePath(), None,  # type: ignore[no-any-return]
                   "folder of each hub's re-identification private key <hub>.key, 0600 "
                   "(unset: re-identification is off)")


@dataclass(frozen=True, slots=True)
class RegistryEnv:
    registry: Path = setting("SAFEHUB_REGISTRY", FilePath(), REGISTRY_FILE,
                             "the agency registry (--registry)")


@dataclass(frozen=True, slots=True)
class RouterEnv:
    routing_table: Path = setting("SAFEHUB_ROUTING_TABLE", FilePath(), DEFAULT_ROUTING_PATH,
                                  "the routing table")
    database_url: str = _database("SAFEHUB_ROUTER_DATABASE_URL", "sqlite:///safehub-router.db",
                                  "the router's state")
    group: str | None = setting("SAFEHUB_ROUTER_GROUP", Text(), None,
                                "consumer group (default <prefix>router, the one its ACLs "
                                "allow)")
    max_outage_s: float = setting("SAFEHUB_ROUTER_MAX_OUTAGE_S", Number(low=0), ROUTER_MAX_OUTAGE_S,
                                  "exit 75 after a broker or database outage this long "
                                  "(0: wait for ever)")


@dataclass(frozen=True, slots=True)
class InboxEnv:
    agencies: tuple[str, ...] = setting("SAFEHUB_INBOX_AGENCIES", Names(), (),
                                        "the hubs served (or --agency)")
    database_url: str = _inbox_database()
    reid_keys: Path | None = _reid_keys()
    retention_days: float = setting("SAFEHUB_REID_RETENTION_DAYS",
                                    Number("days", above=0, high=3650), 30.0,
                                    "how long an answer's identity is kept")


@dataclass(frozen=True, slots=True)
class WebEnv:
    users: Path | None = setting("SAFEHUB_WEB_USERS", FilePath(), None,
                                 "the hub's users file (required)")
    port: int = setting("SAFEHUB_WEB_PORT", Integer(1, 65535), 8080, "the page's port")
    secret_file: Secret | None = setting(
        "SAFEHUB_WEB_SECRET_FILE", SecretFile(), None,
        "the session signing key's file (else SAFEHUB_WEB_SECRET, else random per start)")
    secret: Secret | None = setting("SAFEHUB_WEB_SECRET", SecretText(), None,
                                    "the session signing key (a file is better)")
    database_url: str = _inbox_database()
    reid_keys: Path | None = _reid_keys()
    tls_cert: Path | None = tls_cert_setting("SAFEHUB_WEB_TLS_CERT")
    tls_key: Path | None = tls_key_setting("SAFEHUB_WEB_TLS_KEY")
    tls_dir: Path = tls_dir_setting("SAFEHUB_WEB_TLS_DIR", "safehub-web-tls")


@dataclass(frozen=True, slots=True)
class AuditEnv:
    database_url: str = _database("SAFEHUB_AUDIT_DB_URL", "sqlite:///safehub-audit.db",
                                  "the audit ledger (--db)")
    origin: str = setting("SAFEHUB_AUDIT_ORIGIN", Text(), "safehub.local/audit",
                          "the log's name in its checkpoints (--origin)")
    checkpoint_every: int = setting("SAFEHUB_AUDIT_CHECKPOINT_EVERY", Integer(1), 1000,
                                    "sign a checkpoint after this many entries")
    checkpoint_seconds: float = setting("SAFEHUB_AUDIT_CHECKPOINT_SECONDS", Number(above=0),
                                        10.0, "... or after this long")
    signing_key: Secret | None = setting("SAFEHUB_AUDIT_SIGNING_KEY", SecretText(), None,
                                         "the sink's Ed25519 seed, hex (or --key-file)")
    public_key: str | None = setting("SAFEHUB_AUDIT_PUBLIC_KEY", Text(), None,
                                     "the auditors' key: hex, or a file holding it "
                                     "(or --public-key)")
