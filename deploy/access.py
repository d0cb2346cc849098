"""`safehub access apply|show|client-config`: principals and ACLs from the agency registry.

- `apply`: for every party, a password file `<secrets>/<id>.password` (0600, made once), its
  SCRAM-SHA-512 credential on the cluster, and exactly the ACLs deploy/acl.py derives; any ACL
  on this namespace's resources that the registry does not ask for is deleted, and a party
  removed from the registry loses its SCRAM credential too. Running it twice changes nothing
  the second time.
- `show`: the principal x topic matrix as the cluster holds it, plus groups and transactional
  ids.
- `client-config PRINCIPAL`: the kafka-python keyword arguments for that principal as JSON,
  password included: what an agency's integration engineer needs to connect a case system.

Run as the admin principal (SAFEHUB_KAFKA_PRINCIPAL=admin, the default here).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from kafka.errors import KafkaError

from safehub.bus import make_admin
from safehub.connection import KafkaConnection, ensure_password
from safehub.deploy.acl import Grant, Operation, Pattern, Resource, grants, matrix, principals
from safehub.deploy.registry import ADMIN, REGISTRY_FILE, Registry, load_registry
from safehub.errors import BrokerError, ConfigError
from safehub.settings import TopicsEnv, load

_RESOURCE = {Resource.TOPIC: ResourceType.TOPIC, Resource.GROUP: ResourceType.GROUP,
             Resource.TRANSACTIONAL_ID: ResourceType.TRANSACTIONAL_ID}
_OPERATION = {Operation.READ: ACLOperation.READ, Operation.WRITE: ACLOperation.WRITE,
              Operation.DESCRIBE: ACLOperation.DESCRIBE}
_PATTERN = {Pattern.LITERAL: ACLResourcePatternType.LITERAL,
            Pattern.PREFIXED: ACLResourcePatternType.PREFIXED}


@dataclass(frozen=True, slots=True)
class Applied:
    credentials: int  # principals whose SCRAM credential was set
    created: int  # ACLs added
    deleted: int  # ACLs removed (no longer in the registry)
    revoked: tuple[str, ...] = ()  # removed parties whose SCRAM credential was deleted


def to_acl(g: Grant) -> ACL:
    return ACL(f"User:{g.principal}", "*", _OPERATION[g.operation], ACLPermissionType.ALLOW,
               ResourcePattern(_RESOURCE[g.resource], g.name, _PATTERN[g.pattern]))


def from_acl(acl: Any) -> Grant | None:
    """The grant an ACL on the cluster expresses, or None if it is not one we would make."""
    principal = str(acl.principal)
    if not principal.startswith("User:") or acl.permission_type != ACLPermissionType.ALLOW:
        return None
    rp = acl.resource_pattern
    try:
        resource = next(k for k, v in _RESOURCE.items() if v == rp.resource_type)
        operation = next(k for k, v in _OPERATION.items() if v == acl.operation)
        pattern = next(k for k, v in _PATTERN.items() if v == rp.pattern_type)
    except StopIteration:
        return None
    return Grant(principal.removeprefix("User:"), resource, str(rp.resource_name), operation,
                 pattern)


def cluster_grants(admin: Any) -> list[Any]:
    everything = ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY,
                           ResourcePatternFilter(ResourceType.ANY, None,
                                                 ACLResourcePatternType.ANY))
    acls, _ = admin.describe_acls(everything)  # raises on an error
    return list(acls)


def apply(kafka: KafkaConnection, registry: Registry, prefix: str = "",
          secrets_dir: Path | None = None) -> Applied:
    """Make the cluster's credentials and ACLs for this registry what it asks for."""
    folder = secrets_dir or kafka.password_file.parent
    names = principals(registry)
    upserts = [UserScramCredentialUpsertion(p, ScramMechanism.SCRAM_SHA_512,
                                            ensure_password(folder, p)) for p in names]
    wanted = set(grants(registry, prefix))
    admin = make_admin(kafka, "safehub-access")
    try:
        failed = {u: e for u, e in admin.alter_user_scram_credentials(upserts).items() if e}
        if failed:
            raise BrokerError("setting SCRAM credentials failed: "
                              + "; ".join(f"{u}: {e}" for u, e in sorted(failed.items())))
        held = {g for g in (from_acl(a) for a in cluster_grants(admin)) if g is not None}
        # Every ACL on this namespace's resources is the registry's to decide, including those
        # of a party since removed from it: a dropped agency must lose its write access.
        ours = {g for g in held if g.name.startswith(prefix)}
        missing = sorted(wanted - held)
        stale = sorted(ours - wanted)
        if missing:
            result = admin.create_acls([to_acl(g) for g in missing])
            if result.get("failed"):
                raise BrokerError(f"creating {len(result['failed'])} ACLs failed: "
                                  f"{result['failed'][0]}")
        if stale:
            admin.delete_acls([to_acl(g) for g in stale])
        # A removed party that holds no ACL anywhere any more cannot sign in either.
        remaining = {g.principal for g in (held - set(stale)) | wanted}
        orphans = sorted({g.principal for g in stale} - remaining - {ADMIN} - set(names))
        if orphans:
            admin.alter_user_scram_credentials(
                [UserScramCredentialDeletion(p, ScramMechanism.SCRAM_SHA_512) for p in orphans])
        _wait_effective(admin, names, wanted, set(stale))
    except KafkaError as exc:
        raise BrokerError(f"applying access failed: {type(exc).__name__}: {exc}") from exc
    finally:
        admin.close()
    return Applied(len(upserts), len(missing), len(stale), tuple(orphans))


