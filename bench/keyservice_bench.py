"""Key service CPU per element: the server's evaluate (in process, and as a separate server
process over HTTPS), and an agency's end to end (blind + one HTTPS call per batch of 1000 +
finalize). Writes bench/results/keyservice.json. No broker: the server audits into a list.

Run: python -m bench.keyservice_bench  (about half a minute). The server runs as its own
process, so its CPU (user + system, from /proc) is measured apart from the client's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import httpx

RESULTS = Path(__file__).resolve().parent / "results" / "keyservice.json"
BATCH = 1000
ROUNDS = 20
PIPELINED = 8 * BATCH
SEED = bytes(range(32))


def _serve(port: int, folder: Path) -> None:
    """The bench's server: the real app and uvicorn with TLS, audit into a list."""
    import uvicorn

    from safehub.services.keyservice.credentials import Credentials
    from safehub.services.keyservice.keys import KeyDirectory
    from safehub.services.keyservice.quota import Limit, QuotaBook, QuotaConfig
    from safehub.services.keyservice.server import create_app

    refusals: list[object] = []
    app = create_app(KeyDirectory(folder / "keys"),
                     QuotaBook(QuotaConfig(Limit(10**9, 10**12))),
                     Credentials.from_secrets({"bench": (folder / "bench.secret")
                                               .read_text().strip()}),
                     lambda r, e: refusals.append((r, e)),
                     lambda: time.time_ns() // 1_000_000)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                ssl_certfile=str(folder / "tls" / "node.pem"),
                ssl_keyfile=str(folder / "tls" / "node.pem"), lifespan="off")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _in_process() -> dict[str, float]:
    from safehub.services.keyservice import oprf
    from safehub.services.keyservice.keys import EpochKey

    secret, public = oprf.derive_key_pair(SEED, b"bench")
    key = EpochKey(1, secret, public)
    inputs = [f"MK2|FIRST{i}|SURNAME{i}|2012-03-04".encode() for i in range(2000)]
    pairs = [oprf.blind(x) for x in inputs]
    blinded = [b for _, b in pairs]
    evaluated = [key.evaluate(b) for b in blinded]
    n = len(inputs)

    def per_element(fn: object) -> float:
        return min(timeit.repeat(fn, number=1, repeat=3)) / n * 1e6  # type: ignore[arg-type]

    return {
        "server_evaluate_us": round(per_element(lambda: [key.evaluate(b) for b in blinded]), 1),
        "client_blind_us": round(per_element(lambda: [oprf.blind(x) for x in inputs]), 1),
        "client_finalize_us": round(per_element(
            lambda: [oprf.finalize(x, r, e) for x, (r, _), e in zip(
                inputs, pairs, evaluated, strict=True)]), 1),
        # What the client does: one scalar inversion per batch instead of one per element.
        "client_finalize_batch_us": round(per_element(
            lambda: oprf.finalize_batch(inputs, [r for r, _ in pairs], evaluated)), 1),
    }


def _over_https() -> dict[str, dict[str, float]]:
    from safehub.connection import write_secret
    from safehub.deploy.kafka.certificates import ensure_certificates
    from safehub.services.keyservice.client import KeyServiceClient
    from safehub.services.keyservice.keys import write_key_file

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_key_file(folder / "keys", 1, SEED, b"bench")
        write_secret(folder / "bench.secret", os.urandom(16).hex())
        tls = ensure_certificates(folder / "tls")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "bench.keyservice_bench", "--serve",
                                   str(port), str(folder)])
        try:
            url = f"https://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{url}/healthz", timeout=1,
                              verify=ssl.create_default_context(cafile=str(tls.ca_file)))
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("bench key service did not start") from None
                    time.sleep(0.2)
            secret, ca = folder / "bench.secret", tls.ca_file
            with KeyServiceClient(url, secret, ca, batch_size=BATCH, workers=1) as one:
                one.evaluate(1, [b"warm up"])  # TLS handshake, imports
                sequential = _measure(server.pid, one, BATCH, ROUNDS)
            with KeyServiceClient(url, secret, ca, batch_size=BATCH, workers=2) as two:
                two.start_workers()
                two.evaluate(1, [b"warm up %d" % i for i in range(2 * BATCH)])  # workers up
                pipelined = _measure(server.pid, two, PIPELINED, ROUNDS * BATCH // PIPELINED)
        finally:
            server.terminate()
            server.wait(10)
    return {"batch_1000_one_call_at_a_time": sequential,
            f"{PIPELINED}_inputs_batches_of_1000_two_worker_processes": pipelined}


def _client_cpu_seconds() -> float:
    """This process and the client's worker processes (services/keyservice/workers.py)."""
    from safehub.services.keyservice import workers

    return time.process_time() + sum(_cpu_seconds(pid) for pid in workers.pids())


def _measure(server_pid: int, client: object, per_call: int, rounds: int) -> dict[str, float]:
    inputs = [f"MK2|FIRST{i}|SURNAME{i}|2012-03-04".encode() for i in range(per_call)]
    server_cpu0, client_cpu0 = _cpu_seconds(server_pid), _client_cpu_seconds()
    wall0 = time.perf_counter()
    for _ in range(rounds):
        client.evaluate(1, inputs)  # type: ignore[attr-defined]
    wall = time.perf_counter() - wall0
    client_cpu = _client_cpu_seconds() - client_cpu0
    server_cpu = _cpu_seconds(server_pid) - server_cpu0
    n = rounds * per_call
    return {
        "elements": n,
        "server_cpu_us_per_element": round(server_cpu / n * 1e6, 1),
        "client_cpu_us_per_element": round(client_cpu / n * 1e6, 1),
        "wall_us_per_element": round(wall / n * 1e6, 1),
        "elements_per_s": int(n / wall),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "FOLDER"))
    args = parser.parse_args(argv)
    if args.serve:
        _serve(int(args.serve[0]), Path(args.serve[1]))
        return 0
    results = {
        "what": ("OPRF key service (RFC 9497 ristretto255-SHA512, rbcl/libsodium): in_process "
                 "per element on one core; https: server and client as separate processes "
                 "on this machine, CPU of each per element, wall per element end to end"),
        # The machine is shared: a busy second core slows the two-in-flight figure most.
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1min_at_start": round(os.getloadavg()[0], 2)},
        "in_process": _in_process(),
        "https": _over_https(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
