"""The re-identification request store's contract, on SQLite and PostgreSQL alike: a request
is stored once, every read is scoped by agency, a decision is recorded once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from safehub.schemas.codec import encode
from safehub.schemas.records import ReidRequest
from safehub.schemas.vocabulary import DeclineReason, LawfulBasis, ReidOutcome, ReidPurpose
from safehub.services.reid.store import DECIDED, PENDING, UNKNOWN, RequestStore

pytestmark = pytest.mark.integration

AGENCY, OTHER = "police-wy", "school-leeds"


def request(n: int, agency: str = AGENCY) -> ReidRequest:
    return ReidRequest(
        request_id=f"{n:032x}", alert_id="cd" * 16, hub_id="csc-leeds", agency_id=agency,
        reid_handles=("f" * 32,), lawful_basis=LawfulBasis.DPA_SCH8_PARA4_SAFEGUARDING,
        purpose=ReidPurpose.STRATEGY_MEETING, hub_public_key=b"\x01" * 32, user_ref="sw-1",
        requested_at=1_000 + n)


@pytest.fixture
def store(store_url: str) -> Iterator[RequestStore]:
    s = RequestStore.open(store_url)
    yield s
    s.close()


def test_a_request_is_stored_once_with_its_bytes(store: RequestStore) -> None:
    req = request(1)
    assert store.save(req, encode(req), 50) is True
    assert store.save(req, encode(req), 60) is False  # a redelivery
    got = store.get(AGENCY, req.request_id)
    assert got is not None
    assert (got.request, got.raw, got.received_at, got.status) == (req, encode(req), 50, PENDING)
    assert not got.decided and got.outcome is None


def test_reads_are_scoped_by_agency_and_unknown_is_never_pending(store: RequestStore) -> None:
    for n, agency, status in ((3, AGENCY, PENDING), (1, AGENCY, PENDING), (2, AGENCY, UNKNOWN),
                              (4, OTHER, PENDING)):
        req = request(n, agency)
        store.save(req, encode(req), 100 - n, status)
    assert [r.request.request_id for r in store.pending(AGENCY)] == [f"{3:032x}", f"{1:032x}"]
    assert len(store.all(AGENCY)) == 3 and len(store.all(OTHER)) == 1
    assert store.get(OTHER, request(1).request_id) is None
    # The same request id under another agency is another request.
    same_id = request(1, OTHER)
    assert store.save(same_id, encode(same_id), 1) is True


def test_a_decision_is_recorded_once(store: RequestStore) -> None:
    req = request(1)
    store.save(req, encode(req), 5)
    assert store.mark_decided(AGENCY, req.request_id, ReidOutcome.DECLINED,
                              DeclineReason.BASIS_NOT_MET, "officer-1", 9, "e" * 32)
    assert not store.mark_decided(AGENCY, req.request_id, ReidOutcome.APPROVED, None,
                                  "officer-2", 10, "f" * 32)
    assert not store.mark_decided(OTHER, req.request_id, ReidOutcome.APPROVED, None,
                                  "officer-2", 10, "f" * 32)
    got = store.get(AGENCY, req.request_id)
    assert got is not None and got.status == DECIDED
    assert (got.outcome, got.decline_reason, got.officer, got.decided_at) == (
        ReidOutcome.DECLINED, DeclineReason.BASIS_NOT_MET, "officer-1", 9)
    assert store.pending(AGENCY) == []
