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


def encode(state: BlockState) -> bytes:
    clusters = [
        [
            [[kind, base64.b64encode(value).decode()] for kind, value in sorted(c.keys)],
            int(c.conflict),
            c.alerted_rank,
            sorted(c.alerted_agencies),
            [
                [o.event_id, o.agency_id, o.sector.value, o.indicator.value, o.occurred_at,
                 o.age_years, o.local_authority, o.placing_authority, o.reid_handle]
                for o in c.observations
            ],
        ]
        for c in state.clusters
    ]
    return json.dumps([_FORMAT, state.watermark, clusters], separators=(",", ":")).encode()


def decode(data: bytes) -> BlockState:
    try:
        fmt, watermark, raw_clusters = json.loads(data)
        if fmt != _FORMAT:
            raise StoreError(f"block state format {fmt} is not {_FORMAT}")
        clusters = tuple(_cluster(rc) for rc in raw_clusters)
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreError(f"block state cannot be read: {type(exc).__name__}") from exc
    ids = frozenset(o.event_id for c in clusters for o in c.observations)
    return BlockState(int(watermark), clusters, ids)


def _cluster(raw: list[Any]) -> Cluster:
    keys, conflict, rank, agencies, observations = raw
    return Cluster(
        keys=frozenset((int(k), base64.b64decode(v)) for k, v in keys),
        observations=tuple(
            Observation(e, a, Sector(s), indicator_from_symbol(i), int(t), int(age), la, pa, r)
            for e, a, s, i, t, age, la, pa, r in observations
        ),
        conflict=bool(conflict),
        alerted_rank=int(rank),
        alerted_agencies=frozenset(agencies),
    )
