"""What authenticated, encrypted transport costs: the code before it, on its plaintext broker,
against this code on the secure broker (TLS + SCRAM-SHA-512 + ACLs), alternating in one run.

    python -m bench.transport_cost [--baseline COMMIT] [--rounds 3] [--events 30000]

The project has no insecure mode to measure (there is none to forget to switch off), so the
plaintext side is the last commit before the secure transport, checked out into a temporary git
worktree and run with its own launcher and benchmarks; the secure side is this tree. Each round
runs, for each side in turn (the order alternates between rounds, so that neither always runs
on a warmer or a busier machine), a fresh single-node cluster, then
- bench.correlation_bench (one correlator worker's sustained events/s on a backlog), and
- bench.latency_bench (publish -> hub inbox row at 1,000 events/s: p50, p99).
Writes bench/results/transport.json: every run's figures, each side's medians, and the ratios
secure / plaintext (the target: at most 20% lost on both). The other result files are left
as they were.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BASELINE = "c7c7454"  # main before the secure transport (issue 17)
PORT = 29092  # apart from the default 19092 that a developer's own cluster may use


def run_checked(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run `cmd`; its standard output, or an error carrying the end of what it printed."""
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} in {cwd} exited {done.returncode}:\n"
                           + (done.stdout + done.stderr)[-3000:])
    return done.stdout


def _env(tree: Path, state: Path, secure: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHUB_KAFKA_")}
    env.update({"PYTHONPATH": str(tree / "src"), "SAFEHUB_STATE": str(state),
                "SAFEHUB_KAFKA_BOOTSTRAP": f"127.0.0.1:{PORT}", "PYTHONUNBUFFERED": "1"})
    if secure:
        folder = state / "kafka" / "default"
        env.update({"SAFEHUB_KAFKA_SECRETS": str(folder / "secrets"),
                    "SAFEHUB_KAFKA_CA_FILE": str(folder / "ca.pem")})
    return env


def one_side(tree: Path, state: Path, secure: bool, args: argparse.Namespace) -> dict[str, Any]:
    env = _env(tree, state, secure)
    py = [sys.executable, "-m"]
    saved = {n: (tree / "bench" / "results" / n).read_bytes()
             for n in ("correlation.json", "latency.json")
             if (tree / "bench" / "results" / n).exists()}
    run_checked([*py, "safehub.cli", "kafka", "up", "--port", str(PORT)], tree, env, 180)
    try:
        started = time.monotonic()
        run_checked([*py, "bench.correlation_bench", "--events", str(args.events), "--runs", "1",
                     "--core-events", "2000"], tree, env, 900)
        corr = json.loads((tree / "bench" / "results" / "correlation.json").read_text())
        run_checked([*py, "bench.latency_bench", "--children", str(args.children), "--runs", "1"],
                    tree, env, 900)
        lat = json.loads((tree / "bench" / "results" / "latency.json").read_text())
    finally:
        run_checked([*py, "safehub.cli", "kafka", "down", *(["--purge"] if secure else [])],
                    tree, env, 120)
        for name, raw in saved.items():
            (tree / "bench" / "results" / name).write_bytes(raw)
    return {
        "correlator_events_per_s": _find(corr["processor"], "processor_events_per_s"),
        "latency_p99_ms": _find(lat, "p99_ms"),
        "latency_p50_ms": _find(lat, "p50_ms"),
        "seconds": round(time.monotonic() - started, 1),
    }


def _find(value: Any, key: str) -> float:
    """The first figure named `key` in a result (the files of both sides share these names)."""
    if isinstance(value, dict):
        if key in value and isinstance(value[key], int | float):
            return float(value[key])
        for v in value.values():
            try:
                return _find(v, key)
            except KeyError:
                continue
    raise KeyError(key)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", default=BASELINE)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--children", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="safehub-transport-"))
    baseline = work / "baseline"
    run_checked(["git", "worktree", "add", "--detach", str(baseline), args.baseline], ROOT,
                dict(os.environ), 120)
    runs: dict[str, list[dict[str, Any]]] = {"plaintext": [], "secure": []}
    try:
        for i in range(args.rounds):
            sides = [("plaintext", baseline, False), ("secure", ROOT, True)]
            for label, tree, secure in (sides if i % 2 == 0 else sides[::-1]):
                figures = one_side(tree, work / f"state-{label}", secure, args)
                runs[label].append(figures)
                print(label, json.dumps(figures), flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT,
                       check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    med = {label: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for label, rs in runs.items()}
    ratio = {
        "correlator_events_per_s": med["secure"]["correlator_events_per_s"]
        / med["plaintext"]["correlator_events_per_s"],
        "latency_p99_ms": med["secure"]["latency_p99_ms"] / med["plaintext"]["latency_p99_ms"],
    }
    result = {
        "baseline_commit": args.baseline,
        "rounds": args.rounds,
        "events": args.events,
        "latency_children": args.children,
        "runs": runs,
        "medians": med,
        "secure_over_plaintext": {k: round(v, 3) for k, v in ratio.items()},
        "within_20_percent": {
            "correlator_events_per_s": ratio["correlator_events_per_s"] >= 0.8,
            "latency_p99_ms": ratio["latency_p99_ms"] <= 1.25,  # 20% fewer = 25% more time
        },
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "transport.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["medians"], indent=2), json.dumps(result["secure_over_plaintext"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
