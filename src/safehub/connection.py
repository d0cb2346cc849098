"""How a service reaches Kafka: the one settings object behind every client in the project.

Every party is a Kafka principal that authenticates with SASL/SCRAM-SHA-512 over TLS
(SASL_SSL); there is no other way in. A `KafkaConnection` names the bootstrap servers, the
principal, the file holding its password and the CA that signed the brokers' certificates.
The password is read from its file only when a client is built and never kept on the object,
so that a settings object can be printed, logged or put in an error message safely.

Settings (environment), read by `KafkaConnection.from_env`:
- SAFEHUB_KAFKA_BOOTSTRAP: host:port[,host:port...] (default: the local cluster's);
- SAFEHUB_KAFKA_PRINCIPAL: who this service is (each service has its own default);
- SAFEHUB_KAFKA_PASSWORD_FILE: the principal's password file (0600); default
  `<SAFEHUB_KAFKA_SECRETS>/<principal>.password`;
- SAFEHUB_KAFKA_SECRETS: a folder of password files (default: the local cluster's);
- SAFEHUB_KAFKA_CA_FILE: the CA certificate in PEM (default: the local cluster's).
A password never travels in an environment variable's value.
"""

from __future__ import annotations

import os
import secrets
import ssl
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from safehub.errors import ConfigError
from safehub.settings.common import KafkaEnv, PlacesEnv
from safehub.settings.loader import load

SECURITY_PROTOCOL = "SASL_SSL"
SASL_MECHANISM = "SCRAM-SHA-512"
LOCAL_CLUSTER = "default"


def local_cluster_folder(name: str = LOCAL_CLUSTER) -> Path:
    """Where `safehub kafka up` keeps a local cluster's state, CA and secrets."""
    return state_folder() / "kafka" / name


def state_folder(env: Mapping[str, str] | None = None) -> Path:
    """SAFEHUB_STATE, else the XDG state folder's `safehub` (XDG_* is the desktop's
    convention, not a setting of ours, so it is read here and not by the settings loader)."""
    e = os.environ if env is None else env
    chosen = load(PlacesEnv, e).state
    return chosen or Path(e.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"),
                          "safehub")


def read_secret(path: Path, what: str) -> str:
    """The content of a secret file that only its owner may read; the error names the file and
    the rule, never the content."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what}: {path} must be readable by its owner only (chmod 600)")
    if info.st_uid != os.getuid():
        raise ConfigError(f"{what}: {path} must belong to the user running this service")
    text = path.read_text().strip()
    if not text:
        raise ConfigError(f"{what}: {path} is empty")
    return text


def password_path(folder: Path, principal: str) -> Path:
    """Where a principal's password file lives in a folder of them (SAFEHUB_KAFKA_SECRETS)."""
    return folder / f"{principal}.password"


def ensure_password(folder: Path, principal: str) -> str:
    """The principal's password from its file in `folder`, made (random, 0600) if missing."""
    path = password_path(folder, principal)
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret(path, secrets.token_urlsafe(32))
    return read_secret(path, f"Kafka password of {principal}")


def write_secret(path: Path, text: str) -> None:
    """Create a 0600 file with this content (created with that mode, never widened first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")
    path.chmod(0o600)


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    bootstrap: str
    principal: str
    password_file: Path
    ca_file: Path

    @classmethod
    def from_env(cls, default_principal: str,
                 env: Mapping[str, str] | None = None) -> KafkaConnection:
        v = load(KafkaEnv, env)
        local = local_cluster_folder()
        principal = v.principal or default_principal
        return cls(
            bootstrap=v.bootstrap,
            principal=principal,
            password_file=v.password_file
            or password_path(v.secrets or local / "secrets", principal),
            ca_file=v.ca_file or local / "ca.pem",
        )

    def as_principal(self, principal: str, password_file: Path | None = None) -> KafkaConnection:
        """The same cluster as another principal whose password file sits beside this one's."""
        return replace(self, principal=principal,
                       password_file=password_file
                       or password_path(self.password_file.parent, principal))

    def env(self) -> dict[str, str]:
        """The environment that gives a child service this connection (paths, never secrets)."""
        return {
            "SAFEHUB_KAFKA_BOOTSTRAP": self.bootstrap,
            "SAFEHUB_KAFKA_PRINCIPAL": self.principal,
            "SAFEHUB_KAFKA_PASSWORD_FILE": str(self.password_file),
            "SAFEHUB_KAFKA_SECRETS": str(self.password_file.parent),
            "SAFEHUB_KAFKA_CA_FILE": str(self.ca_file),
        }

    def password(self) -> str:
        return read_secret(self.password_file, f"Kafka password of {self.principal}")

    def _check_ca(self) -> None:
        if not self.ca_file.is_file():
            raise ConfigError(f"SAFEHUB_KAFKA_CA_FILE: no CA certificate at {self.ca_file}")

    def kafka_python(self) -> dict[str, Any]:
        """kafka-python keyword arguments (also what `safehub access client-config` prints)."""
        self._check_ca()
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": SECURITY_PROTOCOL,
            "sasl_mechanism": SASL_MECHANISM,
            "sasl_plain_username": self.principal,
            "sasl_plain_password": self.password(),
            "ssl_cafile": str(self.ca_file),
        }

    def ssl_context(self) -> ssl.SSLContext:
        self._check_ca()
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def aiokafka(self) -> dict[str, Any]:
        """aiokafka keyword arguments: kafka-python's, with an SSL context for the CA file."""
        settings = self.kafka_python()
        del settings["ssl_cafile"]
        return {**settings, "ssl_context": self.ssl_context()}

    def faust(self) -> dict[str, Any]:
        """faust.App keyword arguments: the broker URL and its credentials."""
        import faust  # only the correlator pays for importing faust

        return {
            "broker": ",".join(f"kafka://{b}" for b in self.bootstrap.split(",")),
            "broker_credentials": faust.SASLCredentials(
                username=self.principal, password=self.password(),
                ssl_context=self.ssl_context(), mechanism=SASL_MECHANISM,
            ),
        }


def connections_from_env(principals: Iterable[str], env: Mapping[str, str] | None = None
                         ) -> dict[str, KafkaConnection]:
    """One connection per principal, from one set of settings: a process that acts for several
    hubs (the inbox, the web page) holds each hub's own credentials, never one shared login.
    SAFEHUB_KAFKA_PRINCIPAL may be unset; if set, it must be one of them."""
    names = tuple(principals)
    named = load(KafkaEnv, env).principal
    if named and named not in names:
        raise ConfigError(f"SAFEHUB_KAFKA_PRINCIPAL={named} is not one of the hubs served "
                          f"({', '.join(names)}): each hub connects as its own principal; leave "
                          "it unset and give SAFEHUB_KAFKA_SECRETS")
    base = KafkaConnection.from_env(named or names[0], env)
    return {p: base if p == base.principal else base.as_principal(p) for p in names}
