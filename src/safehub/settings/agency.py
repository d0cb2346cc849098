"""Settings of the agency side: publishing (keys, vault) and the re-identification service;
and of the correlator and the demo, which run between the agencies and the hubs."""

# setting() returns a dataclasses.field, which is what RUF009 cannot see.
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safehub.services.correlation.rules import DEFAULT_RULES_PATH
from safehub.settings.common import tls_cert_setting, tls_dir_setting, tls_key_setting
from safehub.settings.hub import DATABASES
from safehub.settings.loader import (
    FilePath,
    HostPorts,
    Integer,
    Names,
    Number,
    Secret,
    SecretText,
    Text,
    Url,
    setting,
)

EPOCH = Integer(0)
REID_LISTEN = "127.0.0.1:8090"


@dataclass(frozen=True, slots=True)
class PublishEnv:
    """`safehub publish`: its flags override these."""

    vault_url: str | None = setting("SAFEHUB_VAULT_URL", Url(DATABASES, drivers=True), None,
                                    "the agency's vault (default: a SQLite file in the state "
                                    "folder)")
    keyservice_url: str | None = setting("SAFEHUB_KEYSERVICE_URL", Url(("https",)), None,
                                         "the key service (unset: HMAC keys, version 1)")
    keyservice_secret_file: Path | None = setting(
        "SAFEHUB_KEYSERVICE_SECRET_FILE", FilePath(), None,
        "the agency's bearer secret for the key service, 0600")
    keyservice_ca_file: Path | None = setting("SAFEHUB_KEYSERVICE_CA_FILE", FilePath(), None,
                                              "the key service's CA certificate, PEM")
    key_epoch: int | None = setting("SAFEHUB_KEY_EPOCH", EPOCH, None,
                                    "the current match-key epoch (else SAFEHUB_LINKAGE_KEY_"
                                    "EPOCH, else 1)")
    transition_epoch: int | None = setting("SAFEHUB_KEY_TRANSITION_EPOCH", EPOCH, None,
                                           "during a rotation, the epoch being moved to")
    transition_key_file: Path | None = setting(
        "SAFEHUB_LINKAGE_TRANSITION_KEY_FILE", FilePath(), None,
        "the HMAC key file of the transition epoch")
    hmac_epochs: str | None = setting("SAFEHUB_HMAC_EPOCHS", Text(r"\s*\d+\s*(,\s*\d+\s*)*",
                                                                  "epochs like 0,1"),
                                      None, "beside a key service, the epochs still keyed by "
                                      "HMAC while migrating")


@dataclass(frozen=True, slots=True)
class LinkageKeyEnv:
    """Version 1's HMAC linkage key."""

    key_file: Path | None = setting("SAFEHUB_LINKAGE_KEY_FILE", FilePath(), None,
                                    "the HMAC linkage key's file, hex")
    key: Secret | None = setting("SAFEHUB_LINKAGE_KEY", SecretText(), None,
                                 "the HMAC linkage key, hex (a file is better)")
    epoch: int | None = setting("SAFEHUB_LINKAGE_KEY_EPOCH", EPOCH, None,
                                "the linkage key's epoch (default 1)")


