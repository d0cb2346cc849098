"""The local launcher's KRaft cluster ids are never read as an option by kafka-storage."""

from __future__ import annotations

import base64

from safehub.deploy.kafka.launcher import new_cluster_id


def test_cluster_ids_never_start_with_a_dash_and_decode_to_16_bytes() -> None:
    # About 1 in 64 random UUIDs encode with a leading "-"; 5,000 draws meet dozens of them.
    for _ in range(5000):
        cid = new_cluster_id()
        assert not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16
