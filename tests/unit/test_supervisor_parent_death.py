"""No service outlives its supervisor (services/supervisor.py), even one killed outright.

Found in the demo's metrics test: its last resort, SIGKILL to a demo that did not stop, left the
demo's services running (each in a session of its own). Here a supervisor in a process of its
own starts a service and is then SIGKILLed; the service must be gone within seconds. The
service is a real `python -m safehub.cli` process held at start-up by a `sitecustomize` module
on its PYTHONPATH, so it needs no broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SUPERVISOR = """
import os, sys, time
from pathlib import Path
from safehub.services.supervisor import ServiceSpec, Supervisor
supervisor = Supervisor(Path(sys.argv[1]), dict(os.environ))
running = supervisor.start(ServiceSpec("sleeper", ("--help",), {"PYTHONPATH": sys.argv[2]}))
print(running.process.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its entry waits for its (new) parent


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
@pytest.mark.timeout(60)
def test_a_killed_supervisor_takes_its_services_with_it(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "sitecustomize.py").write_text("import time\ntime.sleep(45)\n")
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(tmp_path), str(hold)],
                                  stdout=subprocess.PIPE, text=True)
    service = 0
    try:
        assert supervisor.stdout is not None
        service = int(supervisor.stdout.readline())
        time.sleep(1)
        assert _alive(service), "the service did not start"
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(10)
        deadline = time.monotonic() + 10
        while _alive(service) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(service), "the service outlived its supervisor"
    finally:
        supervisor.kill()
        if service and _alive(service):
            os.kill(service, signal.SIGKILL)
