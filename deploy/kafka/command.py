"""`safehub kafka up|down|status`: the local broker for development, the demo and tests."""

from __future__ import annotations

import argparse

from safehub.deploy.kafka.launcher import DEFAULT_BROKER_PORT, Cluster, fetch_jars


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status", "fetch"])
    parser.add_argument("--nodes", type=int, choices=[1, 3], default=1)
    parser.add_argument(
        "--port", type=int, default=DEFAULT_BROKER_PORT,
        help="first broker port on 127.0.0.1 (controllers use port+100)",
    )
    parser.add_argument("--name", default="default", help="cluster name (state folder)")


def run(args: argparse.Namespace) -> int:
    cluster = Cluster(args.name)
    if args.action == "fetch":
        print(f"broker jars in {fetch_jars()}")
        return 0
    if args.action == "up":
        state = cluster.up(nodes=args.nodes, base_port=args.port)
        pids = ", ".join(str(n.pid) for n in state.nodes)
        print(f"kafka '{state.name}' up: bootstrap {state.bootstrap} (pids {pids})")
        print(f"export SAFEHUB_KAFKA_BOOTSTRAP={state.bootstrap}")
        return 0
    if args.action == "down":
        stopped = cluster.down()
        print(f"stopped {len(stopped)} broker process(es)" if stopped else "nothing was running")
        return 0
    live = cluster.running_nodes()
    current = cluster.state()
    if not live or current is None:
        print(f"kafka '{args.name}': not running")
        return 3
    print(f"kafka '{args.name}': {len(live)}/{len(current.nodes)} node(s) up, "
          f"bootstrap {current.bootstrap}")
    return 0
