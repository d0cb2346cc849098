"""`safehub demo` from nothing: its own broker, every service, a population, alerts in an inbox,
and the agencies' re-identification desk answering a short drill.

Bounded: a small population and --exit-when-done, under a hard timeout. The demo keeps its
broker state under a temporary SAFEHUB_STATE so it never touches a developer's own demo.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from safehub.deploy.kafka.launcher import free_port
from tests.fixtures.demo import run_demo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _run_demo(folder: Path, state: Path, *extra: str, timeout: float = 600) -> tuple[int, str]:
    env = {**os.environ, "SAFEHUB_STATE": str(state), "PYTHONUNBUFFERED": "1"}
    env.pop("SAFEHUB_TOPIC_PREFIX", None)
    code, out, _ = run_demo(
        ["--folder", str(folder), "--children", "400", "--web-port", str(free_port()),
         "--reid-port", str(free_port()), *extra], env, timeout)
    return code, out.decode(errors="replace")


def _no_demo_processes_left(folder: Path, state: Path) -> None:
    # A service the supervisor had to kill leaves children (its correlation child, say) that
    # notice and exit a moment later: they get a few seconds.
    deadline = time.monotonic() + 10
    while leftovers := _demo_processes(folder, state):
        assert time.monotonic() < deadline, f"processes of the demo still running: {leftovers}"
        time.sleep(0.2)


def _demo_processes(folder: Path, state: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(state) in cmd or cwd.startswith(str(folder)):
            found.append(proc.name)
    return found


def test_demo_runs_from_nothing_and_puts_alerts_in_an_inbox(tmp_path: Path) -> None:
    folder, state = tmp_path / "demo", tmp_path / "state"
    code, out = _run_demo(folder, state, "--exit-when-done", "--reid-drill", "2")
    assert code == 0, out[-3000:]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["settled"], out[-3000:]
    assert summary["published"] > 200
    assert summary["alerts_by_tier"].get("HIGH", 0) + summary["alerts_by_tier"].get(
        "ESCALATING", 0) > 0
    # The inbox database itself holds the notifications, for the lead agencies' hubs.
    with sqlite3.connect(folder / "inbox.sqlite") as db:
        rows = db.execute("SELECT agency_id, tier FROM inbox_alert").fetchall()
    assert len(rows) == summary["inbox_rows"] > 0
    assert any(agency.startswith("csc-") for agency, _tier in rows)
    assert summary["exploited_children_alerted_escalating_or_high"] > 0
    for expected in ("web page", "sign in", "alerts", "kafka stopped", "agencies' desk at",
                     "-officer", "reid (ok)"):
        assert expected in out, out[-3000:]
    # The agencies' page served its officers: the drill signed in there, read the requests and
    # answered them, and the hub opened what was approved.
    drill = summary["reid_drill"]
    assert drill["alerts"] == 2 and drill["requests"] >= 2, drill
    assert drill["approved"] + drill["declined"] + drill["not_found"] == drill["requests"], drill
    assert drill["opened"] == drill["approved"] > 0, drill
    with sqlite3.connect(folder / "inbox.sqlite") as db:
        sealed = db.execute("SELECT count(*) FROM inbox_reid_request WHERE status = 'APPROVED' "
                            "AND sealed_identity IS NOT NULL").fetchone()[0]
    assert sealed == drill["approved"]
    _no_demo_processes_left(folder, state)


def test_demo_stops_everything_after_its_duration(tmp_path: Path) -> None:
    folder, state = tmp_path / "demo", tmp_path / "state"
    code, out = _run_demo(folder, state, "--duration", "40", timeout=300)
    assert code == 0, out[-3000:]
    assert "stopping" in out and "kafka stopped" in out, out[-3000:]
    _no_demo_processes_left(folder, state)


def test_a_missing_service_command_is_named_before_anything_starts() -> None:
    from safehub.services.supervisor import ServiceSpec, missing_commands

    specs = [ServiceSpec("router", ("router",), {}), ServiceSpec("pager", ("pager",), {})]
    assert missing_commands(specs) == ["pager (no `safehub pager` command)"]