def _wait_effective(admin: Any, names: list[str], wanted: set[Grant], gone: set[Grant],
                    timeout: float = 30.0) -> None:
    """Return once the broker answers with the new credentials and ACLs: they travel through
    the metadata log, and a client that connects the moment `apply` returns must find them
    (a test's first write as a new principal was refused once without this)."""
    deadline = time.monotonic() + timeout
    while True:
        users = admin.describe_user_scram_credentials(names)
        held = {g for g in (from_acl(a) for a in cluster_grants(admin)) if g is not None}
        if (all(not users.get(n, {}).get("error") for n in names)
                and wanted <= held and not gone & held):
            return
        if time.monotonic() > deadline:
            raise BrokerError(f"credentials and ACLs not in effect after {timeout:.0f} s")
        time.sleep(0.2)


def held_grants(kafka: KafkaConnection) -> list[Grant]:
    admin = make_admin(kafka, "safehub-access")
    try:
        return sorted(g for g in (from_acl(a) for a in cluster_grants(admin)) if g is not None)
    except KafkaError as exc:
        raise BrokerError(f"describing ACLs failed: {type(exc).__name__}: {exc}") from exc
    finally:
        admin.close()


def show(registry: Registry, prefix: str, given: Iterable[Grant]) -> str:
    given = list(given)
    rows = matrix(registry, prefix, given)
    width = max((len(p) for p, _, _ in rows), default=10)
    lines = [f"{'principal':<{width}}  rights on topics ({ADMIN} is a super user: everything)"]
    last = ""
    for principal, topic, rights in rows:
        lines.append(f"{principal if principal != last else '':<{width}}  {rights:<11} {topic}")
        last = principal
    others = sorted(g for g in given if g.resource is not Resource.TOPIC
                    and g.principal in principals(registry) and g.name.startswith(prefix))
    if others:
        lines += ["", "groups and transactional ids:"]
        lines += [f"  {g.principal:<{width}}  {g.operation.value:<8} {g.resource.value} "
                  f"{g.name}{'*' if g.pattern is Pattern.PREFIXED else ''}" for g in others]
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["apply", "show", "client-config"])
    parser.add_argument("principal", nargs="?", help="for client-config: whose settings")
    parser.add_argument("--registry", type=Path, default=REGISTRY_FILE,
                        help="the agency registry (default deploy/agencies.toml)")


def run(args: argparse.Namespace) -> int:
    kafka = KafkaConnection.from_env(ADMIN)
    prefix = load(TopicsEnv).prefix
    registry = load_registry(args.registry)
    if args.action == "client-config":
        if not args.principal:
            raise ConfigError("client-config needs a principal: safehub access client-config ID")
        if args.principal != ADMIN:
            registry.get(args.principal)
        print(json.dumps(kafka.as_principal(args.principal).kafka_python(), indent=2))
        return 0
    if args.action == "apply":
        done = apply(kafka, registry, prefix)
        print(f"{done.credentials} principals' credentials set; {done.created} ACLs created, "
              f"{done.deleted} removed; password files in {kafka.password_file.parent}")
        if done.revoked:
            print(f"removed from the registry, can no longer sign in: {', '.join(done.revoked)}")
        return 0
    print(show(registry, prefix, held_grants(kafka)))
    return 0
