"""Sample records for the store contract suites (no test module imports another)."""

from __future__ import annotations

import uuid

from safehub.schemas.records import CorrelatedAlert, Evidence, ReidentificationRef
from safehub.schemas.vocabulary import Sector, Sign, Tier

AT = 1_794_823_200_000  # Monday 16 Nov 2026 10:00 UTC


def correlated(n: int, cluster: int, *, tier: Tier = Tier.ESCALATING, age_years: int = 14,
               raised_at: int = AT) -> CorrelatedAlert:
    return CorrelatedAlert(
        alert_id=uuid.uuid5(uuid.NAMESPACE_OID, f"contract-{n}").hex, rules_version="a" * 64,
        cluster_id=f"{cluster:032x}", linkage_block=cluster, tier=tier, rule="three-signs",
        score=3.0, raised_at=raised_at, age_years=age_years, local_authority="E08000035",
        placing_authority=None, agencies=("police-wy",),
        evidence=(Evidence(f"{n:032x}", "police-wy", Sector.POLICE, Sign.OFFENDING, AT, 1.0),),
        reidentification=(ReidentificationRef("police-wy", "f" * 32),), identity_conflict=False)
