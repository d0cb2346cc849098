"""`safehub kafka up|down|status`: the local broker for development, the demo and tests.

The cluster is secure (SASL_SSL for clients); `up` and `status` print where the CA and the
password files are, never a password.
"""

from __future__ import annotations

import argparse

from safehub.deploy.kafka.launcher import (
    DEFAULT_BROKER_PORT,
    Cluster,
    ClusterState,
    fetch_jars,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status", "fetch"])
    parser.add_argument("--nodes", type=int, choices=[1, 3], default=1)
    parser.add_argument(
        "--port", type=int, default=DEFAULT_BROKER_PORT,
        help="first client (SASL_SSL) port on 127.0.0.1; controllers use port+100, "
        "the internal (replication) listeners port+200",
    )
    parser.add_argument("--name", default="default", help="cluster name (state folder)")
    parser.add_argument(
        "--purge", action="store_true",
        help="with down: also delete the CA, the node key and the password files "
        "(clients then need the new ones from the next up)",
    )


def _where(state: ClusterState) -> list[str]:
    conn = state.connection()
    return [
        f"  CA certificate: {state.ca_file}",
        f"  password files: {state.secrets_dir} (admin: {conn.password_file.name})",
        f"export SAFEHUB_KAFKA_BOOTSTRAP={state.bootstrap}",
        f"export SAFEHUB_KAFKA_CA_FILE={state.ca_file}",
        f"export SAFEHUB_KAFKA_SECRETS={state.secrets_dir}",
    ]


def run(args: argparse.Namespace) -> int:
    cluster = Cluster(args.name)
    if args.action == "fetch":
        print(f"broker jars in {fetch_jars()}")
        return 0
    if args.action == "up":
        state = cluster.up(nodes=args.nodes, base_port=args.port)
        pids = ", ".join(str(n.pid) for n in state.nodes)
        print(f"kafka '{state.name}' up (SASL_SSL, SCRAM-SHA-512): bootstrap {state.bootstrap} "
              f"(pids {pids})")
        print("\n".join(_where(state)))
        return 0
    if args.action == "down":
        stopped = cluster.down(purge=args.purge)
        print(f"stopped {len(stopped)} broker process(es)" if stopped else "nothing was running")
        if args.purge:
            print(f"removed {cluster.root} with its CA and password files")
        else:
            print(f"kept the CA and password files in {cluster.root} (--purge removes them)")
        return 0
    live = cluster.running_nodes()
    current = cluster.state()
    if not live or current is None:
        print(f"kafka '{args.name}': not running")
        return 3
    print(f"kafka '{args.name}': {len(live)}/{len(current.nodes)} node(s) up, "
          f"bootstrap {current.bootstrap} (SASL_SSL, SCRAM-SHA-512)")
    print("\n".join(_where(current)))
    return 0
