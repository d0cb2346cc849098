"""Start safehub's services as child processes, watch them, and stop exactly those it started.

Used by `safehub demo`. Each service runs as `python -m safehub.cli <command>` with its
settings in SAFEHUB_* environment variables and its output in a log file; a service that
dies early is reported with the end of its log. Stopping sends SIGTERM (the services exit
cleanly on it) in the reverse order of starting, then SIGKILL to any that do not exit in time.
Only the process ids recorded here are ever signalled.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from safehub.cli import COMMANDS
from safehub.errors import SafehubError


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str  # for logs and messages, e.g. "audit-sink"
    argv: tuple[str, ...]  # the safehub subcommand and its arguments, e.g. ("audit", "sink")
    env: Mapping[str, str]  # SAFEHUB_* settings added to the environment


def missing_commands(specs: Sequence[ServiceSpec]) -> list[str]:
    """The services whose `safehub` subcommand is not installed (its module does not exist)."""
    missing = []
    for spec in specs:
        entry = COMMANDS.get(spec.argv[0])
        if entry is None:
            missing.append(f"{spec.name} (no `safehub {spec.argv[0]}` command)")
            continue
        try:
            found = importlib.util.find_spec(entry[0]) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(f"{spec.name} (module {entry[0]} is not installed)")
    return missing


@dataclass
class Running:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    log: Path


class Supervisor:
    def __init__(self, folder: Path, base_env: Mapping[str, str]) -> None:
        self.folder = folder
        self.logs = folder / "logs"
        self.base_env = dict(base_env)
        self.running: list[Running] = []

    def start(self, spec: ServiceSpec) -> Running:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{spec.name}.log"
        env = {**self.base_env, **spec.env}
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "safehub.cli", *spec.argv],
                cwd=self.folder, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C reaches the demo, which stops services in order.
                start_new_session=True,
            )
        running = Running(spec, process, log_path)
        self.running.append(running)
        return running

    def check(self) -> None:
        """Raise if any service has exited: the demo cannot go on without it."""
        for r in self.running:
            code = r.process.poll()
            if code is not None:
                raise SafehubError(
                    f"service {r.spec.name} exited with code {code}; last lines of {r.log}:\n"
                    + log_tail(r.log)
                )

    def stop_all(self, timeout: float = 20.0) -> list[tuple[str, int | None]]:
        """SIGTERM each service (last started first); SIGKILL what outlives `timeout`."""
        results: list[tuple[str, int | None]] = []
        for r in reversed(self.running):
            if r.process.poll() is None:
                r.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for r in reversed(self.running):
            try:
                r.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                r.process.kill()
                r.process.wait(10)
            results.append((r.spec.name, r.process.returncode))
        self.running.clear()
        return results


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def python_env() -> dict[str, str]:
    """The environment for children: ours, with unbuffered output so logs are current."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env
