"""The router's pure core, after Prometheus Alertmanager: route, group, inhibit, repeat, escalate.

No clock, no randomness, no I/O: the shell passes `now` (its injected clock) and applies the
returned notifications. State is kept per child cluster (the grouping key) as immutable values.

Semantics (written down because Alertmanager's words do not map one to one onto alerts that are
events rather than continuously firing conditions):

- Route: the lead agency is children's social care of the child's local authority, or of the
  placing authority for a looked-after child placed out of area. No route: the fallback receiver,
  reason FALLBACK (the shell reports it); never dropped.
- Inform the host: when an alert is sent to a placing authority, the host (local) authority's
  receiver gets a copy at the same moment, reason HOST_AUTHORITY, for information: the copy is
  not tracked, so it has no group, no escalation and needs no ack (an ack of it changes
  nothing). Escalation copies go to the lead's escalation receiver only.
- Group: alerts of one cluster for one receiver form a group. A group is notified at once the
  first time and whenever the tier rises; otherwise at most once per repeat interval: alerts
  arriving in between wait (PENDING) and, when the interval ends, the group's latest picture (the
  newest, highest-tier pending alert) is sent and the rest are folded into it (SUPERSEDED).
  A newly sent alert also supersedes the group's older unacknowledged ones, so one child's
  alerts never escalate twice over.
- Inhibit: while a cluster has a HIGH alert with no recorded decision, lower-tier alerts of that
  cluster are not notified and stop escalating (INHIBITED): the high alert covers the child.
- Escalate: a notified alert not acknowledged by its deadline is re-sent once to the route's
  escalation receiver (level 1, reason ESCALATION). An ack or decision from a receiver stops it.
- Redelivery: an alert id already seen changes nothing; a notification id is derived from
  alert id + receiver + escalation level, so a repeated send is deduplicated by every sink.
- Forget: a cluster with nothing left to do (no alert pending, none that can still escalate)
  is forgotten once its newest alert is `forget_after_ms` old (a year by default), so the
  router's state does not grow forever. A later alert about the child starts afresh: it is
  notified at once, and an old undecided HIGH alert no longer inhibits it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from enum import StrEnum

from safehub.schemas.records import AlertAck, CorrelatedAlert, RoutedAlert
from safehub.schemas.vocabulary import (
    AckAction,
    AuditAction,
    RouteReason,
    SignificantIncident,
    Tier,
)
from safehub.services.router.deadline import ack_deadline
from safehub.services.router.table import Route, RoutingTable


class Status(StrEnum):
    PENDING = "PENDING"  # waiting for its group's repeat interval
    NOTIFIED = "NOTIFIED"  # sent; escalates at its deadline unless acknowledged
    ACKNOWLEDGED = "ACKNOWLEDGED"
    DECIDED = "DECIDED"
    INHIBITED = "INHIBITED"  # silenced by a HIGH alert of the same cluster
    SUPERSEDED = "SUPERSEDED"  # folded into a newer alert of its group


# Statuses whose alert still needs someone's attention from the router.
_OPEN = frozenset({Status.PENDING, Status.NOTIFIED})
MAX_ESCALATION_LEVEL = 1


@dataclass(frozen=True, slots=True)
class Tracked:
    alert: CorrelatedAlert
    receiver: str
    escalation: str
    lead_authority: str | None
    reason: RouteReason
    urgent: bool  # a significant incident: deadline in hours, around the clock
    received_at: int
    status: Status = Status.PENDING
    level: int = -1  # highest escalation level sent; -1 = not yet sent
    sent_at: int | None = None  # when level 0 was sent
    deadline: int | None = None  # ack deadline of the latest level sent


@dataclass(frozen=True, slots=True)
class ClusterState:
    cluster_id: str
    alerts: tuple[Tracked, ...] = ()

    def find(self, alert_id: str) -> Tracked | None:
        return next((t for t in self.alerts if t.alert.alert_id == alert_id), None)


@dataclass(frozen=True, slots=True)
class Notification:
    routed: RoutedAlert
    action: AuditAction  # ALERT_ROUTED or ALERT_ESCALATED


def notification_id(alert_id: str, receiver: str, level: int) -> str:
    return hashlib.sha256(f"{alert_id}|{receiver}|{level}".encode()).hexdigest()[:32]


def lead_route(
    table: RoutingTable, alert: CorrelatedAlert
) -> tuple[Route, str | None, RouteReason]:
    """The receiver, the authority it was chosen for (None for fallback), and why."""
    placed_out = alert.placing_authority and alert.placing_authority != alert.local_authority
    lead = alert.placing_authority if placed_out else alert.local_authority
    reason = RouteReason.PLACING_AUTHORITY if placed_out else RouteReason.RESPONSIBLE_AUTHORITY
    route = table.routes.get(lead or "")
    if route is None:
        return table.fallback, None, RouteReason.FALLBACK
    return route, lead, reason


def host_receiver(table: RoutingTable, t: Tracked) -> Route | None:
    """The host authority's route when `t` goes to a placing authority and the host has its own
    receiver; None otherwise (no placement, no route for the host, or the same receiver)."""
    if t.reason is not RouteReason.PLACING_AUTHORITY:
        return None
    route = table.routes.get(t.alert.local_authority)
    if route is None or route.agency in (t.receiver, t.escalation):
        return None
    return route


def is_urgent(alert: CorrelatedAlert) -> bool:
    return any(isinstance(e.indicator, SignificantIncident) for e in alert.evidence)


def _send(table: RoutingTable, t: Tracked, level: int, now: int) -> tuple[Tracked, Notification]:
    receiver = t.receiver if level == 0 else t.escalation
    deadline = ack_deadline(now, t.urgent, table.hours_for(receiver), table.ack_working_hours,
                            table.urgent_ack_ms)
    routed = RoutedAlert(
        notification_id=notification_id(t.alert.alert_id, receiver, level),
        alert=t.alert,
        receiver_agency=receiver,
        lead_authority=t.lead_authority,
        reason=t.reason if level == 0 else RouteReason.ESCALATION,
        escalation_level=level,
        ack_deadline=deadline,
    )
    action = AuditAction.ALERT_ROUTED if level == 0 else AuditAction.ALERT_ESCALATED
    sent_at = now if level == 0 else t.sent_at
    return (replace(t, status=Status.NOTIFIED, level=level, sent_at=sent_at, deadline=deadline),
            Notification(routed, action))


def _inform_host(table: RoutingTable, t: Tracked, now: int) -> Notification | None:
    host = host_receiver(table, t)
    if host is None:
        return None
    routed = RoutedAlert(
        notification_id=notification_id(t.alert.alert_id, host.agency, 0),
        alert=t.alert,
        receiver_agency=host.agency,
        lead_authority=t.alert.local_authority,
        reason=RouteReason.HOST_AUTHORITY,
        escalation_level=0,
        ack_deadline=ack_deadline(now, t.urgent, host.hours, table.ack_working_hours,
                                  table.urgent_ack_ms),
    )
    return Notification(routed, AuditAction.ALERT_ROUTED)


def _inhibiting(alerts: tuple[Tracked, ...]) -> bool:
    return any(t.alert.tier is Tier.HIGH and t.status is not Status.DECIDED for t in alerts)


def _group(alerts: tuple[Tracked, ...], receiver: str) -> list[Tracked]:
    return [t for t in alerts if t.receiver == receiver]


def _latest_first(t: Tracked) -> tuple[int, int, str]:
    return (t.alert.tier.rank, t.alert.raised_at, t.alert.alert_id)


def _deliver(
    table: RoutingTable, alerts: list[Tracked], chosen: Tracked, now: int
) -> tuple[list[Tracked], tuple[Notification, ...]]:
    """Send `chosen` (and its copy to the host authority, if any) and fold its group's other
    open, not-higher alerts into it."""
    sent, note = _send(table, chosen, 0, now)
    copy = _inform_host(table, chosen, now)
    notes = (note,) if copy is None else (note, copy)
    out = []
    for t in alerts:
        if t is chosen:
            out.append(sent)
        elif (t.receiver == chosen.receiver and t.status in _OPEN
              and t.alert.tier.rank <= chosen.alert.tier.rank):
            out.append(replace(t, status=Status.SUPERSEDED))
        else:
            out.append(t)
    return out, notes


def receive(
    table: RoutingTable, state: ClusterState, alert: CorrelatedAlert, now: int
) -> tuple[ClusterState, tuple[Notification, ...]]:
    """A correlated alert arrives. Seen before: nothing changes."""
    if state.find(alert.alert_id) is not None:
        return state, ()
    route, lead, reason = lead_route(table, alert)
    new = Tracked(alert, route.agency, route.escalation, lead, reason, is_urgent(alert), now)
    alerts = list(state.alerts)
    if alert.tier is not Tier.HIGH and _inhibiting(state.alerts):
        alerts.append(replace(new, status=Status.INHIBITED))
        return replace(state, alerts=tuple(alerts)), ()
    if alert.tier is Tier.HIGH:
        alerts = [replace(t, status=Status.INHIBITED)
                  if t.status in _OPEN and t.alert.tier is not Tier.HIGH else t for t in alerts]
    alerts.append(new)
    group = _group(state.alerts, new.receiver)
    sent_before = [t for t in group if t.sent_at is not None]
    last_sent = max((t.sent_at for t in sent_before if t.sent_at is not None), default=None)
    top_rank = max((t.alert.tier.rank for t in sent_before), default=0)
    due = (last_sent is None or alert.tier.rank > top_rank
           or now - last_sent >= table.repeat_interval_ms)
    if not due:
        return replace(state, alerts=tuple(alerts)), ()
    alerts, notes = _deliver(table, alerts, new, now)
    return replace(state, alerts=tuple(alerts)), notes


def tick(
    table: RoutingTable, state: ClusterState, now: int
) -> tuple[ClusterState, tuple[Notification, ...]]:
    """Time passes: flush groups whose repeat interval ended, escalate what is overdue."""
    alerts = list(state.alerts)
    notes: list[Notification] = []
    for receiver in sorted({t.receiver for t in alerts if t.status is Status.PENDING}):
        group = _group(tuple(alerts), receiver)
        last_sent = max((t.sent_at for t in group if t.sent_at is not None), default=None)
        if last_sent is not None and now - last_sent < table.repeat_interval_ms:
            continue
        chosen = max((t for t in group if t.status is Status.PENDING), key=_latest_first)
        alerts, sent = _deliver(table, alerts, chosen, now)
        notes.extend(sent)
    for i, t in enumerate(alerts):
        if (t.status is Status.NOTIFIED and t.level < MAX_ESCALATION_LEVEL
                and t.deadline is not None and now >= t.deadline):
            alerts[i], note = _send(table, t, t.level + 1, now)
            notes.append(note)
    return replace(state, alerts=tuple(alerts)), tuple(notes)


def acknowledge(state: ClusterState, ack: AlertAck) -> tuple[ClusterState, bool]:
    """Record an ack or decision; False if this agency was never sent the alert."""
    t = state.find(ack.alert_id)
    if t is None or t.level < 0:
        return state, False
    allowed = {t.receiver} | ({t.escalation} if t.level >= 1 else set())
    if ack.agency_id not in allowed:
        return state, False
    if ack.action is AckAction.DECIDED or t.status is Status.DECIDED:
        status = Status.DECIDED
    else:
        status = Status.ACKNOWLEDGED
    updated = replace(t, status=status)
    return replace(state, alerts=tuple(updated if x is t else x for x in state.alerts)), True


def informed(table: RoutingTable, state: ClusterState, ack: AlertAck) -> bool:
    """Whether `ack` comes from a host authority that was sent the alert for information."""
    t = state.find(ack.alert_id)
    if t is None or t.level < 0:
        return False
    host = host_receiver(table, t)
    return host is not None and host.agency == ack.agency_id


def next_wakeup(table: RoutingTable, state: ClusterState) -> int | None:
    """The earliest moment `tick` could do something for this cluster; None if never."""
    moments: list[int] = []
    for t in state.alerts:
        if t.status is Status.NOTIFIED and t.level < MAX_ESCALATION_LEVEL and t.deadline:
            moments.append(t.deadline)
        if t.status is Status.PENDING:
            group = _group(state.alerts, t.receiver)
            last = max((g.sent_at for g in group if g.sent_at is not None), default=t.received_at)
            moments.append(last + table.repeat_interval_ms)
    return min(moments, default=None)


def forgettable(table: RoutingTable, state: ClusterState, now: int) -> bool:
    """Whether the router may forget this cluster (see Forget above)."""
    if next_wakeup(table, state) is not None:
        return False
    newest = max((t.received_at for t in state.alerts), default=None)
    return newest is None or now - newest >= table.forget_after_ms
