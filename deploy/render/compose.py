"""The same system on one host (deploy/compose/compose.yaml), for a small authority or a
trial: one Apache Kafka node from the `apache/kafka` image in KRaft mode, configured through
the image's KAFKA_* environment variables, with the project's three listeners (clients on
SASL_SSL with SCRAM-SHA-512; replication and the controller on mutual TLS with the node
certificate), then a one-shot setup (`safehub access apply`, `safehub topics create`), then the
services. Pure: a Site in, one compose document out.

Secrets are files (compose `secrets:`) made once by deploy/compose/make-secrets.sh. Every
principal's password is made by `safehub access apply` into the `kafka-passwords` volume,
0600 and owned by the services' user; on one host every service mounts that volume (read-only),
where Kubernetes gives each pod only its own password.
"""

from __future__ import annotations

from typing import Any

from safehub.deploy.kafka.launcher import KAFKA_VERSION
from safehub.deploy.registry import ADMIN, Service
from safehub.deploy.render.site import (
    HEALTH_PORT,
    KEYSERVICE_PORT,
    RUN_AS,
    WEB_PORT,
    WEB_TLS_PORT,
    Site,
)
from safehub.deploy.render.workloads import PROXY_IMAGE, proxy_conf

# The broker version the project runs and tests everywhere (launcher.py pins it, once).
KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
POSTGRES_IMAGE = "postgres:16-alpine"
PASSWORDS = "/var/lib/safehub/kafka-passwords"
CLIENT_PORT, INTERNAL_PORT, CONTROLLER_PORT = 9093, 9094, 9095
DATABASES = ("router", "inbox", "audit")
USER = f"{RUN_AS}:{RUN_AS}"
# kafka-configs over the INTERNAL listener as the node (a super user): the admin's SCRAM
# credential, which `safehub access apply` then uses to make everyone else's.
NODE_CLIENT = ("security.protocol=SSL\nssl.keystore.type=PEM\n"
               "ssl.keystore.location=/run/secrets/kafka-node-pem\n"
               "ssl.truststore.type=PEM\nssl.truststore.location=/run/secrets/kafka-ca\n")
CREATE_DATABASES = "".join(f"CREATE DATABASE safehub_{d} OWNER safehub;\n" for d in DATABASES)


def _url(database: str) -> str:
    return f"postgresql+psycopg2://safehub@postgres:5432/safehub_{database}"


def kafka_env() -> dict[str, str]:
    """The broker's settings in the image's documented form (its docker/examples/README):
    KAFKA_<PROPERTY> with '.' as '_', '_' as '__' and '-' as '___'. The advertised listeners
    are named CLIENT and INTERNAL, not SSL or SASL_*, so the image's own keystore-password
    helpers stay out of the way: the node's key is one unencrypted PEM file."""
    return {
        # The image formats the storage with it on first start (KRaft needs one): 16 bytes,
        # base64url, the same for every start of this node. Not a secret.
        "CLUSTER_ID": "c2FmZWh1Yi1jb21wb3NlMQ",
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@kafka:{CONTROLLER_PORT}",
        "KAFKA_LISTENERS": f"CLIENT://:{CLIENT_PORT},INTERNAL://:{INTERNAL_PORT},"
                           f"CONTROLLER://:{CONTROLLER_PORT}",
        "KAFKA_ADVERTISED_LISTENERS": f"CLIENT://kafka:{CLIENT_PORT},"
                                      f"INTERNAL://kafka:{INTERNAL_PORT}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "INTERNAL",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL",
        "KAFKA_SASL_ENABLED_MECHANISMS": "SCRAM-SHA-512",
        "KAFKA_LISTENER_NAME_CLIENT_SASL_ENABLED_MECHANISMS": "SCRAM-SHA-512",
        "KAFKA_LISTENER_NAME_CLIENT_SCRAM___SHA___512_SASL_JAAS_CONFIG":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "KAFKA_LISTENER_NAME_INTERNAL_SSL_CLIENT_AUTH": "required",
        "KAFKA_LISTENER_NAME_CONTROLLER_SSL_CLIENT_AUTH": "required",
        "KAFKA_SSL_KEYSTORE_TYPE": "PEM",
        "KAFKA_SSL_KEYSTORE_LOCATION": "/run/secrets/kafka-node-pem",
        "KAFKA_SSL_TRUSTSTORE_TYPE": "PEM",
        "KAFKA_SSL_TRUSTSTORE_LOCATION": "/run/secrets/kafka-ca",
        "KAFKA_SSL_ENABLED_PROTOCOLS": "TLSv1.3,TLSv1.2",
        "KAFKA_SSL_PRINCIPAL_MAPPING_RULES": "RULE:^CN=([^,]+).*$/$1/,DEFAULT",
        "KAFKA_AUTHORIZER_CLASS_NAME":
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND": "false",
        "KAFKA_SUPER_USERS": f"User:safehub-node;User:{ADMIN}",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
    }


