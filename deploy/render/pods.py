"""The parts every safehub pod shares: labels, the health port and probes, and secret files.

Secrets reach a service as files, as everywhere in safehub (safehub.connection.read_secret):
owned by the user running the service and readable by it alone (0600). Kubernetes mounts
Secret volumes owned by root, so an init container copies them, as the service's own user,
into a memory-backed folder with mode 0600; the services then read them where their settings
say (SAFEHUB_KAFKA_SECRETS, SAFEHUB_REID_KEYS, PGPASSFILE, ...). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safehub.deploy.render.site import HEALTH_PORT, RUN_AS, Site
from safehub.deploy.render.strimzi import CLIENT_LABEL

Manifest = dict[str, Any]
COMPONENT = "safehub.io/component"  # on every safehub workload's pods (NetworkPolicy selector)
SECRETS = "/run/safehub/secrets"  # the 0600 copies
_SOURCE = "/secrets-src"  # the Secrets as Kubernetes mounts them (root-owned, 0440)
KAFKA_CA = "/etc/safehub/kafka-ca/ca.crt"
# Copies every folder (the projected keys in files/<folder>/, whole Secrets in dirs/<folder>/)
# to SECRETS/<folder>/, 0600, owned by RUN_AS. `*` skips a volume's own `..data` links;
# `install` follows them to the files.
COPY_SECRETS = (
    "set -eu; umask 077; "
    f"for d in {_SOURCE}/files/*/ {_SOURCE}/dirs/*/; do [ -d \"$d\" ] || continue; "
    f"n=$(basename \"$d\"); mkdir -p \"{SECRETS}/$n\"; "
    f"for f in \"$d\"*; do install -m 0600 \"$f\" \"{SECRETS}/$n/\"; done; done"
)


@dataclass(frozen=True, slots=True)
class SecretFile:
    """One key of a Secret, copied to SECRETS/<folder>/<path>."""

    secret: str
    key: str
    folder: str
    path: str


@dataclass(slots=True)
class PodSpec:
    component: str  # correlator, router, inbox, web, audit-sink, keyservice
    name: str  # the workload's name
    args: list[str]
    env: dict[str, str]
    secrets: list[SecretFile] = field(default_factory=list)
    secret_dirs: dict[str, str] = field(default_factory=dict)  # folder -> a whole Secret
    # Resource requests: each workload's comment says which bench figure sizes it.
    cpu: str = "100m"
    memory: str = "256Mi"
    kafka_client: bool = True
    startup_s: int = 300  # how long /livez may fail while the process starts
    sizing: str = ""  # the benchmark figure the requests come from, shown on the workload
    extra_env: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    sidecars: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


def labels(component: str, name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "safehub",
            COMPONENT: component}


def kafka_env(site: Site, principal: str | None) -> dict[str, str]:
    """safehub.connection's settings: the bootstrap, the folder of password files, the CA.
    `principal` None: a process serving several hubs, each as its own principal."""
    env = {"SAFEHUB_KAFKA_BOOTSTRAP": site.bootstrap,
           "SAFEHUB_KAFKA_SECRETS": f"{SECRETS}/kafka",
           "SAFEHUB_KAFKA_CA_FILE": KAFKA_CA}
    if principal is not None:
        env["SAFEHUB_KAFKA_PRINCIPAL"] = principal
    return env


def kafka_password(principal: str) -> SecretFile:
    # The Strimzi User Operator keeps a KafkaUser's password in the Secret named like it.
    return SecretFile(principal, "password", "kafka", f"{principal}.password")


def pgpass() -> SecretFile:
    return SecretFile("safehub-postgres-pgpass", "pgpass", "postgres", "pgpass")


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "health"}, "periodSeconds": period,
            "timeoutSeconds": 2, "failureThreshold": failures}


def pod_template(site: Site, pod: PodSpec) -> Manifest:
    env = {**pod.env, "SAFEHUB_HEALTH_PORT": str(HEALTH_PORT), "SAFEHUB_HEALTH_HOST": "0.0.0.0",
           "SAFEHUB_LOG_FORMAT": "json"}
    if any(s.folder == "postgres" for s in pod.secrets):
        env["PGPASSFILE"] = f"{SECRETS}/postgres/pgpass"
    container: dict[str, Any] = {
        "name": pod.component,
        "image": site.image,
        "args": pod.args,
        "env": [{"name": k, "value": v} for k, v in sorted(env.items())] + pod.extra_env,
        "ports": [{"name": "health", "containerPort": HEALTH_PORT}],
        "startupProbe": _probe("/livez", 5, pod.startup_s // 5),
        "livenessProbe": _probe("/livez", 10, 3),
        "readinessProbe": _probe("/readyz", 5, 2),
        "resources": {"requests": {"cpu": pod.cpu, "memory": pod.memory},
                      "limits": {"memory": pod.memory}},
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "secrets", "mountPath": SECRETS, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}, *pod.mounts],
    }
    volumes: list[dict[str, Any]] = [
        {"name": "secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "secrets-src", "projected": {"defaultMode": 0o440, "sources": [
            {"secret": {"name": name, "items": [
                {"key": s.key, "path": f"{s.folder}/{s.path}"} for s in group]}}
            for name, group in _by_secret(pod.secrets)]}},
        *({"name": f"dir-{folder}", "secret": {"secretName": name, "defaultMode": 0o440}}
          for folder, name in sorted(pod.secret_dirs.items())),
    ]
    if pod.kafka_client:
        container["volumeMounts"].append(
            {"name": "kafka-ca", "mountPath": KAFKA_CA.rsplit("/", 1)[0], "readOnly": True})
        volumes.append({"name": "kafka-ca", "secret": {
            "secretName": site.cluster_ca_secret,
            "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
    init = {
        "name": "copy-secrets", "image": site.image, "command": ["sh", "-c", COPY_SECRETS],
        "securityContext": _container_security(),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                      "limits": {"memory": "32Mi"}},
        "volumeMounts": [
            {"name": "secrets-src", "mountPath": f"{_SOURCE}/files", "readOnly": True},
            {"name": "secrets", "mountPath": SECRETS},
            *({"name": f"dir-{folder}", "mountPath": f"{_SOURCE}/dirs/{folder}", "readOnly": True}
              for folder in sorted(pod.secret_dirs))],
    }
    pod_labels = {**labels(pod.component, pod.name), **pod.labels}
    if pod.kafka_client:
        pod_labels[CLIENT_LABEL] = "true"
    return {
        "metadata": {
            "labels": pod_labels,
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(HEALTH_PORT),
                            "prometheus.io/path": "/metrics"},
        },
        "spec": {
            "automountServiceAccountToken": False,  # no service talks to the Kubernetes API
            "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [init],
            "containers": [container, *pod.sidecars],
            "volumes": volumes + pod.volumes,
        },
    }


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}}


def _by_secret(files: list[SecretFile]) -> list[tuple[str, list[SecretFile]]]:
    by: dict[str, list[SecretFile]] = {}
    for f in files:
        by.setdefault(f.secret, []).append(f)
    return sorted((name, sorted(group, key=lambda s: (s.folder, s.path)))
                  for name, group in by.items())
