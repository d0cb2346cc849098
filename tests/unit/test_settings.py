"""safehub.settings: every rule's error names its variable, defaults hold, secrets stay hidden,
no module reads a SAFEHUB_* variable but through the loader, and docs/settings.md is current."""

from __future__ import annotations

import os
import re
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest

from safehub.connection import KafkaConnection, write_secret
from safehub.errors import ConfigError
from safehub.settings import (
    AuditEnv,
    CorrelatorEnv,
    HealthEnv,
    InboxEnv,
    KafkaEnv,
    LinkageKeyEnv,
    LogEnv,
    PublishEnv,
    ReidEnv,
    RouterEnv,
    Secret,
    TopicsEnv,
    WebEnv,
    load,
)
from safehub.settings.catalogue import CLASSES, markdown
from safehub.settings.loader import SecretFile, default_of, read, specs

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "safehub"
SETTINGS = PACKAGE / "settings"


@pytest.mark.parametrize(("cls", "name", "bad", "rule"), [
    (HealthEnv, "SAFEHUB_HEALTH_PORT", "abc", "must be an integer between 0 and 65535, got 'abc'"),
    (HealthEnv, "SAFEHUB_HEALTH_PORT", "70000", "an integer between 0 and 65535"),
    (HealthEnv, "SAFEHUB_HEALTH_STALL_S", "0", "a number of seconds more than 0"),
    (HealthEnv, "SAFEHUB_HEALTH_STALL_S", "nan", "a number of seconds more than 0"),
    (LogEnv, "SAFEHUB_LOG_FORMAT", "xml", "one of text, json"),
    (LogEnv, "SAFEHUB_FAUST_LOGLEVEL", "loud", "one of debug, info"),
    (KafkaEnv, "SAFEHUB_KAFKA_BOOTSTRAP", "broker", "host:port[,host:port...]"),
    (KafkaEnv, "SAFEHUB_KAFKA_BOOTSTRAP", "a:1,b", "host:port[,host:port...]"),
    (RouterEnv, "SAFEHUB_ROUTER_MAX_OUTAGE_S", "-1", "a number of seconds of at least 0"),
    (RouterEnv, "SAFEHUB_ROUTER_DATABASE_URL", "router.db", "a URL starting with sqlite"),
    (InboxEnv, "SAFEHUB_REID_RETENTION_DAYS", "4000", "more than 0 and at most 3650"),
    (InboxEnv, "SAFEHUB_INBOX_AGENCIES", " , ", "a comma-separated list of names"),
    (WebEnv, "SAFEHUB_WEB_PORT", "0", "an integer between 1 and 65535"),
    (AuditEnv, "SAFEHUB_AUDIT_CHECKPOINT_EVERY", "0", "an integer of at least 1"),
    (PublishEnv, "SAFEHUB_KEYSERVICE_URL", "http://x", "a URL starting with https"),
    (PublishEnv, "SAFEHUB_HMAC_EPOCHS", "0;1", "epochs like 0,1"),
    (LinkageKeyEnv, "SAFEHUB_LINKAGE_KEY_EPOCH", "-2", "an integer of at least 0"),
    (ReidEnv, "SAFEHUB_REID_LISTEN", "8090", "host:port"),
    (CorrelatorEnv, "SAFEHUB_CORRELATOR_WORKER_ID", "two words", "1-64 letters"),
    (CorrelatorEnv, "SAFEHUB_CORRELATOR_PARTITIONS", "six", "an integer of at least 1"),
])
def test_a_bad_value_names_the_variable_and_its_rule(cls: type[Any], name: str, bad: str,
                                                      rule: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(cls, {name: bad})
    assert str(exc.value).startswith(f"{name} must be ")
    assert rule in str(exc.value)


def test_defaults_and_blanks() -> None:
    assert load(HealthEnv, {}) == HealthEnv(port=None, host="127.0.0.1", stall_s=120.0)
    router = load(RouterEnv, {})
    assert router.database_url == "sqlite:///safehub-router.db"
    assert router.max_outage_s == 900.0 and router.group is None
    assert router.routing_table.name == "routing.toml" and router.routing_table.is_file()
    assert load(TopicsEnv, {}).prefix == ""
    # A blank variable is an unset one: the default applies.
    assert load(InboxEnv, {"SAFEHUB_INBOX_DATABASE_URL": "  ", "SAFEHUB_INBOX_AGENCIES": ""}
                ) == load(InboxEnv, {})
    assert load(InboxEnv, {"SAFEHUB_INBOX_AGENCIES": " hub-a, ,hub-b "}).agencies == (
        "hub-a", "hub-b")
    assert load(LogEnv, {"SAFEHUB_LOG_FORMAT": "JSON"}).format == "json"
    assert load(CorrelatorEnv, {"SAFEHUB_CORRELATOR_WEB_PORT": "6066"}).web_port == 6066
    # The figures are explained beside the correlator's code, and must be the loader's.
    source = (PACKAGE / "services" / "correlator" / "command.py").read_text()
    figures = {name: int(value) for name, value in
               re.findall(r"^(DEFAULT_BATCH|DEFAULT_HELD_MIB) = (\d+)$", source, re.M)}
    assert figures == {"DEFAULT_BATCH": load(CorrelatorEnv, {}).batch,
                       "DEFAULT_HELD_MIB": load(CorrelatorEnv, {}).held_mib}
    with pytest.raises(FrozenInstanceError):
        router.max_outage_s = 1.0  # type: ignore[misc]


def test_every_default_obeys_its_own_rule() -> None:
    for _, cls in CLASSES:
        for f, spec in specs(cls):
            default = default_of(f)
            if default is None or default == ():
                continue
            text = ",".join(default) if isinstance(default, tuple) else str(default)
            if spec.kind.rule.startswith("the path of an existing"):
                continue  # exists where the service runs, not necessarily here
            assert spec.kind.parse(text) is not None, spec.name


def test_one_variable_has_one_meaning_wherever_it_is_read() -> None:
    seen: dict[str, tuple[str, Any]] = {}
    for _, cls in CLASSES:
        names = [spec.name for _, spec in specs(cls)]
        assert len(names) == len(set(names)), cls
        for f, spec in specs(cls):
            here = (spec.kind.rule, default_of(f))
            assert seen.setdefault(spec.name, here) == here, spec.name
            assert re.fullmatch(r"SAFEHUB_[A-Z0-9_]+", spec.name)


def test_secrets_never_show(tmp_path: Path) -> None:
    value = "s3cret-VALUE-4d1f"
    web = load(WebEnv, {"SAFEHUB_WEB_SECRET": value})
    assert web.secret == Secret(value) and web.secret is not None
    assert web.secret.reveal() == value
    for text in (repr(web), str(web), repr(web.secret), str(web.secret), f"{web.secret}"):
        assert value not in text
    key = tmp_path / "session.key"
    write_secret(key, value)
    assert load(WebEnv, {"SAFEHUB_WEB_SECRET_FILE": str(key)}).secret_file == Secret(value)
    assert value not in repr(load(LinkageKeyEnv, {"SAFEHUB_LINKAGE_KEY": value}))
    assert value not in repr(load(AuditEnv, {"SAFEHUB_AUDIT_SIGNING_KEY": value}))
    # A secret file anyone may read is refused, naming the variable, never the content.
    key.chmod(0o644)
    with pytest.raises(ConfigError) as exc:
        load(WebEnv, {"SAFEHUB_WEB_SECRET_FILE": str(key)})
    assert str(exc.value).startswith("SAFEHUB_WEB_SECRET_FILE must be the path of a secret file")
    assert "chmod 600" in str(exc.value) and value not in str(exc.value)
    # A database URL may hold a password: a bad one is not echoed either.
    with pytest.raises(ConfigError) as exc:
        load(RouterEnv, {"SAFEHUB_ROUTER_DATABASE_URL": f"postgres:{value}@db/x"})
    assert "SAFEHUB_ROUTER_DATABASE_URL" in str(exc.value) and value not in str(exc.value)
    assert value not in repr(load(RouterEnv, {
        "SAFEHUB_ROUTER_DATABASE_URL": f"postgresql+psycopg2://u:{value}@db/x"}))


def test_kafka_connection_reads_through_the_loader(tmp_path: Path) -> None:
    kafka = KafkaConnection.from_env("router", {
        "SAFEHUB_KAFKA_BOOTSTRAP": "b1:9093,b2:9093", "SAFEHUB_KAFKA_SECRETS": str(tmp_path),
        "SAFEHUB_KAFKA_CA_FILE": str(tmp_path / "ca.pem")})
    assert kafka.bootstrap == "b1:9093,b2:9093" and kafka.principal == "router"
    assert kafka.password_file == tmp_path / "router.password"
    with pytest.raises(ConfigError, match="SAFEHUB_KAFKA_BOOTSTRAP must be host:port"):
        KafkaConnection.from_env("router", {"SAFEHUB_KAFKA_BOOTSTRAP": "nowhere"})


def _sources() -> list[Path]:
    """Every module of the package, through its symlinked folders (services, deploy...)."""
    found = []
    for folder, _, files in os.walk(PACKAGE, followlinks=True):
        here = Path(folder)
        if here == SETTINGS or SETTINGS in here.parents:
            continue
        found += [here / f for f in files if f.endswith(".py")]
    return found


# Reading a variable: os.environ/os.getenv with anything, or a SAFEHUB_* name looked up in a
# mapping (env.get("SAFEHUB_X"), env["SAFEHUB_X"] not followed by an assignment).
_READS = re.compile(
    r"os\.environ\.get\(|os\.getenv\(|os\.environ\[|environ\.get\(|"
    r"\.get\(\s*['\"]SAFEHUB_|\[\s*['\"]SAFEHUB_\w*['\"]\s*\](?!\s*=[^=])")
# The only reads left, each for a reason.
_ALLOWED = {
    # XDG_* are the desktop's conventions for where state and caches go, not settings of ours;
    # SAFEHUB_STATE and SAFEHUB_CACHE, which override them, go through the loader.
    ("connection.py", "XDG_STATE_HOME"),
    ("launcher.py", "XDG_CACHE_HOME"),
}


def test_no_module_reads_a_safehub_variable_but_through_the_loader() -> None:
    offenders = []
    for path in _sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not _READS.search(line):
                continue
            if any(path.name == name and word in line for name, word in _ALLOWED):
                continue
            offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "read these through safehub.settings:\n" + "\n".join(offenders)


def test_every_safehub_variable_named_in_the_code_is_declared() -> None:
    """A variable the code sets for a child, or names in a message, is one the loader knows:
    a misspelt name in a deployment file would otherwise be silently ignored."""
    declared = {spec.name for _, cls in CLASSES for _, spec in specs(cls)}
    named: dict[str, str] = {}
    for path in _sources():
        for name in re.findall(r"['\"](SAFEHUB_[A-Z0-9_]*[A-Z0-9])['\"]", path.read_text()):
            named.setdefault(name, str(path.relative_to(PACKAGE)))
    assert {n: p for n, p in named.items() if n not in declared} == {}


def test_the_settings_table_is_current() -> None:
    text = (ROOT / "docs" / "settings.md").read_text()
    assert text == markdown(), "regenerate: python -m safehub.settings > docs/settings.md"


def _deployment_env(node: Any) -> list[tuple[str, str]]:
    """Every literal (name, value) a committed deployment file gives a container."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                found += [(e["name"], str(e["value"])) for e in value
                          if isinstance(e, dict) and "value" in e]
            elif key == "environment" and isinstance(value, dict):
                found += [(k, str(v)) for k, v in value.items()]
            else:
                found += _deployment_env(value)
    elif isinstance(node, list):
        for item in node:
            found += _deployment_env(item)
    return found


def test_the_deployment_files_give_values_the_loader_accepts() -> None:
    import yaml

    by_name = {spec.name: spec for _, cls in CLASSES for _, spec in specs(cls)}
    files = sorted((ROOT / "deploy" / "k8s").rglob("*.yaml")) + sorted(
        (ROOT / "deploy" / "compose").rglob("*.yaml"))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the files are large
    given = [pair for path in files for doc in yaml.load_all(path.read_text(), Loader=loader)
             for pair in _deployment_env(doc)]
    assert any(name == "SAFEHUB_WEB_PORT" for name, _ in given)  # the walk finds them
    for name, value in given:
        if name.startswith("SAFEHUB_"):
            assert name in by_name, name
            if not isinstance(by_name[name].kind, SecretFile):  # read on the target host
                read(by_name[name], value)  # raises ConfigError naming it