def _client_env(principal: str | None) -> dict[str, str]:
    env = {"SAFEHUB_KAFKA_BOOTSTRAP": f"kafka:{CLIENT_PORT}",
           "SAFEHUB_KAFKA_SECRETS": PASSWORDS,
           "SAFEHUB_KAFKA_CA_FILE": "/run/secrets/kafka-ca",
           "SAFEHUB_HEALTH_PORT": str(HEALTH_PORT), "SAFEHUB_HEALTH_HOST": "0.0.0.0",
           "PGPASSFILE": "/run/secrets/postgres-pgpass"}
    if principal is not None:
        env["SAFEHUB_KAFKA_PRINCIPAL"] = principal
    return env


def _service(site: Site, args: list[str], principal: str | None, **extra: Any) -> dict[str, Any]:
    env = {**_client_env(principal), **extra.pop("env", {})}
    svc: dict[str, Any] = {
        "image": site.image, "user": USER, "command": args,
        "environment": dict(sorted(env.items())),
        "secrets": sorted({"kafka-ca", "postgres-pgpass", *extra.pop("secrets", [])}),
        "volumes": [f"kafka-passwords:{PASSWORDS}:ro", *extra.pop("volumes", [])],
        "depends_on": {"setup": {"condition": "service_completed_successfully"},
                       "postgres": {"condition": "service_healthy"}},
        "restart": "unless-stopped",
        "read_only": True,
        "tmpfs": ["/tmp"],
        "healthcheck": {"test": ["CMD", "python", "-c",
                                 "import urllib.request; urllib.request.urlopen("
                                 f"'http://127.0.0.1:{HEALTH_PORT}/readyz', timeout=2)"],
                        "interval": "10s", "timeout": "5s", "retries": 3},
    }
    svc.update(extra)
    return svc


def _literal(value: Any) -> Any:
    """Compose interpolates `$NAME` everywhere; every `$` here is meant for the program that
    reads the value (a shell, nginx, Kafka's principal mapping rule), so each is escaped."""
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    if isinstance(value, str):
        return value.replace("$", "$$")
    return value


