"""`safehub demo`: the whole pipeline from nothing, on a simulated population.

Starts a local Apache Kafka (the launcher in deploy/, cluster "demo"), creates the topics,
starts the correlator, router, inbox, audit sink and web page as child processes (SQLite files
and logs in the demo folder), streams a simulated population through the agencies' real
publishers (pseudonymised at the edge, a vault per agency), starts the agencies'
re-identification desk (`safehub reid serve` for every agency, with its vault and its own
records: services/demo_agencies.py), waits until every topic has been consumed, and prints where
to look and what happened. `--reid-drill N` then works N alerts' re-identification through the
pages' APIs (services/reid_drill.py). Ctrl-C, `--duration` or `--exit-when-done` stop everything
it started, broker included, and nothing else.

    safehub demo [--children 1500] [--seed 2025] [--folder DIR] [--exit-when-done]
                 [--reid-drill N]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from safehub import topics
from safehub.connection import KafkaConnection
from safehub.deploy.kafka.launcher import Cluster, free_port, state_root
from safehub.deploy.registry import ADMIN, Service, load_registry
from safehub.errors import ConfigError, SafehubError
from safehub.producers.keying import Keying
from safehub.producers.keysource import KeyService, KeySource
from safehub.producers.simulation.trajectories import Population, simulate
from safehub.services import demo_agencies as agencies
from safehub.services import demo_pipeline as pipeline
from safehub.services.demo_agencies import REID_SERVICE, ensure_hub_keys, hub_key_folders
from safehub.services.keyservice import local as local_keyservice
from safehub.services.supervisor import (
    ServiceSpec,
    Supervisor,
    missing_commands,
    python_env,
)
from safehub.settings import DemoEnv, RouterEnv, TopicsEnv, load

SETTLE_QUIET_S = 6.0  # everything consumed and nothing new for this long: the run is done


@dataclass(frozen=True, slots=True)
class DemoSettings:
    folder: Path
    children: int
    months: int
    seed: int
    authorities: int
    duration: float | None  # stop after this many seconds in all
    exit_when_done: bool
    settle_timeout: float
    web_port: int
    reid_port: int
    reid_drill: int  # alerts whose re-identification is worked through, after settling
    # Use this cluster instead of starting one (it is left running), as the admin principal
    # named by SAFEHUB_KAFKA_SECRETS / SAFEHUB_KAFKA_PASSWORD_FILE and SAFEHUB_KAFKA_CA_FILE.
    bootstrap: str | None
    topic_prefix: str
    skip: frozenset[str]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DemoSettings:
        ports = load(DemoEnv)
        return cls(
            folder=(Path(args.folder) if args.folder else state_root().parent / "demo").resolve(),
            children=args.children, months=args.months, seed=args.seed,
            authorities=args.authorities, duration=args.duration,
            exit_when_done=args.exit_when_done, settle_timeout=args.settle_timeout,
            web_port=ports.web_port if args.web_port is None else args.web_port,
            reid_port=ports.reid_port if args.reid_port is None else args.reid_port,
            reid_drill=args.reid_drill,
            bootstrap=args.bootstrap,
            topic_prefix=load(TopicsEnv).prefix if args.bootstrap else "",
            skip=frozenset(args.skip),
        )

    def db(self, name: str) -> str:
        return f"sqlite:///{self.folder / (name + '.sqlite')}"


class Stop(Exception):
    """SIGTERM (or SIGINT) asked the demo to stop."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folder", default=None,
                        help="where the demo keeps its databases, keys and logs "
                             "(default: the safehub state folder, ~/.local/state/safehub/demo)")
    parser.add_argument("--children", type=int, default=1500)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--authorities", type=int, default=5,
                        help="local authorities to simulate (the fifth, York, has no route: "
                             "its alerts show the fallback receiver)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop everything after this many seconds")
    parser.add_argument("--exit-when-done", action="store_true",
                        help="stop once the population has gone all the way through")
    parser.add_argument("--settle-timeout", type=float, default=300.0,
                        help="longest wait for the pipeline to consume everything")
    parser.add_argument("--web-port", type=int,
                        help="the hub's page (default SAFEHUB_WEB_PORT, else 8080)")
    parser.add_argument("--reid-port", type=int,
                        help="the agencies' re-identification page (default SAFEHUB_REID_PORT, "
                             "else 8090)")
    parser.add_argument("--reid-drill", type=int, default=0, metavar="N",
                        help="once settled, hub users ask the contributing agencies of N alerts "
                             "who the child is, officers approve about half and decline the "
                             "rest, and the hub opens every approved identity (all through the "
                             "pages' APIs), then the demo settles again")
    parser.add_argument("--bootstrap", default=None,
                        help="use this running Kafka instead of starting one (not stopped), as "
                             "the admin principal of SAFEHUB_KAFKA_SECRETS and "
                             "SAFEHUB_KAFKA_CA_FILE; SAFEHUB_TOPIC_PREFIX then namespaces the "
                             "demo's topics and ACLs")
    parser.add_argument("--skip", action="append", default=[], metavar="SERVICE",
                        choices=["web", "audit-sink", REID_SERVICE],
                        help="run without this service (repeatable)")


