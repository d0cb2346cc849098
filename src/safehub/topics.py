"""Every topic name safehub uses, built and parsed here and nowhere else. Pure.

Three kinds of topic (deploy/topics.toml holds their partitions and retention):
- one per agency: `ingress.<agency>` (its events), `reid-requests.<agency>` (hubs' requests);
- one per hub: `alerts.<hub>`, `alert-acks.<hub>`, `reid-responses.<hub>`;
- shared by the whole deployment: `correlated`, `audit`, `deadletter`, and the correlator's
  table changelog `<app id>-blocks-changelog` (faust's naming; the app id defaults to
  `<prefix>correlator`, the only one the ACLs allow).

`prefix` (SAFEHUB_TOPIC_PREFIX) is put in front of every name, verbatim: tests use a unique one
so that they never see each other's topics. Consumer groups take the same prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from safehub.errors import ValidationError

# The registry's party-id rule (deploy/registry.py); 64 bounds what a topic name may carry.
PARTY_ID = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
PARTY_ID_MAX = 64

CORRELATOR = "correlator"  # the correlator's service id, hence its default app id and group
CORRELATOR_TABLE = "blocks"  # the correlator's faust table of linkage-block states


class Owner(Enum):
    AGENCY = "agency"
    HUB = "hub"
    SHARED = "shared"


class Family(Enum):
    """A kind of topic: its name (a stem before the party's id, or the whole name) and owner."""

    INGRESS = ("ingress", Owner.AGENCY)
    REID_REQUESTS = ("reid-requests", Owner.AGENCY)
    ALERTS = ("alerts", Owner.HUB)
    ACKS = ("alert-acks", Owner.HUB)
    REID_RESPONSES = ("reid-responses", Owner.HUB)
    CORRELATED = ("correlated", Owner.SHARED)
    AUDIT = ("audit", Owner.SHARED)
    DEADLETTER = ("deadletter", Owner.SHARED)
    # With the correlator's default app id, the one the ACLs allow; table_changelog(app id) names
    # the changelog of a worker given another (SAFEHUB_CORRELATOR_APP_ID).
    CHANGELOG = (f"{CORRELATOR}-{CORRELATOR_TABLE}-changelog", Owner.SHARED)

    def __init__(self, base: str, owner: Owner) -> None:
        self.base = base
        self.owner = owner

    @property
    def per_party(self) -> bool:
        return self.owner is not Owner.SHARED

    @property
    def stem(self) -> str:
        """What precedes the party id (`ingress.`), or the whole unprefixed name if shared."""
        return f"{self.base}." if self.per_party else self.base

    @property
    def template(self) -> str:
        """The name as deploy/topics.toml writes it: `ingress.{agency}`, `audit`."""
        return f"{self.stem}{{{self.owner.value}}}" if self.per_party else self.base

    def build(self, prefix: str = "", party: str | None = None) -> str:
        if self.per_party != (party is not None):
            raise ValueError(f"{self.base}: {'needs' if self.per_party else 'takes no'} party id")
        return f"{prefix}{self.stem}{party or ''}"


@dataclass(frozen=True, slots=True)
class TopicName:
    family: Family
    party: str | None  # the agency or hub of a per-party topic
    prefix: str = ""

    def __str__(self) -> str:
        return self.family.build(self.prefix, self.party)


class TopicNameError(ValidationError):
    """A name that is not one of safehub's topics; `rule` says which part is wrong."""

    def __init__(self, rule: str) -> None:
        super().__init__("topic", rule)


# Longest stem first: no stem is another's prefix today, but the order keeps parsing unambiguous.
_BY_STEM = sorted(Family, key=lambda f: -len(f.stem))


def parse(topic: str, prefix: str = "", family: Family | None = None) -> TopicName:
    """The family and party of a topic name, or TopicNameError saying what is wrong with it
    (missing prefix, unknown family, not the expected family, bad party id)."""
    if not topic.startswith(prefix):
        raise TopicNameError("does not carry the configured topic prefix")
    bare = topic[len(prefix):]
    candidates = [family] if family is not None else _BY_STEM
    for f in candidates:
        if f.per_party and bare.startswith(f.stem):
            party = bare[len(f.stem):]
            if len(party) > PARTY_ID_MAX or PARTY_ID.fullmatch(party) is None:
                raise TopicNameError(f"{f.owner.value} part is not a lower-case slug")
            return TopicName(f, party, prefix)
        if not f.per_party and bare == f.stem:
            return TopicName(f, None, prefix)
    if family is not None:
        form = family.template.replace("{", "<").replace("}", ">")
        article = "an" if form[0] in "aeiou" else "a"
        raise TopicNameError(f"is not {article} {form} topic")
    raise TopicNameError("is not a safehub topic")


def party_of(topic: str, family: Family, prefix: str = "") -> str:
    """The agency or hub of a per-party topic of this family (TopicNameError if it is not one)."""
    if not family.per_party:
        raise ValueError(f"{family.base} is not a per-party topic")
    party = parse(topic, prefix, family).party
    assert party is not None  # a per-party family always parses with its party
    return party


def in_family(topic: str, family: Family, prefix: str = "") -> bool:
    """Whether a name found on the broker is of this family; no check of the party id, so a
    listing shows what is there."""
    if family.per_party:
        return topic.startswith(prefix + family.stem)
    return topic == prefix + family.stem


def mentions_ingress(topic: str) -> bool:
    """Whether a name is an ingress topic under some prefix not known here (one ending in '.',
    as the tests' are)."""
    stem = Family.INGRESS.stem
    return topic.startswith(stem) or f".{stem}" in topic


def ingress(prefix: str, agency: str) -> str:
    return Family.INGRESS.build(prefix, agency)


def reid_requests(prefix: str, agency: str) -> str:
    return Family.REID_REQUESTS.build(prefix, agency)


def alerts(prefix: str, hub: str) -> str:
    return Family.ALERTS.build(prefix, hub)


def acks(prefix: str, hub: str) -> str:
    return Family.ACKS.build(prefix, hub)


def reid_responses(prefix: str, hub: str) -> str:
    return Family.REID_RESPONSES.build(prefix, hub)


def correlated(prefix: str = "") -> str:
    return Family.CORRELATED.build(prefix)


def audit(prefix: str = "") -> str:
    return Family.AUDIT.build(prefix)


def deadletter(prefix: str = "") -> str:
    return Family.DEADLETTER.build(prefix)


def correlator_group(prefix: str) -> str:
    """The correlator's faust app id, which is also its consumer group."""
    return service_group(prefix, CORRELATOR)


def service_group(prefix: str, principal: str) -> str:
    """The one consumer group a principal may use (hubs' inboxes, the router, the correlator)."""
    return f"{prefix}{principal}"


def table_changelog(app_id: str) -> str:
    """faust's name for the correlator table's changelog: `<app id>-<table>-changelog`."""
    return f"{app_id}-{CORRELATOR_TABLE}-changelog"


def changelog_topic(prefix: str) -> str:
    """The changelog of the correlator with its default app id, the one its ACLs allow."""
    return table_changelog(correlator_group(prefix))


def all_topics(agencies: Iterable[str], hubs: Iterable[str], prefix: str = "",
               internal: bool = True) -> list[str]:
    """Every topic of these agencies and hubs, sorted (with the changelog when `internal`)."""
    agency_list, hub_list = sorted(set(agencies)), sorted(set(hubs))
    names = [correlated(prefix), audit(prefix), deadletter(prefix)]
    for f in Family:
        if f.owner is Owner.AGENCY:
            names += [f.build(prefix, a) for a in agency_list]
        elif f.owner is Owner.HUB:
            names += [f.build(prefix, h) for h in hub_list]
    if internal:
        names.append(changelog_topic(prefix))
    return sorted(names)


def replay_targets(agencies: Iterable[str], prefix: str = "") -> list[str]:
    """The correlator's and the router's inputs: where a dead letter may be replayed to
    (deploy/acl.py says why no other topic)."""
    return sorted([correlated(prefix), *(ingress(prefix, a) for a in set(agencies))])
