"""Round trips and the single-object wire format."""

from __future__ import annotations

import pytest

from safehub.errors import ValidationError
from safehub.samples.records import audit_entry, every_record, sign_event
from safehub.schemas import codec
from safehub.schemas.records import AuditEntry, WarningSignEvent


@pytest.mark.parametrize("record", every_record(), ids=lambda r: type(r).__name__)
def test_every_record_round_trips(record):
    data = codec.encode(record)
    assert codec.decode(data) == record
    assert codec.decode(data, type(record)) == record


def test_every_top_level_type_is_covered():
    assert {type(r) for r in every_record()} == set(codec.TOP_LEVEL)


def test_single_object_header_names_the_current_schema():
    data = codec.encode(sign_event())
    assert data[:2] == b"\xc3\x01"
    assert data[:10] == codec.header_for(WarningSignEvent)


def test_decode_refuses_another_record_type_when_one_is_expected():
    with pytest.raises(ValidationError) as err:
        codec.decode(codec.encode(audit_entry()), WarningSignEvent)
    assert err.value.field == "value"
    assert "AuditEntry" in str(err.value)


def test_decoded_values_are_the_domain_types():
    event = codec.decode(codec.encode(sign_event()), WarningSignEvent)
    assert type(event.sector).__name__ == "Sector"
    assert type(event.indicator).__name__ == "Sign"
    assert isinstance(codec.decode(codec.encode(audit_entry()), AuditEntry).digest, bytes)
