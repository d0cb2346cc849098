"""`safehub simulate` writes exports the agency-side reader takes back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from safehub.cli import main
from safehub.producers.exports import LineError, load_mapping, read_export
from safehub.producers.simulation.export import publisher_record
from safehub.producers.simulation.trajectories import simulate


def test_simulate_writes_readable_exports_and_truth_apart(tmp_path: Path) -> None:
    assert main(["simulate", "--out", str(tmp_path), "--children", "300", "--seed", "4"]) == 0
    pop = simulate(4, children=300)
    exports = tmp_path / "exports"
    # A resent duplicate shares its record reference (and so its event id) with the original.
    by_ref: dict[tuple[str, str], list[object]] = {}
    for r in pop.records:
        by_ref.setdefault((r.agency_id, r.record_ref), []).append(publisher_record(r))
    seen = 0
    for path in sorted(exports.glob("*.jsonl")):
        agency = path.stem
        mapping = load_mapping(exports / f"{agency}.toml")
        for _line, parsed in read_export(path, mapping):
            assert not isinstance(parsed, LineError), str(parsed)
            assert parsed in by_ref[(agency, parsed.record_ref)]
            seen += 1
    assert seen == len(pop.records)
    truth = json.loads((tmp_path / "ground-truth.json").read_text())
    assert sum(c["exploited"] for c in truth["children"]) == len(pop.truth.exploited)
    # The exports carry no ground truth, and the truth file carries no identity.
    export_text = "".join(p.read_text() for p in exports.glob("*.jsonl"))
    assert "exploited" not in export_text and '"child"' not in export_text
    truth_text = (tmp_path / "ground-truth.json").read_text()
    for child in pop.world.children[:50]:
        assert child.identity.date_of_birth.isoformat() not in truth_text
        assert child.identity.nhs_number not in truth_text
