"""safehub's own processes on Kubernetes: the correlator (a StatefulSet), the router, each
hub's inbox and web page, the audit sink and the key service. Pure: a Site in, manifests out.

Resource requests come from bench/results/*.json (measured on a 2-core machine); each
workload's comment names the figure. Limits cap memory only: CPU throttling would add latency
that the benchmarks did not see.
"""

from __future__ import annotations

from typing import Any

from safehub.deploy.registry import Service
from safehub.deploy.render.pods import (
    SECRETS,
    Manifest,
    PodSpec,
    SecretFile,
    kafka_env,
    kafka_password,
    labels,
    pgpass,
    pod_template,
)
from safehub.deploy.render.site import (
    HEALTH_PORT,
    KEYSERVICE_PORT,
    WEB_PORT,
    WEB_TLS_PORT,
    Site,
    database_name,
)

CORRELATOR = "safehub-correlator"
DATA = "/var/lib/safehub"
PROXY_IMAGE = "nginxinc/nginx-unprivileged:1.27-alpine"
# The web app listens on the pod's loopback only (services/web/command.py), told to serve plain
# HTTP (--plain-http-behind-proxy; HTTPS is its default) because this TLS proxy in the same pod
# is its front, the Service's only port.


def proxy_conf(cert: str, key: str) -> str:
    return f"""pid /tmp/nginx.pid;
events {{}}
http {{
  client_body_temp_path /tmp/client_body;
  proxy_temp_path /tmp/proxy;
  fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi;
  scgi_temp_path /tmp/scgi;
  access_log off;
  server_tokens off;
  server {{
    listen {WEB_TLS_PORT} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://127.0.0.1:{WEB_PORT};
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-Proto https;
    }}
  }}
}}
"""


def _meta(site: Site, name: str, component: str, sizing: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": site.namespace,
                            "labels": labels(component, name)}
    if sizing:
        meta["annotations"] = {"safehub.io/resource-requests-from": sizing}
    return meta


def deployment(site: Site, pod: PodSpec, replicas: int = 1) -> Manifest:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(site, pod.name, pod.component, pod.sizing),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": pod.name}},
            # One process per consumer group member or database writer at a time: the new
            # one starts when the old one has gone (its offsets and rows committed).
            "strategy": {"type": "Recreate"},
            "template": pod_template(site, pod),
        },
    }


def service(site: Site, name: str, component: str, ports: list[dict[str, Any]],
            headless: bool = False) -> Manifest:
    spec: dict[str, Any] = {"selector": {"app.kubernetes.io/name": name}, "ports": ports}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(site, name, component),
            "spec": spec}


def correlator(site: Site) -> list[Manifest]:
    pod = PodSpec(
        component=Service.CORRELATOR, name=CORRELATOR, args=["correlator"],
        env={**kafka_env(site, Service.CORRELATOR),
             "SAFEHUB_CORRELATOR_PARTITIONS": str(site.correlator_partitions),
             # Three copies of the table's changelog, as every other topic (topics.toml).
             "SAFEHUB_CORRELATOR_REPLICATION": "3",
             "SAFEHUB_CORRELATOR_DATA_DIR": f"{DATA}/correlator"},
        # The worker id is the pod's name, safehub-correlator-<ordinal>: stable across
        # restarts and different for every worker, so a restarted pod fences off its
        # predecessor's transactions and takes its partitions back as the same static member.
        extra_env=[{"name": "SAFEHUB_CORRELATOR_WORKER_ID",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        secrets=[kafka_password(Service.CORRELATOR)],
        # bench/results/correlation.json: one worker correlates 5,024 events/s using both
        # cores of the bench machine (faust in one process, the core in a child process);
        # state ~333 bytes per tracked child (core.state_bytes_per_tracked_child), so 1Gi
        # holds a region's ~1M tracked children with room for faust's buffers.
        cpu="1500m", memory="1536Mi",
        sizing=("bench/results/correlation.json: processor_events_per_s 5024 on 2 cores; "
                "state_bytes_per_tracked_child 333"),
        # A worker with an empty data folder rebuilds its table from the changelog before it
        # correlates; a region's table may take minutes.
        startup_s=1800,
        mounts=[{"name": "data", "mountPath": f"{DATA}/correlator"}],
    )
    sts = {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": _meta(site, CORRELATOR, Service.CORRELATOR, pod.sizing),
        "spec": {
            "serviceName": CORRELATOR,
            "replicas": site.correlators,
            # Static members do not need each other to start in order.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app.kubernetes.io/name": CORRELATOR}},
            "template": pod_template(site, pod),
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "10Gi"}}},
            }],
        },
    }
    headless = service(site, CORRELATOR, Service.CORRELATOR,
                       [{"name": "health", "port": HEALTH_PORT, "targetPort": "health"}],
                       headless=True)
    return [headless, sts]


