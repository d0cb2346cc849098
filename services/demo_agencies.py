"""The agencies' side of `safehub demo`: their own records, their officers, their re-identification
desk, the hubs' key pairs they answer to, and the `--reid-drill` that works requests through.

Everything an agency holds lives under `<demo folder>/agencies/` (its records and the request
store of `safehub reid serve`) and `<demo folder>/vaults/` (its vault, written by its publisher);
nothing there is hub-side. Each agency's records are the simulated population's records of that
agency, written as the simulator's export (`records.jsonl`, 0600, with its column mapping) and
read back by the re-identification service with `read_export`, exactly as an agency's own
export would be: the identities stay in that process and in those files.

The hubs' key pairs stay in `<demo folder>/keys/reid/<hub>.key` (0600, read by the inbox and the
web page) across runs, their public halves in `<demo folder>/hub-keys/<hub>.pub` (what the
agencies answer to).
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from safehub.connection import write_secret
from safehub.errors import SafehubError
from safehub.producers.simulation.command import export_row, mapping_toml
from safehub.producers.simulation.export import by_agency
from safehub.producers.simulation.trajectories import Population
from safehub.services.reid.sealing import ensure_hub_key
from safehub.services.reid_drill import DrillError, run_drill
from safehub.services.supervisor import ServiceSpec, Supervisor
from safehub.services.web.pages import Tls, local_certificate
from safehub.services.web.users import hash_password, load_users

AGENCIES = "agencies"
REID_SERVICE = "reid"
WEB_TLS = "web-tls"  # the demo pages' local CA and certificate


def hub_key_folders(folder: Path) -> tuple[Path, Path]:
    """(private keys, registered public keys) of the hubs."""
    return folder / "keys" / "reid", folder / "hub-keys"


def ensure_hub_keys(folder: Path, hubs: Iterable[str]) -> Path:
    """A key pair for every hub the demo serves, made once per demo folder and kept. Returns
    the private folder (SAFEHUB_REID_KEYS of the inbox and the web page)."""
    private, public = hub_key_folders(folder)
    private.mkdir(parents=True, exist_ok=True)
    private.chmod(0o700)
    for hub in hubs:
        ensure_hub_key(private, public, hub)
    return private


@dataclass(frozen=True, slots=True)
class CaseExport:
    records: Path
    mapping: Path


def write_case_files(folder: Path, pop: Population) -> dict[str, CaseExport]:
    """Each agency's own records, as its system would export them, in its part of the folder."""
    out: dict[str, CaseExport] = {}
    sectors = {a.agency_id: a.sector for a in pop.world.agencies}
    root = folder / AGENCIES
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    for agency, records in by_agency(pop.records):
        where = root / agency
        where.mkdir(exist_ok=True)
        where.chmod(0o700)
        path = where / "records.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(export_row(record), ensure_ascii=False) + "\n")
        mapping = where / "mapping.toml"
        mapping.write_text(mapping_toml(sectors[agency]))
        out[agency] = CaseExport(path, mapping)
    return out


