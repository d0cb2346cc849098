"""`safehub simulate`: write a synthetic population as agency exports, ground truth apart.

    safehub simulate --out sim/ [--seed 2025] [--children 2000] [--months 12] [--authorities 4]

writes, per agency, `sim/exports/<agency>.jsonl` (the records its case system would export, with
identities, in arrival order) and `sim/exports/<agency>.toml` (the column mapping that
`safehub publish --agency <agency> --from sim/exports/<agency>.jsonl` reads), and, apart,
`sim/ground-truth.json` (which children are exploited, from when, and which record is whose).
The exports hold made-up identities: they are agency-side files and must never be published raw.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehub.errors import ConfigError
from safehub.producers.simulation.export import by_agency
from safehub.producers.simulation.trajectories import (
    AgencyRecord,
    MissingRecord,
    Population,
    simulate,
)
from safehub.schemas.vocabulary import MissingType, Sector, Sign, SignificantIncident, Vulnerability

MISSING_EPISODE_CODE = "MISSING_EPISODE"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--children", type=int, default=2000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--authorities", type=int, default=4)
    parser.add_argument("--exploited-share", type=float, default=0.03)


def run(args: argparse.Namespace) -> int:
    if args.children < 1 or args.months < 1:
        raise ConfigError("--children and --months must be at least 1")
    pop = simulate(args.seed, children=args.children, months=args.months,
                   authorities=args.authorities, exploited_share=args.exploited_share)
    written = write_population(pop, args.out)
    print(f"{len(pop.world.children)} children, {len(pop.truth.exploited)} exploited "
          f"(ground truth), {len(pop.records)} records from {written} agencies in {args.out}")
    return 0


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def export_row(record: AgencyRecord) -> dict[str, Any]:
    """One record as a JSON Lines object with the column names of `mapping_toml`."""
    row: dict[str, Any] = {
        "record_ref": record.record_ref,
        "person_ref": record.person_ref,
        "first_name": record.identity.first_name,
        "surname": record.identity.surname,
        "date_of_birth": record.identity.date_of_birth.isoformat(),
        "nhs_number": record.identity.nhs_number,
        "postcode": record.identity.postcode,
        "local_authority": record.local_authority,
        "placing_authority": record.placing_authority,
        "occurred_at": _iso(record.occurred_at),
        "reported_at": _iso(record.reported_at),
    }
    if isinstance(record, MissingRecord):
        row.update(
            indicator=MISSING_EPISODE_CODE,
            ended_at=_iso(record.ended_at),
            missing_type=record.missing_type.value,
            return_interview_offered="Y" if record.return_interview_offered else "N",
            return_interview_done="Y" if record.return_interview_done else "N",
        )
    else:
        row["indicator"] = record.indicator.value
    return row


def mapping_toml(sector: Sector) -> str:
    """The column mapping for the simulator's exports: our names, the contract's symbols."""
    columns = ("record_ref", "person_ref", "first_name", "surname", "date_of_birth", "nhs_number",
               "postcode", "local_authority", "placing_authority", "occurred_at", "reported_at",
               "indicator", "ended_at", "missing_type", "return_interview_offered",
               "return_interview_done")
    symbols = [s.value for enum in (Sign, Vulnerability, SignificantIncident) for s in enum]
    lines = [
        "# Column mapping for exports written by `safehub simulate`.",
        f'sector = "{sector.value}"',
        'date_format = "ISO"',
        'time_format = "ISO"',
        'timezone = "UTC"',
        "",
        "[columns]",
        *(f'{c} = "{c}"' for c in columns),
        "",
        "[codes]",
        f'{MISSING_EPISODE_CODE} = "{MISSING_EPISODE_CODE}"',
        *(f'{s} = "{s}"' for s in symbols),
        "",
        "[missing_types]",
        *(f'{t.value} = "{t.value}"' for t in MissingType),
    ]
    return "\n".join(lines) + "\n"


def ground_truth_json(pop: Population) -> dict[str, Any]:
    return {
        "start": _iso(pop.start_ms),
        "end": _iso(pop.end_ms),
        "children": [
            {"child": c.child_id, "exploited": c.exploited, "pattern": c.pattern,
             "first_sign_at": _iso(c.first_sign_at)}
            for c in pop.truth.children
        ],
        "records": [
            {"agency": agency, "record_ref": ref, "child": child}
            for (agency, ref), child in sorted(pop.truth.record_child.items())
        ],
    }


def write_population(pop: Population, out: Path) -> int:
    exports = out / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    sectors = {a.agency_id: a.sector for a in pop.world.agencies}
    count = 0
    for agency_id, records in by_agency(pop.records):
        with (exports / f"{agency_id}.jsonl").open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(export_row(record), ensure_ascii=False) + "\n")
        (exports / f"{agency_id}.toml").write_text(mapping_toml(sectors[agency_id]))
        count += 1
    (out / "ground-truth.json").write_text(json.dumps(ground_truth_json(pop), indent=1) + "\n")
    return count