def compose(site: Site) -> dict[str, Any]:
    hubs = ",".join(site.registry.hubs)
    setup_script = (
        f"set -eu; install -m 0600 /run/secrets/kafka-admin-password {PASSWORDS}/admin.password"
        " && safehub access apply && safehub topics create")
    services: dict[str, Any] = {
        "kafka": {
            "image": KAFKA_IMAGE,
            "hostname": "kafka",
            "environment": dict(sorted(kafka_env().items())),
            "secrets": ["kafka-ca", "kafka-node-pem"],
            "volumes": ["kafka-data:/var/lib/kafka/data"],
            "restart": "unless-stopped",
        },
        "kafka-admin-credential": {
            "image": KAFKA_IMAGE, "user": USER,
            "depends_on": {"kafka": {"condition": "service_started"}},
            "secrets": ["kafka-ca", "kafka-node-pem", "kafka-admin-password"],
            "configs": [{"source": "node-client", "target": "/etc/safehub/node-client.properties"}],
            "entrypoint": ["sh", "-c"],
            "command": [
                "until /opt/kafka/bin/kafka-configs.sh --bootstrap-server "
                f"kafka:{INTERNAL_PORT} --command-config /etc/safehub/node-client.properties "
                "--alter --entity-type users --entity-name admin --add-config "
                "\"SCRAM-SHA-512=[password=$(cat /run/secrets/kafka-admin-password)]\"; "
                "do sleep 2; done"],
            "restart": "no",
        },
        "postgres": {
            "image": POSTGRES_IMAGE,
            "environment": {"POSTGRES_USER": "safehub", "POSTGRES_DB": "safehub",
                            "POSTGRES_PASSWORD_FILE": "/run/secrets/postgres-password"},
            "secrets": ["postgres-password"],
            "configs": [{"source": "create-databases",
                         "target": "/docker-entrypoint-initdb.d/10-safehub.sql"}],
            "volumes": ["postgres-data:/var/lib/postgresql/data"],
            "healthcheck": {"test": ["CMD", "pg_isready", "-U", "safehub"],
                            "interval": "5s", "timeout": "3s", "retries": 10},
            "restart": "unless-stopped",
        },
        "setup": {
            "image": site.image, "user": USER,
            "entrypoint": ["sh", "-c"], "command": [setup_script],
            "environment": {"SAFEHUB_KAFKA_BOOTSTRAP": f"kafka:{CLIENT_PORT}",
                            "SAFEHUB_KAFKA_SECRETS": PASSWORDS,
                            "SAFEHUB_KAFKA_CA_FILE": "/run/secrets/kafka-ca",
                            "SAFEHUB_KAFKA_PRINCIPAL": ADMIN},
            "secrets": ["kafka-admin-password", "kafka-ca"],
            "volumes": [f"kafka-passwords:{PASSWORDS}"],
            "depends_on": {"kafka-admin-credential": {
                "condition": "service_completed_successfully"}},
            "restart": "no",
        },
        "correlator": _service(
            site, ["correlator"], Service.CORRELATOR,
            env={"SAFEHUB_CORRELATOR_WORKER_ID": "correlator-1",
                 "SAFEHUB_CORRELATOR_REPLICATION": "1",  # one broker on one host
                 "SAFEHUB_CORRELATOR_DATA_DIR": "/var/lib/safehub/correlator"},
            volumes=["correlator-data:/var/lib/safehub/correlator"]),
        "router": _service(site, ["router"], Service.ROUTER,
                           env={"SAFEHUB_ROUTER_DATABASE_URL": _url("router")}),
        "audit-sink": _service(
            site, ["audit", "sink", "--key-file", "/run/secrets/audit-signing-key"],
            Service.AUDIT_SINK, env={"SAFEHUB_AUDIT_DB_URL": _url("audit")},
            secrets=["audit-signing-key"]),
        # One inbox and one web page for every hub, each hub as its own principal.
        "inbox": _service(site, ["inbox"], None,
                          env={"SAFEHUB_INBOX_AGENCIES": hubs,
                               "SAFEHUB_INBOX_DATABASE_URL": _url("inbox"),
                               "SAFEHUB_REID_KEYS": "/run/secrets/reid-keys"},
                          secrets=["reid-keys"]),
        # Plain HTTP on the loopback (--plain-http-behind-proxy): web-proxy is its TLS front.
        "web": _service(site, ["web", "--plain-http-behind-proxy"], None,
                        env={"SAFEHUB_WEB_USERS": "/run/secrets/web-users",
                             "SAFEHUB_WEB_PORT": str(WEB_PORT),
                             "SAFEHUB_INBOX_DATABASE_URL": _url("inbox"),
                             "SAFEHUB_REID_KEYS": "/run/secrets/reid-keys"},
                        secrets=["reid-keys", "web-users"],
                        # The web app binds its container's loopback only (services/web/
                        # command.py): its TLS proxy shares the container's network, and this
                        # is the one port published beyond the host's loopback.
                        ports=[f"{WEB_TLS_PORT}:{WEB_TLS_PORT}"]),
        "web-proxy": {
            "image": PROXY_IMAGE, "network_mode": "service:web",
            "depends_on": {"web": {"condition": "service_started"}},
            "secrets": ["web-tls-cert", "web-tls-key"],
            "configs": [{"source": "web-proxy", "target": "/etc/nginx/nginx.conf"}],
            "read_only": True, "tmpfs": ["/tmp"], "restart": "unless-stopped",
        },
        "keyservice": _service(
            site, ["keyservice", "serve", "--listen", f"0.0.0.0:{KEYSERVICE_PORT}",
                   "--keys", "/run/secrets/keyservice-keys",
                   "--clients", "/run/secrets/keyservice-clients",
                   "--operator-secret", "/run/secrets/keyservice-operator",
                   "--tls-cert", "/run/secrets/keyservice-tls-cert",
                   "--tls-key", "/run/secrets/keyservice-tls-key",
                   "--quota-state", "/var/lib/safehub/keyservice/quota.json"],
            Service.KEYSERVICE,
            secrets=["keyservice-keys", "keyservice-clients", "keyservice-operator",
                     "keyservice-tls-cert", "keyservice-tls-key"],
            volumes=["keyservice-data:/var/lib/safehub/keyservice"],
            # Agencies' producers on this host; others through the host's TLS front.
            ports=[f"127.0.0.1:{KEYSERVICE_PORT}:{KEYSERVICE_PORT}"]),
    }
    secret_files = sorted({s for svc in services.values() for s in svc.get("secrets", [])})
    document: dict[str, Any] = _literal({
        "name": "safehub",
        "services": services,
        "secrets": {s: {"file": f"./secrets/{s}"} for s in secret_files},
        "configs": {"node-client": {"content": NODE_CLIENT},
                    "create-databases": {"content": CREATE_DATABASES},
                    "web-proxy": {"content": proxy_conf("/run/secrets/web-tls-cert",
                                                        "/run/secrets/web-tls-key")}},
        "volumes": {v: {} for v in ("correlator-data", "kafka-data", "kafka-passwords",
                                    "keyservice-data", "postgres-data")},
    })
    return document
