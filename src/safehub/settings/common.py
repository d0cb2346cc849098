"""Settings every service shares: the Kafka connection, the topic prefix, local folders,
health endpoints and logs."""

# setting() returns a dataclasses.field, which is what RUF009 cannot see.
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safehub.settings.loader import Choice, FilePath, HostPorts, Integer, Number, Text, setting

DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_STALL_S = 120.0
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class KafkaEnv:
    """How a service reaches Kafka (safehub.connection builds the KafkaConnection)."""

    bootstrap: str = setting("SAFEHUB_KAFKA_BOOTSTRAP", HostPorts(), DEFAULT_BOOTSTRAP,
                             "the brokers (default: the local cluster's)")
    principal: str | None = setting("SAFEHUB_KAFKA_PRINCIPAL", Text(), None,
                                     "who this service is (each service has its own default)")
    password_file: Path | None = setting(
        "SAFEHUB_KAFKA_PASSWORD_FILE", FilePath(), None,
        "the principal's password file, 0600 (default <SAFEHUB_KAFKA_SECRETS>/<principal>"
        ".password)")
    secrets: Path | None = setting(
        "SAFEHUB_KAFKA_SECRETS", FilePath(), None,
        "a folder of <principal>.password files (default: the local cluster's)")
    ca_file: Path | None = setting("SAFEHUB_KAFKA_CA_FILE", FilePath(), None,
                                   "the brokers' CA certificate, PEM (default: the local "
                                   "cluster's)")


@dataclass(frozen=True, slots=True)
class TopicsEnv:
    prefix: str = setting("SAFEHUB_TOPIC_PREFIX", Text(), "",
                          "put before every topic and group name (one deployment's namespace)")


@dataclass(frozen=True, slots=True)
class PlacesEnv:
    """Local folders of the command line tools (the local cluster, downloads)."""

    state: Path | None = setting("SAFEHUB_STATE", FilePath(), None,
                                 "local state: clusters, default vaults ($XDG_STATE_HOME/"
                                 "safehub)")
    cache: Path | None = setting("SAFEHUB_CACHE", FilePath(), None,
                                 "downloads such as the Kafka distribution ($XDG_CACHE_HOME/"
                                 "safehub)")


@dataclass(frozen=True, slots=True)
class HealthEnv:
    port: int | None = setting("SAFEHUB_HEALTH_PORT", Integer(0, 65535), None,
                               "serve /metrics, /livez and /readyz here (0: any free port; "
                               "unset: no health server)")
    host: str = setting("SAFEHUB_HEALTH_HOST", Text(), "127.0.0.1",
                        "the health server's address")
    stall_s: float = setting("SAFEHUB_HEALTH_STALL_S", Number(above=0), DEFAULT_STALL_S,
                             "/livez fails when the main loop has not beaten for this long")


@dataclass(frozen=True, slots=True)
class LogEnv:
    format: str = setting("SAFEHUB_LOG_FORMAT", Choice(LOG_FORMATS), "text",
                          "json: one JSON object per line (or `safehub --log-format`)")
    faust_level: str | None = setting(
        "SAFEHUB_FAUST_LOGLEVEL", Choice(LOG_LEVELS), None,
        "faust's and aiokafka's log level (unset: error for the command line, warning for "
        "the correlator's worker)")


# A served page's HTTPS (the hub's web page, an agency's re-identification desk): each service
# names its own variables, the rules are the same.
def tls_cert_setting(name: str) -> Path | None:
    return setting(name, FilePath(), None,  # type: ignore[no-any-return]
                   "HTTPS certificate chain, PEM (or --tls-cert)")


def tls_key_setting(name: str) -> Path | None:
    return setting(name, FilePath(), None,  # type: ignore[no-any-return]
                   "its private key, PEM (or --tls-key)")


def tls_dir_setting(name: str, default: str) -> Path:
    return setting(name, FilePath(), Path(default),  # type: ignore[no-any-return]
                   "where a local certificate is made when none is given")
