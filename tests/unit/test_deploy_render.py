"""The deployment files (`safehub deploy render`): current with the registry, valid against
the Kubernetes schemas (kubernetes-validate, strict, offline) and the project's Strimzi schemas
(deploy/schemas/strimzi), KafkaUser ACLs equal to deploy/acl.py's matrix, and a compose file
that holds together. No cluster, no Docker engine, no network."""

from __future__ import annotations

import functools
import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from safehub.cli import main
from safehub.deploy.acl import Grant, grants
from safehub.deploy.registry import ADMIN, Kind, Party, load_registry
from safehub.deploy.render import strimzi
from safehub.deploy.render.command import DEPLOY, rendered
from safehub.deploy.render.compose import compose
from safehub.deploy.render.manifests import k8s_files
from safehub.deploy.render.site import Site
from safehub.deploy.topics import registry_specs
from safehub.schemas.vocabulary import Sector

KUBERNETES = "1.33.0"  # a version kubernetes-validate bundles; the oldest the files target
STRIMZI_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
SCHEMAS = DEPLOY / "schemas" / "strimzi"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation must work offline: any connection attempt fails the test."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the deployment checks tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def site() -> Site:
    return Site(load_registry())


@pytest.fixture(scope="module")
def manifests(site: Site) -> list[dict[str, Any]]:
    return [m for docs in k8s_files(site).values() for m in docs]


def _committed(relative: str) -> list[Any]:
    return list(yaml.safe_load_all((DEPLOY / relative).read_text()))


def test_committed_files_equal_a_fresh_render(site: Site) -> None:
    for relative, text in rendered(site).items():
        path = DEPLOY / relative
        assert path.is_file() and path.read_text() == text, (
            f"{path} is stale: run `safehub deploy render` after changing deploy/agencies.toml, "
            "deploy/topics.toml or deploy/acl.py, and commit the result")