def write_officers(folder: Path, agencies: Iterable[str], password: str) -> dict[str, str]:
    """One designated officer per agency (`<agency>-officer`), sharing the demo's password, in
    the hub's users-file format with `agency` the agency id. Made again when an agency is new."""
    wanted = {agency: f"{agency}-officer" for agency in sorted(agencies)}
    path = folder / AGENCIES / "officers.toml"
    if path.exists():
        have = {u.ref for u in load_users(path).values()}
        if set(wanted.values()) <= have:
            return wanted
    hashed = hash_password(password)  # one hash: scrypt is slow on purpose
    entries = [f'[[user]]\nref = "{ref}"\nagency = "{agency}"\npassword = "{hashed}"\n'
               for agency, ref in wanted.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# Demo agency officers made by `safehub demo`.\n\n" + "\n".join(entries))
    return wanted


def reid_database(folder: Path) -> str:
    return f"sqlite:///{folder / AGENCIES / 'reid.sqlite'}"


def pages_tls(folder: Path) -> tuple[Tls, Path]:
    """The certificate both demo pages (hub and agencies) serve, from a local CA of the demo's
    own (kept in `web-tls/`, so a browser told to trust its `ca.pem` keeps trusting it), and
    that CA file."""
    return local_certificate(folder / WEB_TLS)


def trust(folder: Path) -> ssl.SSLContext:
    """What the demo's own clients verify the pages' certificate against."""
    return ssl.create_default_context(cafile=str(pages_tls(folder)[1]))


def reid_spec(folder: Path, port: int, exports: Mapping[str, CaseExport],
              kafka_env: Mapping[str, str]) -> ServiceSpec:
    """One `safehub reid serve` for every agency that has records, each as its own principal,
    with its vault (`vaults/<agency>.sqlite`, the publisher's) and its own export; over HTTPS
    with the demo pages' certificate."""
    tls, _ca = pages_tls(folder)
    argv = ["reid", "serve", "--users", str(folder / AGENCIES / "officers.toml"),
            "--hub-keys", str(hub_key_folders(folder)[1]), "--listen", f"127.0.0.1:{port}",
            "--database", reid_database(folder), "--vault-dir", str(folder / "vaults"),
            "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    for agency, export in sorted(exports.items()):
        argv += ["--agency", agency, "--export", f"{agency}={export.records}",
                 "--mapping", f"{agency}={export.mapping}"]
    secret = folder / "keys" / "reid-session.hex"
    if not secret.exists():
        write_secret(secret, secrets.token_hex(32))
    return ServiceSpec(REID_SERVICE, tuple(argv), {
        **kafka_env, "SAFEHUB_REID_SECRET": secret.read_text().strip()})


def start_desk(folder: Path, port: int, pop: Population, supervisor: Supervisor,
               kafka_env: Mapping[str, str], password: str) -> dict[str, str]:
    """`safehub reid serve` for every agency with records, under the demo's supervisor, ready
    to answer on 127.0.0.1. Returns agency -> its officer's sign-in."""
    exports = write_case_files(folder, pop)
    officers = write_officers(folder, exports, password)
    supervisor.start(reid_spec(folder, port, exports, kafka_env))
    url = f"https://127.0.0.1:{port}/login"
    deadline = time.monotonic() + 60
    while True:
        supervisor.check()
        try:
            httpx.get(url, timeout=2, verify=trust(folder))
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise SafehubError(f"the agencies' desk did not answer at {url} in 60 s; see "
                                   f"{supervisor.logs / (REID_SERVICE + '.log')}") from None
            time.sleep(0.3)
    print(f"agencies' desk at https://127.0.0.1:{port}/ for {len(exports)} agencies (their "
          f"records in {folder / AGENCIES})", flush=True)
    return officers


def drill(hub_url: str, agencies_url: str, alerts: int, sign_in: tuple[str, list[str]],
          officers: Mapping[str, str], check: Callable[[], None],
          verify: ssl.SSLContext | bool = True) -> dict[str, Any]:
    """`--reid-drill`: run it and say what happened (counts only); a failed step is reported
    in the result, not raised, so the demo still summarises and stops cleanly."""
    print(f"re-identification drill on {alerts} alerts ...", flush=True)
    try:
        result = run_drill(hub_url, agencies_url, sign_in[0], sign_in[1], officers, alerts,
                           check, verify=verify)
    except DrillError as exc:
        print(f"re-identification drill failed: {exc}", flush=True)
        return {"error": str(exc)}
    print(f"re-identification drill: {result.requests} requests on {result.alerts} alerts to "
          f"{len(result.agencies)} agencies: {result.approved} approved, {result.declined} "
          f"declined, {result.not_found} not found; {result.opened} identities opened at the "
          f"hub ({result.seconds} s)", flush=True)
    return result.as_dict()