def router(site: Site) -> list[Manifest]:
    pod = PodSpec(
        component=Service.ROUTER, name="safehub-router", args=["router"],
        env={**kafka_env(site, Service.ROUTER),
             "SAFEHUB_ROUTER_DATABASE_URL": site.database_url(database_name("router"))},
        secrets=[kafka_password(Service.ROUTER), pgpass()],
        # bench/results/latency.json by_stage.router: p50 27 ms, p99 75 ms at 1,000 events/s
        # on a shared 2-core machine: a fraction of a core.
        cpu="250m", memory="256Mi",
        sizing="bench/results/latency.json: by_stage.router p50 27 ms, p99 75 ms at 1,000 events/s",
    )
    return [deployment(site, pod)]


def _reid_key(hub: str) -> SecretFile:
    return SecretFile(f"safehub-reid-key-{hub}", "key", "reid", f"{hub}.key")


def inbox(site: Site, hub: str) -> list[Manifest]:
    pod = PodSpec(
        component="inbox", name=f"safehub-inbox-{hub}", args=["inbox"],
        env={**kafka_env(site, hub), "SAFEHUB_INBOX_AGENCIES": hub,
             "SAFEHUB_INBOX_DATABASE_URL": site.database_url(database_name("inbox", hub)),
             "SAFEHUB_REID_KEYS": f"{SECRETS}/reid"},
        secrets=[kafka_password(hub), pgpass(), _reid_key(hub)],
        # bench/results/latency.json by_stage.inbox: p50 9 ms, p99 25 ms per alert row.
        cpu="100m", memory="256Mi", labels={"safehub.io/hub": hub},
        sizing="bench/results/latency.json: by_stage.inbox p50 9 ms, p99 25 ms at 1,000 events/s",
    )
    return [deployment(site, pod)]


