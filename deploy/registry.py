"""The agency registry (deploy/agencies.toml): every party, once; pure once loaded.

Topics (deploy/topics.py), principals and ACLs (deploy/acl.py) are derived from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from safehub.config_files import read_toml
from safehub.errors import ConfigError
from safehub.schemas.vocabulary import Sector

REGISTRY_FILE = Path(__file__).with_name("agencies.toml")
ADMIN = "admin"  # the super user made with the cluster; not a party, never in the registry
# A party id is a topic-name suffix and a principal: lower-case slugs only, so that no id can
# smuggle a dot or a wildcard into a topic name or an ACL.
_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_GSS = re.compile(r"^E(06|07|08|09|10)\d{6}$|^W06\d{6}$")


class Kind(StrEnum):
    AGENCY = "agency"
    HUB = "hub"
    SERVICE = "service"
    AUDITOR = "auditor"


class Service(StrEnum):
    """The hub's own processes: each is one principal with exactly its job's rights."""

    CORRELATOR = "correlator"
    ROUTER = "router"
    AUDIT_SINK = "audit-sink"
    KEYSERVICE = "keyservice"  # the OPRF key service: writes only its refusals to the audit log
    # The on-call operator's `safehub deadletter`: reads dead letters, replays them (deploy/acl.py)
    DEADLETTER_OPERATOR = "deadletter-operator"


@dataclass(frozen=True, slots=True)
class Party:
    id: str
    kind: Kind
    sector: Sector | None = None  # agencies only
    leads_for: tuple[str, ...] = ()  # hubs only: GSS codes

    @property
    def principal(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class Registry:
    parties: tuple[Party, ...]

    def of_kind(self, kind: Kind) -> tuple[Party, ...]:
        return tuple(p for p in self.parties if p.kind is kind)

    @property
    def agencies(self) -> tuple[str, ...]:
        return tuple(sorted(p.id for p in self.of_kind(Kind.AGENCY)))

    @property
    def hubs(self) -> tuple[str, ...]:
        return tuple(sorted(p.id for p in self.of_kind(Kind.HUB)))

    def get(self, party_id: str) -> Party:
        for p in self.parties:
            if p.id == party_id:
                return p
        raise ConfigError(f"no party {party_id!r} in the agency registry")

    def with_parties(self, extra: Iterable[Party]) -> Registry:
        return Registry(validate((*self.parties, *extra), "registry"))


def validate(parties: Iterable[Party], where: str) -> tuple[Party, ...]:
    seen: set[str] = set()
    out = []
    services = {s.value for s in Service}
    for p in parties:
        if not _ID.match(p.id):
            raise ConfigError(f"{where}: party id {p.id!r} must be lower-case letters, digits and "
                              "single hyphens")
        if p.id in seen:
            raise ConfigError(f"{where}: party {p.id!r} is listed twice")
        if p.id == ADMIN:
            raise ConfigError(f"{where}: {ADMIN!r} is the cluster's super user, not a party")
        # The correlator's transactional ids are `correlator-...` (a PREFIXED ACL): no other
        # principal may be named so that it would share that prefix.
        if p.id.startswith(f"{Service.CORRELATOR}-"):
            raise ConfigError(f"{where}: party id {p.id!r} may not start with "
                              f"'{Service.CORRELATOR}-'")
        if p.kind is Kind.SERVICE and p.id not in services:
            raise ConfigError(f"{where}: service {p.id!r} is not one of {sorted(services)}")
        if p.kind is Kind.AGENCY and p.sector is None:
            raise ConfigError(f"{where}: agency {p.id!r} needs a sector")
        if p.kind is not Kind.AGENCY and p.sector is not None:
            raise ConfigError(f"{where}: only agencies have a sector ({p.id!r})")
        if p.kind is not Kind.HUB and p.leads_for:
            raise ConfigError(f"{where}: only hubs lead for local authorities ({p.id!r})")
        for gss in p.leads_for:
            if not _GSS.match(gss):
                raise ConfigError(f"{where}: {p.id!r} leads_for {gss!r}: not a local "
                                  "authority's GSS code")
        seen.add(p.id)
        out.append(p)
    return tuple(out)


def _party(entry: Mapping[str, Any], where: str) -> Party:
    try:
        kind = Kind(str(entry["kind"]))
        sector = Sector(str(entry["sector"])) if "sector" in entry else None
        return Party(id=str(entry["id"]), kind=kind, sector=sector,
                     leads_for=tuple(str(g) for g in entry.get("leads_for", ())))
    except KeyError as exc:
        raise ConfigError(f"{where}: missing {exc.args[0]!r}") from exc
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def parse_registry(raw: Mapping[str, Any], where: str) -> Registry:
    entries = raw.get("party", [])
    parties = [_party(e, f"{where}: party {i + 1}") for i, e in enumerate(entries)]
    return Registry(validate(parties, where))


def load_registry(path: Path = REGISTRY_FILE) -> Registry:
    raw = read_toml(path)
    return parse_registry(raw, str(path))