def service_specs(settings: DemoSettings, receivers: list[str]) -> list[ServiceSpec]:
    """Each service runs as its own principal; the inbox and the web page hold one principal
    per hub they serve (each hub's password file is in SAFEHUB_KAFKA_SECRETS)."""
    f = settings.folder
    reid_keys = str(hub_key_folders(f)[0])
    specs = [
        ServiceSpec("correlator", ("correlator",), {
            "SAFEHUB_KAFKA_PRINCIPAL": "correlator",
            "SAFEHUB_CORRELATOR_DATA_DIR": str(f / "correlator"),
        }),
        ServiceSpec("router", ("router",), {
            "SAFEHUB_KAFKA_PRINCIPAL": "router",
            "SAFEHUB_ROUTER_DATABASE_URL": settings.db("router"),
        }),
        ServiceSpec("inbox", ("inbox",), {
            "SAFEHUB_INBOX_AGENCIES": ",".join(receivers),
            "SAFEHUB_INBOX_DATABASE_URL": settings.db("inbox"),
            "SAFEHUB_REID_KEYS": reid_keys,
        }),
        ServiceSpec("audit-sink", ("audit", "sink"), {
            "SAFEHUB_KAFKA_PRINCIPAL": "audit-sink",
            "SAFEHUB_AUDIT_DB_URL": settings.db("audit"),
            "SAFEHUB_AUDIT_SIGNING_KEY": _secret(f / "keys" / "audit-signing.hex"),
            "SAFEHUB_AUDIT_CHECKPOINT_SECONDS": "5",
        }),
        ServiceSpec("web", ("web",), {
            "SAFEHUB_INBOX_DATABASE_URL": settings.db("inbox"),
            "SAFEHUB_WEB_USERS": str(f / "users.toml"),
            "SAFEHUB_WEB_SECRET_FILE": _secret_file(f / "keys" / "web-session.hex"),
            "SAFEHUB_WEB_PORT": str(settings.web_port),
            "SAFEHUB_REID_KEYS": reid_keys,
            # HTTPS, with the certificate the agencies' desk serves too (one CA to trust).
            "SAFEHUB_WEB_TLS_CERT": str(agencies.pages_tls(f)[0].cert),
            "SAFEHUB_WEB_TLS_KEY": str(agencies.pages_tls(f)[0].key),
        }),
    ]
    return [s for s in specs if s.name not in settings.skip]


def _secret_file(path: Path) -> str:
    """The path of a key made once per demo folder (as `_secret`), for a service that reads
    its secret from a file."""
    _secret(path)
    return str(path)


