"""The `safehub` command. Each subcommand lives in its own module, imported only when used,
so that `safehub kafka status` does not pay for importing faust or SQLAlchemy.

A command module defines `configure(parser)` and `run(args) -> int`. To add a command, add one
line to COMMANDS.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import logging
import signal
import sys
from collections.abc import Sequence

from safehub.errors import SafehubError
from safehub.observability.logs import configure_logging, format_from_env
from safehub.settings.common import LogEnv
from safehub.settings.loader import load

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "kafka": ("safehub.deploy.kafka.command", "start, stop or inspect the local Apache Kafka"),
    "topics": ("safehub.deploy.topics", "create the topics defined in deploy/topics.toml"),
    "access": ("safehub.deploy.access", "apply or show principals and ACLs from the registry"),
    "deploy": ("safehub.deploy.render.command", "render the Kubernetes and compose files"),
    "publish": ("safehub.producers.command", "pseudonymise an agency export and publish it"),
    "correlator": ("safehub.services.correlator.command", "run the correlation stream processor"),
    "router": ("safehub.services.router.command", "route correlated alerts to lead agencies"),
    "inbox": ("safehub.consumers.inbox.command", "store an agency's alerts in its hub inbox"),
    "web": ("safehub.services.web.command", "serve the hub's web page and HTTP API"),
    "audit": ("safehub.services.audit.command", "replay, verify, or run the audit sink"),
    "deadletter": ("safehub.services.deadletters.command", "list, show or replay dead letters"),
    "reid": ("safehub.services.reid.command", "an agency's re-identification desk: serve"),
    "keyservice": ("safehub.services.keyservice.command", "the OPRF key service: keygen, serve"),
    "simulate": ("safehub.producers.simulation.command", "generate a synthetic population"),
    "demo": ("safehub.services.demo", "start everything on embedded defaults and stream a demo"),
}


def _build_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, str | None]:
    parser = argparse.ArgumentParser(
        prog="safehub",
        description="safehub: join the dots between agencies, on pseudonyms.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="log lines as text or one JSON object each (SAFEHUB_LOG_FORMAT)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # The first word that is not an option nor --log-format's value names the command.
    words = [a for i, a in enumerate(argv) if i == 0 or argv[i - 1] != "--log-format"]
    chosen = next((a for a in words if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.configure(p)
            p.set_defaults(_run=module.run)
    return parser, chosen


def _dump_stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>`: every thread's stack on stderr, the process going on. For an operator
    facing a service that stopped making progress; frames only, never a variable's value."""
    # stderr may not be a file (main called in-process, its output captured): then no dumps,
    # and the command runs as ever. io.UnsupportedOperation is an OSError.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        faulthandler.register(signal.SIGUSR1, all_threads=True)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser, _ = _build_parser(args_list)
    args = parser.parse_args(args_list)
    try:
        log_format = format_from_env(args.log_format)
        faust_level = (load(LogEnv).faust_level or "error").upper()
    except SafehubError as exc:
        print(f"safehub: {exc}", file=sys.stderr)
        return 2
    configure_logging(logging.DEBUG if args.verbose else logging.INFO, log_format,
                      args.command or "safehub")
    _dump_stacks_on_sigusr1()
    # Client chatter (kafka-python logs every refused reconnect as ERROR) is not for the
    # operator: our adapters translate the failures that matter into SafehubError. faust's and
    # mode's errors are kept: an agent that crashes is restarted by faust, and only says so there.
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    # SAFEHUB_FAUST_LOGLEVEL=INFO shows faust's rebalances and recovery, for diagnosis.
    for framework in ("faust", "mode"):
        logging.getLogger(framework).setLevel(faust_level)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    try:
        return int(run(args))
    except SafehubError as exc:
        print(f"safehub {args.command}: {exc}", file=sys.stderr)
        # A service stopped by its error policy (safehub.consuming.ServiceStopped) exits with
        # the code the policy declares, which the supervisor and docs/error-policies.md use.
        return int(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
