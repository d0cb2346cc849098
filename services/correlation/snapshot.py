"""A block's state as bytes, for the processor's durable table (and its changelog).

Compact JSON of positional arrays: it is written once per processed batch per block, so size
matters (the target is at most 2 KB per tracked child), and JSON keeps it inspectable and free
of pickle's code execution on load. `encode` then `decode` gives back an equal BlockState.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from safehub.errors import StoreError
from safehub.schemas.vocabulary import Sector, indicator_from_symbol
from safehub.services.correlation.core import BlockState, Cluster, Observation

_FORMAT = 1


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def encode(state: BlockState) -> bytes:
    # Agency ids, sectors, indicators and area codes repeat on every event: they are written
    # once in a string table and referred to by index; ids (32 hex) are written as base64.
    table: dict[str | None, int] = {}

    def ref(text: str | None) -> int:
        return table.setdefault(text, len(table))

    clusters = [
        [
            [[kind, base64.b64encode(value).decode()] for kind, value in sorted(c.keys)],
            int(c.conflict),
            c.alerted_rank,
            [ref(a) for a in sorted(c.alerted_agencies)],
            [
                [_b64(o.event_id), ref(o.agency_id), ref(o.sector.value), ref(o.indicator.value),
                 o.occurred_at, o.age_years, ref(o.local_authority), ref(o.placing_authority),
                 _b64(o.reid_handle)]
                for o in c.observations
            ],
        ]
        for c in state.clusters
    ]
    return json.dumps([_FORMAT, state.watermark, list(table), clusters],
                      separators=(",", ":")).encode()


def decode(data: bytes) -> BlockState:
    try:
        fmt, watermark, strings, raw_clusters = json.loads(data)
        if fmt != _FORMAT:
            raise StoreError(f"block state format {fmt} is not {_FORMAT}")
        clusters = tuple(_cluster(strings, rc) for rc in raw_clusters)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise StoreError(f"block state cannot be read: {type(exc).__name__}") from exc
    ids = frozenset(o.event_id for c in clusters for o in c.observations)
    return BlockState(int(watermark), clusters, ids)


def _hex(b64: str) -> str:
    return base64.b64decode(b64).hex()


def _cluster(strings: list[Any], raw: list[Any]) -> Cluster:
    keys, conflict, rank, agencies, observations = raw
    return Cluster(
        keys=frozenset((int(k), base64.b64decode(v)) for k, v in keys),
        observations=tuple(
            Observation(_hex(e), strings[a], Sector(strings[s]),
                        indicator_from_symbol(strings[i]), int(t), int(age), strings[la],
                        strings[pa], _hex(r))
            for e, a, s, i, t, age, la, pa, r in observations
        ),
        conflict=bool(conflict),
        alerted_rank=int(rank),
        alerted_agencies=frozenset(strings[a] for a in agencies),
    )
