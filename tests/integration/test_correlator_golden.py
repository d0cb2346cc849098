"""The golden scenarios through the running correlator (`safehub correlator`, a real faust worker)
on the real, secure broker: the alerts on `correlated` are identical to the pure core's.

The correlator runs as the `correlator` principal with exactly its ACLs, in a namespace of its
own (conftest.secure_namespace); events are published by the agencies' own principals.

Each scenario gets its own linkage block; rows are produced round by round (row r of every
scenario, then wait until the correlator has journalled them), so the processor sees each
block's events in the table's order even though they arrive on different agencies' topics.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

import pytest

from safehub.schemas.codec import decode
from safehub.schemas.records import CorrelatedAlert
from safehub.schemas.vocabulary import AuditAction
from safehub.services.correlation.core import initial_state, step
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from tests.fixtures.correlator import Site, wait_until
from tests.golden.scenarios import all_scenarios, describe

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
def test_golden_scenarios_through_the_processor_give_the_cores_alerts(
        correlator_site: Callable[..., Site]) -> None:
    rules = load_rules(DEFAULT_RULES_PATH)
    scenarios = all_scenarios(first_block=3000, spread=7)
    site = correlator_site({r.event.agency_id: r.event.sector for s in scenarios for r in s.rows})
    agencies = list(site.ns.registry.agencies)

    expected: dict[str, list[CorrelatedAlert]] = {}
    for s in scenarios:
        state = initial_state()
        emitted = []
        for row in s.rows:
            state, alerts = step(rules, state, row.event)
            emitted.extend((row.number, a) for a in alerts)
        assert describe(s, emitted) == list(s.expected), s.name
        expected[s.name] = [a for _, a in emitted]

    correlator = site.correlator()
    correlator.start()
    out = site.out
    # Events beyond the history limit are dead-lettered, not accepted (issue 20).
    late = {s.rows[n - 1].event.event_id for s in scenarios for n in s.deadletters}
    assert late, "the golden scenarios include late events beyond the history limit"
    sent = 0
    for r in range(max(len(s.rows) for s in scenarios)):
        batch = [s.rows[r].event for s in scenarios if r < len(s.rows)]
        site.send(batch)
        sent += len(batch)
        wait_until(f"round {r} journalled", lambda n=sent: out.handled() >= n, 90, correlator)
    # A message that is not an event goes to the dead-letter topic, with its reason.
    site.agencies.send([(site.ns.ingress(agencies[0]), b"\0\0\0\1", b"not avro", None)])
    wait_until("dead letter", lambda: len(out.deadletter.poll()) >= len(late) + 1, 60,
               correlator)
    total = sum(len(v) for v in expected.values())
    wait_until("alerts", lambda: len(out.correlated.poll()) >= total, 60, correlator)
    assert correlator.stop() == 0
    records, entries = out.final()

    # The same alerts, value for value, in the same order for each child.
    got: dict[int, list[CorrelatedAlert]] = defaultdict(list)
    for rec in sorted(records, key=lambda r: (r.partition, r.offset)):
        alert = decode(rec.value, CorrelatedAlert)
        assert rec.key == alert.cluster_id.encode("ascii")
        got[alert.linkage_block].append(alert)
    for s in scenarios:
        block = s.rows[0].event.subject.linkage_block
        mine = got.pop(block, [])
        by_cluster = lambda alerts: {  # noqa: E731
            c: [a for a in alerts if a.cluster_id == c] for c in {a.cluster_id for a in alerts}}
        assert by_cluster(mine) == by_cluster(expected[s.name]), s.name
    assert not got

    actions = Counter(e.action for e in entries)
    assert actions[AuditAction.EVENT_ACCEPTED] == sent - len(late)
    assert actions[AuditAction.ALERT_EMITTED] == len(records)
    assert actions[AuditAction.EVENT_DEADLETTERED] == len(late) + 1
    assert late <= {e.subject_id for e in entries
                    if e.action is AuditAction.EVENT_DEADLETTERED}
    assert not late & {e.subject_id for e in entries if e.action is AuditAction.EVENT_ACCEPTED}
    dead_letters = out.deadletter.poll()
    assert all(dict(d.headers)["safehub.error.class"] == b"ValidationError"
               for d in dead_letters)
    late_letters = [d for d in dead_letters if d.value != b"not avro"]
    assert len(late_letters) == len(late) and len(dead_letters) == len(late) + 1
    for d in late_letters:
        assert decode(d.value).event_id in late
        assert dict(d.headers)["safehub.error.message"].startswith(
            b"occurred_at: is beyond the history limit")
