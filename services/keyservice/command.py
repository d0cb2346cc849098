"""`safehub keyservice`: the OPRF key service (RFC 9497, ristretto255-SHA512).

  safehub keyservice keygen --keys DIR --epoch N
      a new random key file DIR/epoch-N.json (0600); never overwrites an epoch. Epoch 0 is the
      linkage-block key; match-key epochs start at 1.
  safehub keyservice serve --listen 127.0.0.1:8443 --keys DIR --clients DIR
          --operator-secret FILE --tls-cert FILE --tls-key FILE [--quota-config FILE]
          [--quota-state FILE]
      serve every epoch whose key file is in DIR over HTTPS; agencies authenticate with the
      bearer secret in CLIENTS/<agency>.secret (0600), operators with --operator-secret.
      Destroying an epoch is deleting its key file: requests for it get 404 at once.

Quota refusals are audited on the `audit` topic as the `keyservice` Kafka principal: settings
SAFEHUB_KAFKA_* (see safehub.connection) and SAFEHUB_TOPIC_PREFIX.

Health, metrics and JSON logs: as every service (SAFEHUB_HEALTH_PORT, SAFEHUB_LOG_FORMAT; see
safehub.observability).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
from functools import partial
from pathlib import Path
from types import FrameType

from safehub.clock import wall_clock_ms
from safehub.connection import KafkaConnection
from safehub.deploy.registry import Service
from safehub.errors import ConfigError
from safehub.observability.watch import ServiceWatch, beating_server
from safehub.services.keyservice.credentials import Credentials
from safehub.services.keyservice.keys import KeyDirectory, key_path, write_key_file
from safehub.services.keyservice.quota import (
    QuotaBook,
    load_quota_config,
    read_counts,
    write_counts,
)
from safehub.services.keyservice.server import create_app
from safehub.settings import TopicsEnv, load

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    keygen = sub.add_parser("keygen", help="write a new random key file for an epoch")
    keygen.add_argument("--keys", type=Path, required=True, help="the key directory")
    keygen.add_argument("--epoch", type=int, required=True,
                        help="0 = linkage-block key, >= 1 = match-key epochs")
    serve = sub.add_parser("serve", help="serve the key service over HTTPS")
    serve.add_argument("--listen", default="127.0.0.1:8443", help="HOST:PORT")
    serve.add_argument("--keys", type=Path, required=True, help="the key directory")
    serve.add_argument("--clients", type=Path, required=True,
                       help="directory of <agency>.secret bearer secrets (0600)")
    serve.add_argument("--operator-secret", type=Path,
                       help="bearer secret file (0600) for GET /v1/usage")
    serve.add_argument("--tls-cert", type=Path, required=True, help="certificate chain (PEM)")
    serve.add_argument("--tls-key", type=Path, required=True, help="private key (PEM)")
    serve.add_argument("--quota-config", type=Path,
                       help="TOML: [default] and [agencies.<id>] per_minute, per_day")
    serve.add_argument("--quota-state", type=Path,
                       help="file keeping the quota counters across restarts (made if missing)")


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--listen must be HOST:PORT, got {text!r}")
    return host, int(port)


def _keygen(args: argparse.Namespace) -> int:
    path = write_key_file(args.keys, args.epoch)
    print(f"wrote {path} (epoch {args.epoch}); keep a backup as secret as the file itself")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from safehub.services.keyservice.audit import KafkaAudit

    host, port = _listen(args.listen)
    for what, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if not path.is_file():
            raise ConfigError(f"{what}: no file at {path}")
    keys = KeyDirectory(args.keys)
    epochs = keys.check()
    if not epochs:
        log.warning("no key files (%s) in %s yet", key_path(args.keys, 1).name, args.keys)
    auth = Credentials.load(args.clients, args.operator_secret)
    quotas = QuotaBook(load_quota_config(args.quota_config))
    state: Path | None = args.quota_state
    if state is None:
        log.warning("no --quota-state: quota counters start afresh at every restart")
    else:
        quotas.restore(read_counts(state))
    audit = KafkaAudit.connect(KafkaConnection.from_env(Service.KEYSERVICE),
                               load(TopicsEnv).prefix)
    watch = ServiceWatch("keyservice")
    app = create_app(keys, quotas, auth, audit, wall_clock_ms,
                     None if state is None else partial(write_counts, state), watch.metrics)
    config = uvicorn.Config(app, host=host, port=port, ssl_certfile=str(args.tls_cert),
                            ssl_keyfile=str(args.tls_key), log_level="warning",
                            access_log=False, lifespan="off")
    log.info("key service on https://%s:%d, epochs %s, %d agencies", host, port, epochs,
             len(auth.agencies))
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"--listen {host}:{port}: {exc.strerror}") from None
    # uvicorn stops gracefully on SIGTERM, then raises it again under the handler it found:
    # make that a normal exit, so that a supervisor sees a clean stop as exit code 0.
    signal.signal(signal.SIGTERM, _stopped)
    # Ready when the broker its audit entries go to answers; live while uvicorn's loop turns.
    watch.serve(KafkaConnection.from_env(Service.KEYSERVICE))
    try:
        beating_server(config, watch).run(sockets=[sock])
    finally:
        watch.close()
        audit.close()
    return 0


def _stopped(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def run(args: argparse.Namespace) -> int:
    return _keygen(args) if args.action == "keygen" else _serve(args)
