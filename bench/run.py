"""Run every benchmark, then gather their figures into one summary with plots.

    python -m bench.run [--only NAME ...] [--skip NAME ...] [--timeout SECONDS]

Runs each benchmark module in bench/ as `python -m bench.<name>` (each writes its own JSON
into bench/results/), one after another so that they do not compete for the machine's cores.
Benchmarks that need Kafka use the secure cluster named by SAFEHUB_KAFKA_BOOTSTRAP (with
SAFEHUB_KAFKA_SECRETS and SAFEHUB_KAFKA_CA_FILE), as its admin principal; when it is unset, a
local secure cluster is started with the launcher (cluster "bench") for the run and stopped
afterwards.

Writes bench/results/summary.json (every result file, the headline figures and which targets
were met) and PNG plots beside it. A benchmark that fails is recorded with its exit code and the
end of its output; the others still run, and the exit code says whether any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
ROOT = BENCH_DIR.parent
# Pure benchmarks first: they do not need the broker.
PURE = ("detection_bench", "codec")
# Run only when named with --only: the fault run starts its own 3-node cluster and takes minutes.
OPT_IN = ("fault_bench",)


def discover() -> list[str]:
    """Every runnable module in bench/ (one with a __main__ block), pure ones first."""
    names = sorted(p.stem for p in BENCH_DIR.glob("*.py")
                   if p.stem != "run" and "__main__" in p.read_text())
    return [n for n in PURE if n in names] + [n for n in names if n not in PURE]


def run_one(name: str, env: dict[str, str], timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", f"bench.{name}"], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=timeout, check=False,
        )
        code: int | None = done.returncode
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        output = f"timed out after {timeout:.0f}s\n" + str(exc.stdout or "")
    return {
        "bench": name,
        "exit_code": code,
        "seconds": round(time.monotonic() - started, 1),
        "output_tail": "\n".join(output.splitlines()[-12:]) if code != 0 else "",
    }


def collect() -> dict[str, Any]:
    results: dict[str, Any] = {}
    for path in sorted(RESULTS.glob("*.json")):
        if path.name == "summary.json":
            continue
        try:
            results[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            results[path.stem] = {"error": f"unreadable: {type(exc).__name__}"}
    return results


def _flatten(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(v, f"{path}.{k}" if path else str(k))
    else:
        yield path, value


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures the issues set targets for, and every target a benchmark reported on."""
    out: dict[str, Any] = {}
    det = results.get("detection")
    if isinstance(det, dict) and "safehub" in det:
        out["detection"] = {
            "recall": det["safehub"]["recall"],
            "precision": det["safehub"]["precision"],
            "false_alerts_per_1000_children_per_year":
                det["safehub"]["false_alerts_per_1000_children_per_year"],
            "single_agency_recall": det["single_agency_baseline"]["recall"],
            "single_agency_precision": det["single_agency_baseline"]["precision"],
            "median_days_first_sign_to_alert": det["safehub"]["median_days_first_sign_to_alert"],
            "single_agency_median_days_first_sign_to_alert":
                det["single_agency_baseline"]["median_days_first_sign_to_alert"],
            "median_days_ahead_of_best_single_agency":
                det["lead_time"]["median_days_ahead_of_best_single_agency"],
            "state_bytes_per_tracked_child_max": det["state"]["max_bytes_per_tracked_child"],
            "state_growth_after_horizon_pct": det["state"]["growth_after_horizon_pct"],
        }
    targets: dict[str, Any] = {}
    for name, data in results.items():
        for path, value in _flatten(data):
            leaf = path.rsplit(".", 1)[-1]
            if isinstance(value, bool) and ("target" in path or leaf.startswith("meets")):
                targets[f"{name}.{path}"] = value
    out["targets"] = targets
    return out