def web(site: Site, hub: str) -> list[Manifest]:
    name = f"safehub-web-{hub}"
    proxy = {
        "name": "tls-proxy", "image": PROXY_IMAGE,
        "ports": [{"name": "https", "containerPort": WEB_TLS_PORT}],
        "readinessProbe": {"tcpSocket": {"port": "https"}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "20m", "memory": "32Mi"},
                      "limits": {"memory": "64Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": "proxy-conf", "mountPath": "/etc/nginx/nginx.conf", "subPath": "nginx.conf",
             "readOnly": True},
            {"name": "web-tls", "mountPath": "/etc/safehub/web-tls", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod = PodSpec(
        component="web", name=name, args=["web", "--plain-http-behind-proxy"],
        env={**kafka_env(site, hub), "SAFEHUB_WEB_PORT": str(WEB_PORT),
             "SAFEHUB_WEB_USERS": f"{SECRETS}/web/users.toml",
             "SAFEHUB_INBOX_DATABASE_URL": site.database_url(database_name("inbox", hub)),
             "SAFEHUB_REID_KEYS": f"{SECRETS}/reid",
             "SAFEHUB_WEB_SECRET_FILE": f"{SECRETS}/web/session.secret"},
        secrets=[kafka_password(hub), pgpass(), _reid_key(hub),
                 SecretFile(f"safehub-web-users-{hub}", "users.toml", "web", "users.toml"),
                 SecretFile(f"safehub-web-session-{hub}", "secret", "web", "session.secret")],
        # Not benchmarked: a page per user action; sized like the inbox.
        cpu="100m", memory="256Mi", labels={"safehub.io/hub": hub, "safehub.io/ingress": "web"},
        sizing="not benchmarked: sized like the inbox",
        sidecars=[proxy],
        volumes=[{"name": "proxy-conf", "configMap": {"name": "safehub-web-proxy"}},
                 {"name": "web-tls", "secret": {"secretName": f"safehub-web-tls-{hub}",
                                                "defaultMode": 0o440}}],
    )
    svc = service(site, name, "web", [{"name": "https", "port": 443, "targetPort": "https"}])
    return [deployment(site, pod), svc]


def proxy_config(site: Site) -> Manifest:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(site, "safehub-web-proxy", "web"),
            "data": {"nginx.conf": proxy_conf("/etc/safehub/web-tls/tls.crt",
                                               "/etc/safehub/web-tls/tls.key")}}


def audit_sink(site: Site) -> list[Manifest]:
    pod = PodSpec(
        component=Service.AUDIT_SINK, name="safehub-audit-sink",
        args=["audit", "sink", "--key-file", f"{SECRETS}/audit/signing.key"],
        env={**kafka_env(site, Service.AUDIT_SINK),
             "SAFEHUB_AUDIT_DB_URL": site.database_url(database_name("audit"))},
        secrets=[kafka_password(Service.AUDIT_SINK), pgpass(),
                 SecretFile("safehub-audit-signing-key", "seed", "audit", "signing.key")],
        # Not in the benchmarks; one entry per decision, far below the correlator's rate.
        cpu="100m", memory="256Mi",
        sizing="not benchmarked: one entry per decision, far below the correlator rate",
    )
    return [deployment(site, pod)]


def keyservice(site: Site) -> list[Manifest]:
    name = "safehub-keyservice"
    keys = f"{SECRETS}/keyservice"
    pod = PodSpec(
        component=Service.KEYSERVICE, name=name,
        args=["keyservice", "serve", "--listen", f"0.0.0.0:{KEYSERVICE_PORT}",
              "--keys", f"{SECRETS}/keyservice-keys", "--clients", f"{SECRETS}/keyservice-clients",
              "--operator-secret", f"{keys}/operator.secret",
              "--tls-cert", f"{keys}/tls.crt", "--tls-key", f"{keys}/tls.key",
              "--quota-state", f"{DATA}/keyservice/quota.json"],
        env=kafka_env(site, Service.KEYSERVICE),
        secrets=[kafka_password(Service.KEYSERVICE),
                 SecretFile("safehub-keyservice-operator", "secret", "keyservice",
                            "operator.secret"),
                 SecretFile("safehub-keyservice-tls", "tls.crt", "keyservice", "tls.crt"),
                 SecretFile("safehub-keyservice-tls", "tls.key", "keyservice", "tls.key")],
        # Whole Secrets: one epoch-<n>.json per key epoch, one <agency>.secret per agency.
        secret_dirs={"keyservice-keys": "safehub-keyservice-keys",
                     "keyservice-clients": "safehub-keyservice-clients"},
        # bench/results/keyservice.json: 49-51 us of service CPU per element over HTTPS;
        # 10,177 elements/s (two calls in flight) is half a core.
        cpu="500m", memory="256Mi", labels={"safehub.io/ingress": "keyservice"},
        sizing=("bench/results/keyservice.json: https server_cpu_us_per_element 49-51, "
                "10,177 elements/s"),
        mounts=[{"name": "quota", "mountPath": f"{DATA}/keyservice"}],
        volumes=[{"name": "quota", "persistentVolumeClaim": {"claimName": f"{name}-quota"}}],
    )
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": _meta(site, f"{name}-quota", Service.KEYSERVICE),
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "1Gi"}}}}
    svc = service(site, name, Service.KEYSERVICE,
                  [{"name": "https", "port": KEYSERVICE_PORT, "targetPort": "https"}])
    dep = deployment(site, pod)
    dep["spec"]["template"]["spec"]["containers"][0]["ports"].append(
        {"name": "https", "containerPort": KEYSERVICE_PORT})
    return [claim, dep, svc]


def workloads(site: Site) -> list[Manifest]:
    out = [proxy_config(site), *correlator(site), *router(site), *audit_sink(site),
           *keyservice(site)]
    for hub in site.registry.hubs:
        out += inbox(site, hub) + web(site, hub)
    return out
