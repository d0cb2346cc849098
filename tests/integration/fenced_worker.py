"""A stand-in for a correlator worker's outputs, in its own process, for the fencing tests.

    python -m tests.integration.fenced_worker open AUDIT TXN_ID
        begins a transaction, sends b"left open" to AUDIT, prints "open", then waits for a
        line on stdin: "commit" tries to commit and prints "committed" or "fenced".
    python -m tests.integration.fenced_worker writer CORRELATED AUDIT STATES TXN_ID
        writes b"first" through an OutputWriter, prints "ready", then at each stdin line writes
        that line's bytes and prints "ok" or "refused: <the BrokerError>".

It connects as the environment says (safehub.connection; the correlator principal by default),
as a worker does.

A process of its own, as a real worker is: a fenced aiokafka producer leaves futures failed
with one shared exception behind, which the test process should not have to carry.
"""

from __future__ import annotations

import asyncio
import sys

from aiokafka.errors import ProducerFenced

from safehub.bus import make_aio_producer
from safehub.connection import KafkaConnection
from safehub.errors import BrokerError
from safehub.services.correlator.outputs import TRANSACTION_TIMEOUT_MS, OutputWriter


async def line() -> str:
    return (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip()


async def hold_open(audit: str, transactional: str) -> None:
    kafka = KafkaConnection.from_env("correlator")
    producer = make_aio_producer(kafka, "fenced-worker", transactional_id=transactional,
                                 enable_idempotence=True,
                                 transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)
    await producer.start()
    await producer.begin_transaction()
    await (await producer.send(audit, b"left open", partition=0))
    print("open", flush=True)
    if await line() == "commit":
        try:
            await producer.commit_transaction()
            print("committed", flush=True)
        except ProducerFenced:
            print("fenced", flush=True)


async def write_lines(correlated: str, audit: str, states: str, transactional: str) -> None:
    kafka = KafkaConnection.from_env("correlator")
    writer = OutputWriter(kafka, "fenced-worker", correlated, audit, transactional)
    await writer.write([], [b"first"], states, [])
    print("ready", flush=True)
    while text := await line():
        try:
            await writer.write([], [text.encode()], states, [])
            print("ok", flush=True)
        except BrokerError as exc:
            print(f"refused: {exc}", flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    asyncio.run(hold_open(*args) if mode == "open" else write_lines(*args))