def _secret(path: Path, size: int = 32) -> str:
    """A key made once per demo folder (hex), so a restarted demo keeps linking and verifying."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(size))
        path.chmod(0o600)
    return path.read_text().strip()


def run(args: argparse.Namespace) -> int:
    settings = DemoSettings.from_args(args)
    # Migrations announce themselves at INFO; the demo's own output is the summary.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # httpx announces every call to the key service at INFO (URL and status only).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    if settings.children < 1:
        raise ConfigError("--children must be at least 1")
    if settings.reid_drill and {"web", REID_SERVICE} & settings.skip:
        raise ConfigError("--reid-drill needs the web page and the agencies' desk (no --skip)")
    from safehub.services.router.table import load_routing_table

    receivers = sorted(load_routing_table(load(RouterEnv).routing_table).receivers())
    specs = service_specs(settings, receivers)
    missing = missing_commands(specs)
    if missing:
        raise SafehubError(
            "cannot run the demo: these services are not available in this installation: "
            + "; ".join(missing)
            + ". Install the complete package, or leave optional ones out with --skip."
        )
    settings.folder.mkdir(parents=True, exist_ok=True)
    claim_folder(settings.folder)
    if not settings.bootstrap:
        clear_previous_run(settings.folder)
    password, users = write_users(settings.folder, receivers)
    ensure_hub_keys(settings.folder, receivers)
    started = time.monotonic()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise Stop()

    previous = signal.signal(signal.SIGTERM, on_term)
    if settings.duration is not None:
        # A hard bound on the whole run, whatever it is doing when the time is up.
        signal.signal(signal.SIGALRM, on_term)
        signal.setitimer(signal.ITIMER_REAL, settings.duration)
    cluster = None if settings.bootstrap else Cluster("demo")
    # Who a child is comes from its own spec, never from the demo's own (admin) settings.
    supervisor = Supervisor(settings.folder, {
        k: v for k, v in python_env().items()
        if k not in ("SAFEHUB_KAFKA_PRINCIPAL", "SAFEHUB_KAFKA_PASSWORD_FILE")})
    try:
        return _run(settings, specs, receivers, cluster, supervisor, started, (password, users))
    except (KeyboardInterrupt, Stop):
        print("\nstopping ...", flush=True)
        return 0 if settings.duration is not None or not settings.exit_when_done else 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        stopped = supervisor.stop_all()
        if stopped:
            print("services stopped: " + ", ".join(
                f"{name} ({'ok' if code == 0 else f'exit {code}'})" for name, code in stopped))
        if cluster is not None and cluster.state() is not None:
            cluster.down()
            print("kafka stopped")
        signal.signal(signal.SIGTERM, previous)
        (settings.folder / "demo.pid").unlink(missing_ok=True)


def _run(
    settings: DemoSettings, specs: list[ServiceSpec], receivers: list[str],
    cluster: Cluster | None, supervisor: Supervisor, started: float,
    sign_in: tuple[str, list[str]],
) -> int:
    print(f"simulating {settings.children} children over {settings.months} months "
          f"(seed {settings.seed}) ...", flush=True)
    pop = simulate(settings.seed, children=settings.children, months=settings.months,
                   authorities=settings.authorities)
    registry = load_registry()
    unknown = sorted(set(receivers) - set(registry.hubs))
    if unknown:
        raise ConfigError(f"routing table receivers that are not hubs in the agency registry: "
                          f"{', '.join(unknown)}")
    if cluster is not None:
        if cluster.running_nodes():
            print("a previous demo's broker is still running: stopping it", flush=True)
            cluster.down()
        print("starting kafka (first run downloads the broker with Maven) ...", flush=True)
        admin = cluster.up(nodes=1).connection(ADMIN)
    else:
        assert settings.bootstrap is not None
        admin = replace(KafkaConnection.from_env(ADMIN), bootstrap=settings.bootstrap)
    prefix = settings.topic_prefix
    created = pipeline.prepare_cluster(admin, registry, prefix, pop.world.agency_ids)
    print(f"kafka at {admin.bootstrap} (TLS, SCRAM; CA {admin.ca_file}): {created} topics "
          f"created, {len(registry.parties)} principals with their ACLs", flush=True)
    env = {"SAFEHUB_KAFKA_BOOTSTRAP": admin.bootstrap,
           "SAFEHUB_KAFKA_SECRETS": str(admin.password_file.parent),
           "SAFEHUB_KAFKA_CA_FILE": str(admin.ca_file),
           "SAFEHUB_TOPIC_PREFIX": prefix}
    health = health_ports(settings.folder, [s.name for s in specs]
                          + ["keyservice", *([] if REID_SERVICE in settings.skip
                                             else [REID_SERVICE])])
    for spec in specs:
        supervisor.start(ServiceSpec(spec.name, spec.argv,
                                     {**env, **spec.env, **health_env(health, spec.name)}))
    print("services started: " + ", ".join(s.name for s in specs)
          + f" (logs in {supervisor.logs}; /metrics, /livez and /readyz of each on the port "
          f"{settings.folder / HEALTH_FILE} names)", flush=True)
    with keyservice_running(settings, supervisor, {**env, **health_env(health, "keyservice")},
                            pop.world.agency_ids) as keys:
        return _publish_and_watch(settings, admin, pop, keys, supervisor,
                                  {**env, **health_env(health, REID_SERVICE)}, started, sign_in)


HEALTH_FILE = "health.json"


def health_ports(folder: Path, services: list[str]) -> dict[str, int]:
    """A free loopback port for each service's /metrics, /livez and /readyz, written to
    <folder>/health.json (service -> port) for an operator or a test to scrape."""
    ports = {name: free_port() for name in services}
    (folder / HEALTH_FILE).write_text(json.dumps(ports, indent=2) + "\n")
    return ports


def health_env(ports: dict[str, int], service: str) -> dict[str, str]:
    port = ports.get(service)
    return {} if port is None else {"SAFEHUB_HEALTH_PORT": str(port),
                                    "SAFEHUB_HEALTH_HOST": "127.0.0.1"}


def _publish_and_watch(
    settings: DemoSettings, admin: KafkaConnection, pop: Population, keys: DemoKeyService,
    supervisor: Supervisor, env: dict[str, str], started: float,
    sign_in: tuple[str, list[str]],
) -> int:
    prefix, check = settings.topic_prefix, supervisor.check
    publishing = time.monotonic()
    published = pipeline.publish_population(
        pop, admin, prefix, keys.keying, settings.folder / "vaults", check)
    print(f"published {published.delivered} events from {len(pop.world.agencies)} agencies "
          f"in {time.monotonic() - publishing:.1f} s ({published.rejected} rejected by the "
          f"publishers, {published.duplicates} resent duplicates)", flush=True)
    officers: dict[str, str] = {}
    if REID_SERVICE not in settings.skip:
        # After publishing: the desk opens the vaults the publishers made.
        officers = agencies.start_desk(settings.folder, settings.reid_port, pop, supervisor,
                                       env, sign_in[0])
    deadline = time.monotonic() + settings.settle_timeout
    positions = ({} if "audit-sink" in settings.skip
                 else {topics.audit(prefix): pipeline.audit_position(settings.db("audit"))})
    unread = pipeline.wait_settled(admin, prefix, deadline, SETTLE_QUIET_S, check, positions)
    drill: dict[str, Any] | None = None
    if settings.reid_drill and not unread:
        drill = agencies.drill(f"https://127.0.0.1:{settings.web_port}",
                               f"https://127.0.0.1:{settings.reid_port}", settings.reid_drill,
                               sign_in, officers, check, agencies.trust(settings.folder))
        unread = pipeline.wait_settled(admin, prefix, time.monotonic() + settings.settle_timeout,
                                       SETTLE_QUIET_S, check, positions)
    settled = not unread
    summary = pipeline.summarise(admin, prefix, settings.db("inbox"), pop)
    if drill is not None:
        summary["reid_drill"] = drill
    summary["published"] = published.delivered
    summary["settled"] = settled
    summary["not_read_to_the_end"] = unread
    summary["keyservice"] = keys.summary()
    summary["seconds"] = round(time.monotonic() - started, 1)
    (settings.folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    # Users with alerts first: those are the ones worth signing in as.
    with_alerts = [f"{a}-demo" for a in summary["inbox_by_agency"]]
    users = with_alerts + [u for u in sign_in[1] if u not in with_alerts]
    _print_summary(settings, {**summary, "password": sign_in[0], "users": users,
                              "officers": sorted(officers.values())}, pop)
    if settings.exit_when_done:
        return 0 if settled and (drill is None or "error" not in drill) else 1
    print("press Ctrl-C to stop everything", flush=True)
    while True:  # until Ctrl-C, SIGTERM or the --duration alarm
        check()
        time.sleep(0.5)


@dataclass
class DemoKeyService:
    """The running key service as the demo's publishers use it: each agency's keying opened as
    `safehub publish` opens it (producers/keysource.py: the agency's own bearer secret, the
    run's cache of outputs, the client's batches and calls in flight)."""

    service: local_keyservice.LocalKeyService
    epochs: list[int]
    used_before: dict[str, int] = field(default_factory=dict)
    opened: dict[str, tuple[Keying, Callable[[], None]]] = field(default_factory=dict)

    def keying(self, agency: str) -> Keying:
        """What an agency's publisher derives its match keys (epoch 1) and blocks (epoch 0)
        with: the OPRF through the service; the agency holds no key."""
        if agency not in self.opened:
            source = KeySource(local_keyservice.FIRST_MATCH_EPOCH, None, KeyService(
                self.service.url, self.service.secret_file(agency), self.service.ca_file), {})
            self.opened[agency] = source.open()
        return self.opened[agency][0]

    def elements_used(self) -> dict[str, int]:
        """Each agency's elements evaluated today, as the service's operator sees them (the
        counters are kept across runs, so a run's own use is the difference)."""
        rows = self.service.usage()["agencies"]
        return {str(r["agency"]): int(r["day"]["used"]) for r in rows}

    def summary(self) -> dict[str, Any]:
        try:
            now = self.elements_used()
        except SafehubError as exc:
            return {"url": self.service.url, "epochs": self.epochs, "usage": str(exc)}
        used = {a: n - self.used_before.get(a, 0) for a, n in now.items()}
        return {"url": self.service.url, "epochs": self.epochs,
                "elements_evaluated": sum(used.values()),
                "agencies_served": sum(1 for n in used.values() if n > 0)}

    def close(self) -> None:
        for _, close in self.opened.values():
            close()
        self.opened.clear()


@contextmanager
def keyservice_running(
    settings: DemoSettings, supervisor: Supervisor, kafka_env: dict[str, str],
    agencies: Iterable[str],
) -> Iterator[DemoKeyService]:
    """`safehub keyservice serve` for the demo's agencies, stopped when the block ends. It
    listens on 127.0.0.1 on a free port with a certificate from the launcher's local CA code;
    its keys (epoch 0 for blocks, epoch 1 for match keys), each agency's bearer secret and the
    quota counters stay in <folder>/keyservice across runs, so that a second run's pseudonyms
    are the first run's. It writes quota refusals to the audit topic as the `keyservice`
    principal (made by `access apply` with every registry party). It runs under the demo's
    supervisor, so a second Ctrl-C that cuts this block's own stop short still leaves it to
    the supervisor's."""
    service = local_keyservice.prepare(settings.folder / "keyservice", agencies, free_port())
    running = supervisor.start(ServiceSpec(
        "keyservice", service.argv(),
        {**kafka_env, "SAFEHUB_KAFKA_PRINCIPAL": Service.KEYSERVICE}))
    keys: DemoKeyService | None = None
    try:
        epochs = service.wait_ready(supervisor.check)
        print(f"key service at {service.url} (epochs {', '.join(map(str, epochs))}; "
              f"files in {service.folder})", flush=True)
        keys = DemoKeyService(service, epochs)
        keys.used_before = keys.elements_used()
        yield keys
    finally:
        if keys is not None:
            keys.close()
        if running.process.poll() is None:
            running.process.terminate()  # the supervisor reports how it ended
            try:
                running.process.wait(20)
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait(10)


def _print_summary(settings: DemoSettings, summary: dict[str, Any], pop: Population) -> None:
    tiers = summary["alerts_by_tier"]
    lines = [
        "",
        "safehub demo",
        f"  population   {len(pop.world.children)} children in "
        f"{len(pop.world.authorities)} local authorities, {len(pop.world.agencies)} agencies",
        f"  events       {summary['published']} published",
        "  alerts       " + (", ".join(f"{t} {n}" for t, n in tiers.items()) or "none"),
        f"  inbox        {summary['inbox_rows']} notifications for "
        f"{len(summary['inbox_by_agency'])} hubs",
        _keyservice_line(summary["keyservice"]),
        f"  time taken   {summary['seconds']} s"
        + ("" if summary["settled"] else " (stopped before everything was consumed: "
                                         + ", ".join(summary["not_read_to_the_end"]) + ")"),
    ]
    if "web" not in settings.skip:
        lines += [
            f"  web page     https://127.0.0.1:{settings.web_port}/",
            f"  sign in      user {', '.join(summary['users'][:3])} (or any <agency>-demo), "
            f"password {summary['password']}",
        ]
    if summary["officers"]:
        lines += [
            f"  agencies     https://127.0.0.1:{settings.reid_port}/ (re-identification requests)",
            f"  sign in      officer {', '.join(summary['officers'][:2])} (or any "
            f"<agency>-officer), password {summary['password']}",
        ]
    if "web" not in settings.skip or summary["officers"]:
        # The pages' certificate is from the demo's own local CA: trust it, or accept the
        # browser's warning, to sign in.
        lines.append(f"  trust CA     {agencies.pages_tls(settings.folder)[1]} (the pages' HTTPS)")
    lines += [f"  files        {settings.folder} (summary.json, logs/)", ""]
    print("\n".join(lines), flush=True)


def _keyservice_line(keys: dict[str, Any]) -> str:
    line = f"  key service  {keys['url']}, epochs {keys['epochs']}: "
    if "elements_evaluated" not in keys:
        return line + f"usage not available ({keys['usage']})"
    return line + (f"{keys['elements_evaluated']} blinded elements evaluated for "
                   f"{keys['agencies_served']} agencies (it never saw an identifier)")


def claim_folder(folder: Path) -> None:
    """One demo per folder at a time: a second one says so, instead of stopping the first
    one's broker and then failing on the web port. The claim ends with this process."""
    pidfile = folder / "demo.pid"
    try:
        other = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        other = 0
    if other and other != os.getpid():
        try:
            alive = b"demo" in Path(f"/proc/{other}/cmdline").read_bytes()
        except OSError:
            alive = False  # gone: a demo that was killed outright left its claim behind
        if alive:
            raise SafehubError(f"a demo is already running from {folder} (pid {other}); "
                               "stop it with Ctrl-C where it runs, or use --folder")
    pidfile.write_text(f"{os.getpid()}\n")


def clear_previous_run(folder: Path) -> None:
    """The demo's own broker starts empty, so the hub's stores and the agencies' vaults of an
    earlier run would disagree with it (the audit ledger refused the new log's entries): start
    them afresh too. Keys, users and their password are kept, so sign-in stays the same."""
    stale = [p for p in [*folder.glob("*.sqlite*"), *folder.glob(f"{agencies.AGENCIES}/*.sqlite*")]
             if p.is_file()]
    for path in stale:
        path.unlink()
    for sub in ("correlator", "vaults"):
        shutil.rmtree(folder / sub, ignore_errors=True)
    if stale:
        print(f"cleared the previous run's databases in {folder}", flush=True)


def write_users(folder: Path, agencies: list[str]) -> tuple[str, list[str]]:
    """A hub user per receiving agency, sharing one demo password made for this folder."""
    from safehub.services.web.users import hash_password

    password = _secret(folder / "keys" / "demo-password.txt", 9)
    path = folder / "users.toml"
    refs = [f"{agency}-demo" for agency in agencies]
    if not path.exists():
        hashed = hash_password(password)  # one hash: scrypt is slow on purpose
        entries = [
            f'[[user]]\nref = "{ref}"\nagency = "{agency}"\npassword = "{hashed}"\n'
            for ref, agency in zip(refs, agencies, strict=True)
        ]
        path.write_text("# Demo hub users made by `safehub demo`.\n\n" + "\n".join(entries))
        path.chmod(0o600)
    return password, refs
