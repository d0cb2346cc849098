"""A block's state as bytes, for the processor's durable table (and its changelog).

It is written once per processed batch per changed block, so encoding cost and size both
matter (the target is at most 2 KB per tracked child). Format 2 is packed binary (struct):
encoding it costs a fraction of format 1's JSON with base64 ids, which was the processor's
single largest cost after the core itself. Neither format can run code on load (no pickle).
`decode` still reads format 1 (compact JSON of positional arrays), so a changelog written by
an earlier version recovers. `encode` then `decode` gives back an equal BlockState.

Format 2, little-endian: the byte 0x02; the watermark (int64); a string table (uint16 count,
then per string a uint16 length and UTF-8 bytes) holding agency ids, sectors, indicators and
area codes once each, referred to by uint16 index (0xFFFF: None); the clusters (uint16 count),
each as: its keys (uint8 count, per key uint8 kind, uint8 length, bytes), conflict (uint8),
alerted rank (uint8), alerted agencies (uint16 count, indices), observations (uint16 count,
each a fixed 48-byte record: 16-byte event id, agency, sector, indicator (indices),
occurred_at (int64), age (int16), local and placing authority (indices), 16-byte
re-identification handle).
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from safehub.errors import StoreError
from safehub.schemas.vocabulary import Indicator, Sector, indicator_from_symbol
from safehub.services.correlation.core import BlockState, Cluster, Observation

_FORMAT = 2
_JSON_FORMAT = 1
_MAGIC = bytes([_FORMAT])
_NONE = 0xFFFF
_HEAD = struct.Struct("<qH")
_U16 = struct.Struct("<H")
_CLUSTER = struct.Struct("<BBH")  # conflict, rank, agencies
_OBS = struct.Struct("<16sHHHqhHH16s")


def encode(state: BlockState) -> bytes:
    table: dict[str, int] = {}

    def ref(text: str | None) -> int:
        if text is None:
            return _NONE
        found = table.get(text)
        if found is None:
            found = table[text] = len(table)
        return found

    body: list[bytes] = [_U16.pack(len(state.clusters))]
    pack_obs = _OBS.pack
    fromhex = bytes.fromhex
    for c in state.clusters:
        keys = sorted(c.keys)
        body.append(bytes([len(keys)]))
        for kind, value in keys:
            body.append(bytes([kind, len(value)]) + value)
        agencies = sorted(c.alerted_agencies)
        body.append(_CLUSTER.pack(int(c.conflict), c.alerted_rank, len(agencies)))
        body.extend(_U16.pack(ref(a)) for a in agencies)
        body.append(_U16.pack(len(c.observations)))
        for o in c.observations:
            eid, reid = fromhex(o.event_id), fromhex(o.reid_handle)
            if len(eid) != 16 or len(reid) != 16:
                # struct would pad or cut them silently; ids are 32 hex chars by contract.
                raise StoreError("block state holds an id that is not 32 hex characters")
            try:
                body.append(pack_obs(eid, ref(o.agency_id), ref(o.sector.value),
                                     ref(o.indicator.value), o.occurred_at, o.age_years,
                                     ref(o.local_authority), ref(o.placing_authority), reid))
            except struct.error as exc:
                raise StoreError(f"block state cannot be encoded: {exc}") from None
    if len(table) >= _NONE:
        raise StoreError("block state has too many distinct strings to encode")
    strings: list[bytes] = []
    for text in table:
        data = text.encode()
        strings.append(_U16.pack(len(data)) + data)
    return b"".join([_MAGIC, _HEAD.pack(state.watermark, len(table)), *strings, *body])


def decode(data: bytes) -> BlockState:
    try:
        if data[:1] == _MAGIC:
            watermark, clusters = _decode_binary(data)
        else:
            watermark, clusters = _decode_json(data)
    except (ValueError, TypeError, KeyError, IndexError, struct.error) as exc:
        raise StoreError(f"block state cannot be read: {type(exc).__name__}") from exc
    ids = frozenset(o.event_id for c in clusters for o in c.observations)
    return BlockState(int(watermark), clusters, ids)


def _decode_binary(data: bytes) -> tuple[int, tuple[Cluster, ...]]:
    watermark, n_strings = _HEAD.unpack_from(data, 1)
    p = 1 + _HEAD.size
    strings: list[str] = []
    for _ in range(n_strings):
        (length,) = _U16.unpack_from(data, p)
        p += 2
        strings.append(data[p:p + length].decode())
        p += length
    sectors: dict[int, Sector] = {}
    indicators: dict[int, Indicator] = {}

    def text(index: int) -> str | None:
        return None if index == _NONE else strings[index]

    (n_clusters,) = _U16.unpack_from(data, p)
    p += 2
    clusters: list[Cluster] = []
    for _ in range(n_clusters):
        n_keys = data[p]
        p += 1
        keys = []
        for _ in range(n_keys):
            kind, length = data[p], data[p + 1]
            keys.append((kind, data[p + 2:p + 2 + length]))
            p += 2 + length
        conflict, rank, n_agencies = _CLUSTER.unpack_from(data, p)
        p += _CLUSTER.size
        agencies = []
        for _ in range(n_agencies):
            agencies.append(strings[_U16.unpack_from(data, p)[0]])
            p += 2
        (n_obs,) = _U16.unpack_from(data, p)
        p += 2
        observations = []
        for _ in range(n_obs):
            eid, a, s, i, t, age, la, pa, reid = _OBS.unpack_from(data, p)
            p += _OBS.size
            sector = sectors.get(s)
            if sector is None:
                sector = sectors[s] = Sector(strings[s])
            indicator = indicators.get(i)
            if indicator is None:
                indicator = indicators[i] = indicator_from_symbol(strings[i])
            local = text(la)
            if local is None:
                raise ValueError("observation without a local authority")
            observations.append(Observation(eid.hex(), strings[a], sector, indicator, t, age,
                                            local, text(pa), reid.hex()))
        clusters.append(Cluster(keys=frozenset(keys), observations=tuple(observations),
                                conflict=bool(conflict), alerted_rank=rank,
                                alerted_agencies=frozenset(agencies)))
    if p != len(data):
        raise ValueError("trailing bytes after the block state")
    return watermark, tuple(clusters)


def _decode_json(data: bytes) -> tuple[int, tuple[Cluster, ...]]:
    fmt, watermark, strings, raw_clusters = json.loads(data)
    if fmt != _JSON_FORMAT:
        raise StoreError(f"block state format {fmt} is not {_JSON_FORMAT} or {_FORMAT}")
    return int(watermark), tuple(_cluster(strings, rc) for rc in raw_clusters)


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
