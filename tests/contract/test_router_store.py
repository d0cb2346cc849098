"""The router store's contract, on SQLite and PostgreSQL alike: what it saves it loads back
exactly, grouped by cluster in arrival order; saving again changes only the routing state;
forgetting removes whole clusters, however many."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from safehub.schemas.codec import encode
from safehub.schemas.vocabulary import RouteReason
from safehub.services.router.core import ClusterState, Status, Tracked
from safehub.services.router.store import RouterStore
from safehub.storage import open_engine
from tests.contract.samples import AT, correlated

pytestmark = pytest.mark.integration

def tracked(n: int, cluster: int, **changes: object) -> Tracked:
    t = Tracked(correlated(n, cluster), "csc-leeds", "leeds-mash", "E08000035",
                RouteReason.RESPONSIBLE_AUTHORITY, False, AT + n)
    return replace(t, **changes)  # type: ignore[arg-type]


def cluster(cid: int, *alerts: Tracked) -> ClusterState:
    return ClusterState(f"{cid:032x}", alerts)


@pytest.fixture
def store(store_url: str) -> Iterator[RouterStore]:
    s = RouterStore(open_engine(store_url))
    s.migrate()
    yield s
    s.engine.dispose()


def test_what_is_saved_loads_back_exactly(store: RouterStore) -> None:
    one = cluster(1, tracked(2, 1), tracked(1, 1, status=Status.NOTIFIED, level=0,
                                             sent_at=AT, deadline=AT + 5))
    two = cluster(2, tracked(3, 2, urgent=True, lead_authority=None))
    store.save([one, two])
    loaded = store.load()
    assert set(loaded) == {one.cluster_id, two.cluster_id}
    # Arrival order within a cluster, whatever order they were saved in.
    assert loaded[one.cluster_id].alerts == (one.alerts[1], one.alerts[0])
    assert loaded[two.cluster_id] == two


def test_saving_again_changes_only_the_routing_state(store: RouterStore) -> None:
    first = tracked(1, 1)
    store.save([cluster(1, first)])
    later = replace(first, status=Status.ACKNOWLEDGED, level=1, sent_at=AT, deadline=AT + 9,
                    receiver="someone-else")
    store.save([cluster(1, later)])
    (state,) = store.load().values()
    assert state.alerts == (replace(later, receiver=first.receiver),)


def test_payloads_as_received_are_stored_as_they_are(store: RouterStore) -> None:
    t = tracked(1, 1)
    store.save([cluster(1, t)], {t.alert.alert_id: encode(t.alert)})
    assert store.load()[cluster(1).cluster_id].alerts == (t,)


def test_forgetting_removes_whole_clusters_however_many(store: RouterStore) -> None:
    states = [cluster(c, tracked(c, c)) for c in range(1200)]  # more than one DELETE's worth
    store.save(states)
    store.forget([s.cluster_id for s in states[:1100]])
    assert sorted(store.load()) == sorted(s.cluster_id for s in states[1100:])
    store.save([])  # nothing to save is not an error
    store.forget([])
