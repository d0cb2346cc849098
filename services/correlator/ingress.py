"""Which ingress topics the correlator reads, and telling operators about the ones it does not.

faust-streaming's `pattern=` topics subscribe to nothing (faust-streaming issue #62, "XXX
pattern does not work" in its aiokafka driver), so the pattern is resolved against the broker's
topic list when a worker starts. A topic created later, for a newly onboarded agency, is read
only once the workers restart. Until then its events wait on the topic (nothing is lost), but
nothing correlates them: each worker checks the topic list every few minutes and says so in its
log, naming the topics and what to do.

With several workers, all of them must be stopped before any is started again. faust's
assignor shares out each set of topics among the workers subscribed to that set: while a
restarted worker reads the new topic and the others do not, the new topic's partitions are
shared out apart from the others' (and from the table's changelog), so events of one block
could be correlated by two workers at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Sequence

import faust
from kafka.errors import KafkaError

from safehub import topics
from safehub.bus import make_admin
from safehub.connection import KafkaConnection
from safehub.errors import BrokerError

log = logging.getLogger(__name__)


def ingress_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(prefix + topics.Family.INGRESS.stem) + ".*")


def partition_counts(kafka: KafkaConnection, attempts: int = 1,
                     pause_s: float = 2.0) -> dict[str, int]:
    """Topic -> partition count, for the topics on the broker that this principal may see
    (those it has rights on: the broker leaves the others out).

    With `attempts` > 1 a failure is retried with a new client: the admin client asks one
    broker, and a worker starting while that one is down (one of three killed; seen in
    bench/fault_bench.py) would otherwise exit when the other two could answer."""
    for attempt in range(1, attempts + 1):
        try:
            admin = make_admin(kafka, "safehub-correlator-admin")
            try:
                described = admin.describe_topics()
            finally:
                admin.close()
        except (KafkaError, BrokerError) as exc:
            if attempt == attempts or not _retriable(exc):
                raise BrokerError(f"cannot list topics at {kafka.bootstrap}: {exc}") from exc
            if attempt % 4 == 1:  # not a line every half second in an outage
                log.warning("cannot list topics at %s (%s); trying again in %.1f s (%d of %d)",
                            kafka.bootstrap, exc, pause_s, attempt, attempts)
            time.sleep(pause_s)
            continue
        return {t["name"]: len(t["partitions"]) for t in described if not t.get("error_code")}
    raise AssertionError("unreachable: the last attempt returns or raises")


def _retriable(exc: BaseException) -> bool:
    """A broker away or not ready (kafka-python marks those retriable), not a refusal: a wrong
    password or a missing right fails at once."""
    cause = exc if isinstance(exc, KafkaError) else exc.__cause__
    return bool(getattr(cause, "retriable", False))


def list_ingress(kafka: KafkaConnection, prefix: str) -> list[str]:
    """The ingress topics on the broker now that this principal may read, sorted."""
    return matching_ingress(partition_counts(kafka), prefix)


def matching_ingress(names: Iterable[str], prefix: str) -> list[str]:
    pattern = ingress_pattern(prefix)
    return sorted(n for n in names if pattern.match(n))


def unread(found: Iterable[str], read: Iterable[str]) -> list[str]:
    return sorted(set(found) - set(read))


def warn_of_unread_topics(app: faust.App, kafka: KafkaConnection, prefix: str, read: Sequence[str],
                          every_s: float) -> None:
    """Every `every_s`, log a warning naming the ingress topics this worker does not read."""

    async def check() -> None:
        loop = asyncio.get_running_loop()
        try:
            # kafka-python blocks: off the worker's event loop.
            found = await loop.run_in_executor(None, list_ingress, kafka, prefix)
        except BrokerError as exc:
            log.warning("could not check for new ingress topics: %s", exc)
            return
        new = unread(found, read)
        if new:
            log.warning("ingress topic(s) %s are NOT read by this worker: it reads the topics "
                        "that existed when it started. Stop every correlator worker, then start "
                        "them again, to correlate their events (which wait on the topics; none "
                        "is lost).",
                        ", ".join(new))

    app.timer(every_s)(check)