@dataclass(frozen=True, slots=True)
class ReidEnv:
    """`safehub reid serve`: its flags override these."""

    agencies: tuple[str, ...] = setting("SAFEHUB_REID_AGENCIES", Names(), (),
                                        "the agencies served (or --agency)")
    users: Path | None = setting("SAFEHUB_REID_USERS", FilePath(), None,
                                 "the officers' users file (required)")
    hub_keys: Path | None = setting("SAFEHUB_REID_HUB_KEYS", FilePath(), None,
                                    "folder of the hubs' public keys <hub>.pub (required)")
    listen: str = setting("SAFEHUB_REID_LISTEN", HostPorts(several=False), REID_LISTEN,
                          "the officers' page's address")
    database_url: str = setting("SAFEHUB_REID_DATABASE_URL", Url(DATABASES, drivers=True),
                                "sqlite:///safehub-reid.db", "the requests' database")
    vault_dir: Path | None = setting("SAFEHUB_REID_VAULT_DIR", FilePath(), None,
                                     "folder of the agencies' vaults <agency>.sqlite")
    secret: Secret | None = setting("SAFEHUB_REID_SECRET", SecretText(), None,
                                    "the session signing key (random per start if unset)")
    tls_cert: Path | None = tls_cert_setting("SAFEHUB_REID_TLS_CERT")
    tls_key: Path | None = tls_key_setting("SAFEHUB_REID_TLS_KEY")
    tls_dir: Path = tls_dir_setting("SAFEHUB_REID_TLS_DIR", "safehub-reid-tls")


_WORKER_ID = r"[A-Za-z0-9._-]{1,64}"


@dataclass(frozen=True, slots=True)
class CorrelatorEnv:
    app_id: str | None = setting("SAFEHUB_CORRELATOR_APP_ID", Text(), None,
                                 "faust app id (default <prefix>correlator, the one its ACLs "
                                 "allow)")
    rules_path: Path = setting("SAFEHUB_RULES_PATH", FilePath(), DEFAULT_RULES_PATH,
                               "the correlation rules",
                               shown="the current rules (services/correlation/rules.py)")
    partitions: int = setting("SAFEHUB_CORRELATOR_PARTITIONS", Integer(1), 6,
                              "the table's partitions (= the ingress topics')")
    replication: int = setting("SAFEHUB_CORRELATOR_REPLICATION", Integer(1), 1,
                               "the changelog's replication factor")
    data_dir: Path = setting("SAFEHUB_CORRELATOR_DATA_DIR", FilePath(),
                             Path("safehub-correlator-data"), "faust's local table store")
    # Why 1000 and 24: services/correlator/command.py (DEFAULT_BATCH, DEFAULT_HELD_MIB).
    batch: int = setting("SAFEHUB_CORRELATOR_BATCH", Integer(1), 1000,
                         "the most events taken in one batch and transaction (and the most "
                         "faust queues ahead of it)")
    # Why 100: services/correlator/fairness.py (SHARE).
    fair_share: int = setting("SAFEHUB_CORRELATOR_FAIR_SHARE", Integer(1), 100,
                              "the most records of one ingress partition handed to faust per "
                              "fetch round: lower keeps one agency's flood from holding up the "
                              "others, higher catches up a backlog faster")
    held_mib: int = setting("SAFEHUB_CORRELATOR_HELD_MIB", Integer(0), 24,
                            "most MiB of encoded block states kept decoded (least recently "
                            "used let go first)")
    web_port: int | None = setting("SAFEHUB_CORRELATOR_WEB_PORT", Integer(1), None,
                                   "faust's own web server (unset: off)")
    topic_check_s: int = setting("SAFEHUB_CORRELATOR_TOPIC_CHECK_S", Integer(1), 300,
                                 "how often to look for new ingress topics, seconds")
    worker_id: str | None = setting(
        "SAFEHUB_CORRELATOR_WORKER_ID", Text(_WORKER_ID, "1-64 letters, digits, '.', '_' or '-'"),
        None, "a stable worker id: fencing and static membership (unset: anonymous)")
    stats_every_s: float = setting("SAFEHUB_CORRELATOR_STATS_EVERY_S", Number(above=0), 30.0,
                                   "how often the worker logs its throughput")


@dataclass(frozen=True, slots=True)
class DemoEnv:
    web_port: int = setting("SAFEHUB_WEB_PORT", Integer(1, 65535), 8080,
                            "the hub page's port (--web-port)")
    reid_port: int = setting("SAFEHUB_REID_PORT", Integer(1, 65535), 8090,
                             "the agencies' page's port (--reid-port)")