def test_render_check_is_a_no_op_on_the_committed_files(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    assert main(["deploy", "render", "--check"]) == 0
    assert "stale" not in capsys.readouterr().out


def test_render_is_deterministic(site: Site) -> None:
    assert rendered(site) == rendered(Site(load_registry()))


def test_core_kinds_are_valid_kubernetes_strict(manifests: list[dict[str, Any]]) -> None:
    core = [m for m in manifests if m["kind"] not in STRIMZI_KINDS]
    kinds = {m["kind"] for m in core}
    assert {"Deployment", "StatefulSet", "Service", "NetworkPolicy", "ConfigMap",
            "PersistentVolumeClaim"} <= kinds
    for m in core:
        kubernetes_validate.validate(m, KUBERNETES, strict=True)


def test_strict_kubernetes_validation_catches_a_misspelt_field(
        manifests: list[dict[str, Any]]) -> None:
    deployment = json.loads(json.dumps(next(m for m in manifests if m["kind"] == "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


@functools.cache
def _strimzi_validator(kind: str) -> jsonschema.Draft202012Validator:
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{kind.lower()}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_strimzi_kinds_match_the_projects_strimzi_schemas(
        manifests: list[dict[str, Any]]) -> None:
    seen = set()
    for m in manifests:
        if m["kind"] in STRIMZI_KINDS:
            _strimzi_validator(m["kind"]).validate(m)
            seen.add(m["kind"])
    assert seen == STRIMZI_KINDS


@pytest.mark.parametrize("kind, path, value", [
    ("KafkaTopic", ("spec", "partition"), 6),  # a typo Strimzi's API server would prune
    ("KafkaUser", ("spec", "authorization", "acls", 0, "operations"), ["Reed"]),
    ("KafkaUser", ("spec", "authorization", "acls", 0, "resource", "patternType"), "prefixed"),
    ("Kafka", ("spec", "kafka", "listeners", 0, "authentication", "type"), "scram-sha-256"),
    ("KafkaNodePool", ("spec", "roles"), ["zookeeper"]),
    # Strimzi manages security settings itself and ignores these
    ("Kafka", ("spec", "kafka", "config", "ssl.client.auth"), "required"),
    ("Kafka", ("spec", "kafka", "config", "super.users"), "User:someone"),
])
def test_strimzi_schemas_refuse_what_strimzi_would_not_take(
        manifests: list[dict[str, Any]], kind: str, path: tuple[Any, ...], value: Any) -> None:
    m = json.loads(json.dumps(next(m for m in manifests if m["kind"] == kind
                                   and (kind != "KafkaUser" or "authorization" in m["spec"]))))
    target = m
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        _strimzi_validator(kind).validate(m)


def _users(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == "KafkaUser"}


def _check_users_equal_matrix(site: Site, users: dict[str, dict[str, Any]]) -> None:
    matrix = grants(site.registry)
    principals = {p.principal for p in site.registry.parties}
    assert set(users) == principals | {ADMIN}
    for principal in sorted(principals):
        expected = {g for g in matrix if g.principal == principal}
        actual = strimzi.grants_of_user(principal, users[principal])
        assert actual - expected == set(), f"{principal}: ACLs beyond acl.py's matrix"
        assert expected - actual == set(), f"{principal}: acl.py grants missing"
    # The admin is Kafka's super user, with no ACLs of its own.
    assert strimzi.grants_of_user(ADMIN, users[ADMIN]) == set()
    assert "authorization" not in users[ADMIN]["spec"]


def test_kafka_users_acls_equal_the_acl_matrix(site: Site,
                                               manifests: list[dict[str, Any]]) -> None:
    _check_users_equal_matrix(site, _users(manifests))
    # and the committed file says the same
    committed = {m["metadata"]["name"]: m for m in _committed("k8s/kafka-users.yaml")}
    _check_users_equal_matrix(site, committed)


def test_a_new_agency_gets_its_user_topics_and_correlator_read(site: Site) -> None:
    grown = Site(site.registry.with_parties([Party("police-new-force", Kind.AGENCY,
                                                   Sector.POLICE)]))
    files = k8s_files(grown)
    users = {m["metadata"]["name"]: m for m in files["kafka-users.yaml"]}
    _check_users_equal_matrix(grown, users)
    topics = {m["spec"]["topicName"] for m in files["kafka-topics.yaml"]}
    assert {"ingress.police-new-force", "reid-requests.police-new-force"} <= topics
    assert Grant("correlator", strimzi.Resource.TOPIC, "ingress.police-new-force",
                 strimzi.Operation.READ) in strimzi.grants_of_user("correlator",
                                                                   users["correlator"])


def test_topics_are_those_of_topics_toml_with_three_replicas(
        site: Site, manifests: list[dict[str, Any]]) -> None:
    topics = {m["spec"]["topicName"]: m["spec"] for m in manifests if m["kind"] == "KafkaTopic"}
    specs = registry_specs(site.registry, brokers=3)
    assert set(topics) == {s.name for s in specs}
    for s in specs:
        t = topics[s.name]
        assert t["partitions"] == s.partitions and t["replicas"] == 3
        assert t["config"]["min.insync.replicas"] == 2
        assert str(t["config"]["retention.ms"]) == s.config["retention.ms"]
        assert t["config"]["cleanup.policy"] == s.config["cleanup.policy"]


def test_kafka_cluster_is_kraft_tls_scram_simple_authorization(
        manifests: list[dict[str, Any]]) -> None:
    kafka = next(m for m in manifests if m["kind"] == "Kafka")
    assert kafka["metadata"]["annotations"] == {"strimzi.io/node-pools": "enabled",
                                                "strimzi.io/kraft": "enabled"}
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener["tls"] is True and listener["authentication"]["type"] == "scram-sha-512"
    assert kafka["spec"]["kafka"]["authorization"] == {"type": "simple", "superUsers": [ADMIN]}
    pool = next(m for m in manifests if m["kind"] == "KafkaNodePool")
    assert pool["spec"]["replicas"] == 3
    assert set(pool["spec"]["roles"]) == {"broker", "controller"}
    assert pool["spec"]["storage"]["volumes"][0]["type"] == "persistent-claim"


def _pods(manifests: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for m in manifests:
        if m["kind"] in ("Deployment", "StatefulSet"):
            yield m["metadata"]["name"], m["spec"]["template"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("workers", [1, 3, 6])
def test_correlator_is_a_statefulset_with_stable_worker_ids(site: Site, workers: int) -> None:
    files = k8s_files(Site(site.registry, correlators=workers))
    sts = next(m for m in files["workloads.yaml"] if m["kind"] == "StatefulSet")
    assert sts["spec"]["replicas"] == workers
    env = _env(sts["spec"]["template"]["spec"]["containers"][0])
    # safehub-correlator-<ordinal>: stable across restarts, one per worker
    assert env["SAFEHUB_CORRELATOR_WORKER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["SAFEHUB_CORRELATOR_REPLICATION"] == "3"
    assert env["SAFEHUB_KAFKA_PRINCIPAL"] == "correlator"


def test_too_many_correlators_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "render", "--check", "--correlators", "7"]) == 1
    assert "--correlators must be 1 to 6" in capsys.readouterr().err


def test_every_hub_has_an_inbox_and_a_web_page_with_a_service(
        site: Site, manifests: list[dict[str, Any]]) -> None:
    names = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    for hub in site.registry.hubs:
        assert ("Deployment", f"safehub-inbox-{hub}") in names
        assert ("Deployment", f"safehub-web-{hub}") in names
        assert ("Service", f"safehub-web-{hub}") in names
    for name in ("safehub-router", "safehub-audit-sink", "safehub-keyservice"):
        assert ("Deployment", name) in names
    assert ("Service", "safehub-keyservice") in names


def test_probes_metrics_and_resources_on_every_service(manifests: list[dict[str, Any]]) -> None:
    for name, template in _pods(manifests):
        assert template["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        main_container = template["spec"]["containers"][0]
        assert {"name": "health", "containerPort": 9102} in main_container["ports"], name
        assert main_container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
        assert main_container["readinessProbe"]["httpGet"] == {"path": "/readyz",
                                                               "port": "health"}
        env = _env(main_container)
        assert env["SAFEHUB_HEALTH_PORT"] == "9102" and env["SAFEHUB_HEALTH_HOST"] == "0.0.0.0"
        assert main_container["resources"]["requests"]["cpu"], name


def test_secrets_are_files_never_environment_values(manifests: list[dict[str, Any]]) -> None:
    for name, template in _pods(manifests):
        main_container = template["spec"]["containers"][0]
        env = _env(main_container)
        principal = env.get("SAFEHUB_KAFKA_PRINCIPAL")
        assert env["SAFEHUB_KAFKA_SECRETS"].startswith("/run/safehub/secrets/"), name
        projected = next(v for v in template["spec"]["volumes"] if v["name"] == "secrets-src")
        paths = {i["path"] for s in projected["projected"]["sources"]
                 for i in s["secret"]["items"]}
        if principal:
            assert f"kafka/{principal}.password" in paths, name
        for key, value in env.items():
            if isinstance(value, str):
                assert "password" not in value.lower() or value.endswith(".password") \
                    or value.startswith("/"), (name, key)
                assert "@" not in value or ":" not in value.split("@")[0].split("//")[-1], (
                    f"{name}: {key} holds a credential in a URL")
        # The copies the service reads are 0600 and its own (safehub.connection.read_secret).
        init = template["spec"]["initContainers"][0]
        assert "install -m 0600" in init["command"][-1]
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True


def test_network_policies_deny_by_default_and_allow_dns_and_brokers(
        site: Site, manifests: list[dict[str, Any]]) -> None:
    policies = {m["metadata"]["name"]: m["spec"] for m in manifests
                if m["kind"] == "NetworkPolicy"}
    deny = policies["safehub-default-deny"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny and "egress" not in deny
    dns = policies["safehub-dns"]["egress"][0]
    assert {"protocol": "UDP", "port": 53} in dns["ports"]
    kafka = policies["safehub-kafka-clients"]["egress"]
    assert kafka == [{"to": [{"podSelector": {"matchLabels": {
        "strimzi.io/cluster": site.cluster, "strimzi.io/kind": "Kafka"}}}],
        "ports": [{"protocol": "TCP", "port": 9093}]}]
    # every safehub pod is under the default deny, and only the web pages and the key
    # service take connections from outside
    for name, template in _pods(manifests):
        assert "safehub.io/component" in template["metadata"]["labels"], name
    open_ingress = {name for name, p in policies.items()
                    if any("from" not in rule for rule in p.get("ingress", []))}
    assert open_ingress == {"safehub-web-ingress", "safehub-keyservice-ingress"}


# -- compose -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose_file() -> dict[str, Any]:
    (doc,) = _committed("compose/compose.yaml")
    assert isinstance(doc, dict)
    return doc


def test_compose_file_equals_the_renderer(site: Site, compose_file: dict[str, Any]) -> None:
    assert json.loads(json.dumps(compose(site), default=str)) == compose_file


def test_compose_services_hold_together(compose_file: dict[str, Any]) -> None:
    services = compose_file["services"]
    assert {"kafka", "setup", "correlator", "router", "inbox", "web", "audit-sink",
            "keyservice", "postgres"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert env["CLUSTER_ID"]  # the image refuses KRaft mode without one
    assert "CLIENT:SASL_SSL" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert "PLAINTEXT" not in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    setup = " ".join(services["setup"]["command"])
    assert "safehub access apply" in setup and "safehub topics create" in setup
    declared = set(compose_file["secrets"])
    for name, svc in services.items():
        assert svc.get("image"), name
        assert svc.get("command") or name in ("kafka", "postgres", "web-proxy"), name
        assert set(svc.get("secrets", [])) <= declared, name
        for dep in svc.get("depends_on", {}):
            assert dep in services, (name, dep)
        for port in svc.get("ports", []):
            if name != "web":
                assert str(port).startswith("127.0.0.1:"), (name, port)
        if svc.get("image") == compose_file["services"]["router"]["image"] and name != "setup":
            assert services[name]["depends_on"]["setup"]["condition"] == \
                "service_completed_successfully"
    for spec in compose_file["secrets"].values():
        assert spec["file"].startswith("./secrets/")
    assert not any(k for svc in services.values() for k in svc.get("environment", {})
                   if "PASSWORD" in k and not k.endswith("_FILE"))


def test_compose_escapes_every_dollar_from_interpolation() -> None:
    # `$host` (nginx), `$1` (Kafka's principal mapping rule), `$(cat ...)` (a shell) are the
    # programs' own: compose would substitute (or refuse) a single `$`.
    text = (DEPLOY / "compose" / "compose.yaml").read_text()
    assert "$$host" in text
    assert re.search(r"(?<!\$)\$(?!\$)", text.replace("$$", "")) is None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True,
                                        timeout=30).returncode != 0:
        pytest.skip("no `docker compose` here: the structural checks above stand in for it")
    folder = tmp_path / "compose"
    shutil.copytree(DEPLOY / "compose", folder)
    (folder / "secrets").mkdir(exist_ok=True)
    (doc,) = _committed("compose/compose.yaml")
    for spec in doc["secrets"].values():
        (folder / spec["file"]).touch()
    result = subprocess.run([docker, "compose", "-f", str(folder / "compose.yaml"), "config",
                             "--quiet"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_workload_names_the_figure_its_requests_come_from(
        manifests: list[dict[str, Any]]) -> None:
    for m in manifests:
        if m["kind"] in ("Deployment", "StatefulSet"):
            source = m["metadata"]["annotations"]["safehub.io/resource-requests-from"]
            assert source.startswith(("bench/results/", "not benchmarked")), m["metadata"]["name"]
            if source.startswith("bench/results/"):
                assert (DEPLOY.parent / source.split(":")[0]).is_file(), source


def test_the_init_script_copies_secrets_as_kubelet_lays_them_out(tmp_path: Path) -> None:
    """A Secret volume holds `..data` -> `..<timestamp>/` and one link per key; the copies
    must be 0600 files in the same folders, and the links and `..data` left behind."""
    from safehub.deploy.render.pods import COPY_SECRETS

    source, out = tmp_path / "src", tmp_path / "out"
    projected = source / "files"
    (projected / "..2026_12_05" / "kafka").mkdir(parents=True)
    (projected / "..2026_12_05" / "kafka" / "router.password").write_text("pw\n")
    (projected / "..data").symlink_to("..2026_12_05")
    (projected / "kafka").symlink_to("..data/kafka")
    whole = source / "dirs" / "keyservice-keys"
    (whole / "..2026_12_06").mkdir(parents=True)
    (whole / "..2026_12_06" / "epoch-1.json").write_text("{}\n")
    (whole / "..data").symlink_to("..2026_12_06")
    (whole / "epoch-1.json").symlink_to("..data/epoch-1.json")
    out.mkdir()
    script = COPY_SECRETS.replace("/secrets-src", str(source)).replace(
        "/run/safehub/secrets", str(out))
    subprocess.run(["sh", "-c", script], check=True, timeout=30)
    copies = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert copies == ["kafka/router.password", "keyservice-keys/epoch-1.json"]
    for p in out.rglob("*"):
        assert not p.is_symlink()
        assert (p.stat().st_mode & 0o777) == (0o700 if p.is_dir() else 0o600), p
    assert (out / "kafka" / "router.password").read_text() == "pw\n"
