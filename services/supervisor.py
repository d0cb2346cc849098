"""Start safehub's services as child processes, watch them, and stop exactly those it started.

Used by `safehub demo`. Each service runs as `python -m safehub.cli <command>` with its
settings in SAFEHUB_* environment variables and its output in a log file. Stopping sends
SIGTERM (the services exit cleanly on it) in the reverse order of starting, then SIGKILL to
any that do not exit in time. Only the process ids recorded here are ever signalled.

Restart policy (`RestartPolicy`), applied by `check`, which the demo calls while it waits: a
service that exits with a non-zero code or is killed by a signal is started again, as the
deployment's restart policy would, after a backoff (1 s, doubling to 30 s), and the
supervisor says so on stdout and in the service's log. The services are built for it: each
commits its input only once its outputs are durable, so a restart re-reads and loses nothing.
A service that exits with 0 stopped on purpose, and one restarted `max_restarts` times within
`window_s` is not getting better: either ends the demo, with the end of its log.

No service outlives its supervisor. Each runs in its own session (Ctrl-C reaches the demo,
which stops them in order), so a supervisor killed outright (SIGKILL, an OOM kill, a test's
last resort) could not stop them, and they went on holding their ports and the broker's
attention. On Linux each is started with a parent-death signal (prctl PR_SET_PDEATHSIG):
SIGTERM, which they exit cleanly on, when the supervisor is gone.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_restarts: int = 5  # within window_s; one more failure ends the demo
    window_s: float = 300.0

    def delay(self, recent: int) -> float:
        """The wait before the restart that follows `recent` restarts within the window."""
        return float(min(self.first_delay_s * 2 ** recent, self.max_delay_s))


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """In a child between fork and exec: be sent SIGTERM when the parent dies. Linux only.

    The signal is tied to the thread that forked the child; the supervisor starts services
    from the demo's main thread, which lives as long as the supervisor. A parent already gone
    before the call (its death would not be signalled) ends the child at once."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        os._exit(70)  # cannot promise to die with the parent: do not start at all
    if os.getppid() != parent_pid:
        os._exit(0)


@dataclass
class Running:
    spec: ServiceSpec
    process: subprocess.Popen[bytes]  # the current one: replaced in place by a restart
    log: Path
    restarts: list[float] = field(default_factory=list)  # monotonic times of restarts
    restart_at: float | None = None  # a restart is due at this monotonic time


class Supervisor:
    def __init__(self, folder: Path, base_env: Mapping[str, str],
                 policy: RestartPolicy | None = None) -> None:
        self.folder = folder
        self.logs = folder / "logs"
        self.base_env = dict(base_env)
        self.policy = policy or RestartPolicy()
        self.running: list[Running] = []

    def _spawn(self, spec: ServiceSpec, log_path: Path) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        env = {**self.base_env, **spec.env}
        with log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "safehub.cli", *spec.argv],
                cwd=self.folder, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: Ctrl-C reaches the demo, which stops services in order.
                start_new_session=True,
                preexec_fn=functools.partial(die_with_parent, os.getpid())
                if sys.platform == "linux" else None,
            )

    def start(self, spec: ServiceSpec) -> Running:
        log_path = self.logs / f"{spec.name}.log"
        running = Running(spec, self._spawn(spec, log_path), log_path)
        self.running.append(running)
        return running

    def check(self) -> None:
        """Restart, with backoff, any service that failed; raise if one cannot go on (it
        exited with 0, or failed again after `max_restarts` restarts within `window_s`)."""
        now = time.monotonic()
        for r in self.running:
            if r.restart_at is not None:
                if now >= r.restart_at:
                    r.restart_at = None
                    r.restarts.append(now)
                    r.process = self._spawn(r.spec, r.log)
                    self._say(r, f"service {r.spec.name} restarted (pid {r.process.pid})")
                continue
            code = r.process.poll()
            if code is None:
                continue
            recent = [t for t in r.restarts if now - t < self.policy.window_s]
            if code == 0 or len(recent) >= self.policy.max_restarts:
                after = (f" after {len(recent)} restart(s) in {self.policy.window_s:.0f} s"
                         if recent else "")
                raise SafehubError(
                    f"service {r.spec.name} exited with code {code}{after}; last lines of "
                    f"{r.log}:\n" + log_tail(r.log)
                )
            delay = self.policy.delay(len(recent))
            r.restart_at = now + delay
            self._say(r, f"service {r.spec.name} exited with code {code}; restarting it in "
                         f"{delay:.1f} s (restart {len(recent) + 1} of at most "
                         f"{self.policy.max_restarts} in {self.policy.window_s:.0f} s)")

    @staticmethod
    def _say(r: Running, message: str) -> None:
        print(message, flush=True)
        try:
            with r.log.open("a") as log:
                log.write(f"supervisor: {message}\n")
        except OSError:
            pass  # the message is on stdout already

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