def plot(results: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    det = results.get("detection")
    if isinstance(det, dict) and "safehub" in det:
        hub, single = det["safehub"], det["single_agency_baseline"]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        labels = ["recall", "precision"]
        xs = range(len(labels))
        ax1.bar([x - 0.2 for x in xs], [hub[k] or 0 for k in labels], 0.4, label="safehub")
        ax1.bar([x + 0.2 for x in xs], [single[k] or 0 for k in labels], 0.4,
                label="single agency")
        ax1.axhline(0.95, ls=":", c="grey")
        ax1.axhline(0.5, ls=":", c="grey")
        ax1.set_xticks(list(xs), labels)
        ax1.set_ylim(0, 1.05)
        ax1.set_title("flagged at ESCALATING or above")
        ax1.legend()
        days = [hub["median_days_first_sign_to_alert"] or 0,
                single["median_days_first_sign_to_alert"] or 0]
        ax2.bar(["safehub", "best single agency"], days, color=["C0", "C1"])
        ax2.set_ylabel("median days, first sign to first alert")
        ax2.set_title(f"lead: {det['lead_time']['median_days_ahead_of_best_single_agency']} "
                      "days ahead (median per child)")
        fig.tight_layout()
        fig.savefig(RESULTS / "detection.png", dpi=110)
        plt.close(fig)
        written.append("detection.png")

        samples = det["state"]["samples"]
        fig, ax = plt.subplots(figsize=(8, 4))
        months = [s["month"] for s in samples]
        ax.plot(months, [s["state_bytes"] / 1e6 for s in samples], label="state (MB)")
        ax.axvline(det["state"]["horizon_days"] / 30, ls=":", c="grey", label="rules horizon")
        ax.set_xlabel("simulated month")
        ax.set_ylabel("correlator state, MB")
        ax2b = ax.twinx()
        ax2b.plot(months, [s["bytes_per_tracked_child"] or 0 for s in samples], c="C1",
                  label="bytes per tracked child")
        ax2b.set_ylabel("bytes per tracked child")
        ax2b.set_ylim(0, max(s["bytes_per_tracked_child"] or 0 for s in samples) * 1.3 + 1)
        ax.set_title(f"correlator state over {det['state']['months']} months, "
                     f"{det['state']['children']} children")
        fig.legend(loc="lower right", bbox_to_anchor=(0.9, 0.15))
        fig.tight_layout()
        fig.savefig(RESULTS / "state.png", dpi=110)
        plt.close(fig)
        written.append("state.png")

    rates = [(f"{name}: {path}", float(v)) for name, data in results.items() if name != "detection"
             for path, v in _flatten(data)
             if isinstance(v, int | float) and not isinstance(v, bool)
             and ("per_s" in path or "per_second" in path or "events_s" in path)
             and "target" not in path]
    if rates:
        fig, ax = plt.subplots(figsize=(10, 0.35 * len(rates) + 1.5))
        ax.barh([r[0] for r in rates], [r[1] for r in rates])
        ax.set_xscale("log")
        ax.set_xlabel("per second (log scale)")
        ax.set_title("throughput")
        fig.tight_layout()
        fig.savefig(RESULTS / "throughput.png", dpi=110)
        plt.close(fig)
        written.append("throughput.png")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    parser.add_argument("--skip", action="append", default=[], metavar="NAME")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per benchmark")
    parser.add_argument("--collect-only", action="store_true",
                        help="only gather existing results into the summary and plots")
    args = parser.parse_args(argv)
    names = [n for n in discover()
             if (n in args.only or n.removesuffix("_bench") in args.only
                 or (not args.only and n not in OPT_IN))
             and n not in args.skip and n.removesuffix("_bench") not in args.skip]
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    cluster = None
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        if not args.collect_only:
            for name in names:
                # (the fault run makes a cluster of its own)
                if name not in PURE + OPT_IN and "SAFEHUB_KAFKA_BOOTSTRAP" not in env:
                    from safehub.deploy.kafka.launcher import Cluster
                    from safehub.deploy.registry import ADMIN

                    cluster = Cluster("bench")
                    # The admin principal's connection (bootstrap, CA and secrets folder, never
                    # a password): each benchmark makes its own principals and ACLs from it.
                    env.update(cluster.up(nodes=1).connection(ADMIN).env())
                print(f"running {name} ...", flush=True)
                runs.append(run_one(name, env, args.timeout))
                print(f"  {name}: exit {runs[-1]['exit_code']} in {runs[-1]['seconds']} s",
                      flush=True)
    finally:
        if cluster is not None:
            cluster.down()
    results = collect()
    summary = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "runs": runs,
        "headline": headline(results),
        "results": results,
    }
    summary["plots"] = plot(results)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["headline"], indent=2))
    print(f"wrote {RESULTS / 'summary.json'} and {', '.join(summary['plots']) or 'no plots'}")
    return 1 if any(r["exit_code"] != 0 for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
