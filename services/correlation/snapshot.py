"""A block's state as bytes, for the processor's durable table (and its changelog).

It is written once per processed batch per changed block, so encoding cost and size both
matter (the target is at most 2 KB per tracked child). Format 4 is packed binary (struct):
encoding it costs a fraction of format 1's JSON with base64 ids, which was the processor's
single largest cost after the core itself. No format can run code on load (no pickle).
`decode` still reads formats 1 (compact JSON of positional arrays), 2 (format 3 without key
epochs) and 3 (format 4 without missing episodes' details), so a changelog written by an
earlier version recovers; keys of formats 1 and 2, written before keys were told apart by
epoch, are read as of `legacy_epoch` (1, the epoch every version 1 deployment started with);
episodes held by formats 1 to 3 come back without their details (Observation.episode None:
the rules then weigh them as the plain MISSING_FROM_HOME_OR_CARE sign, and their next update
replaces them). `encode` then `decode` gives back an equal BlockState.

Format 4, little-endian: the byte 0x04; the watermark (int64); a string table (uint16 count,
then per string a uint16 length and UTF-8 bytes) holding agency ids, sectors, indicators and
area codes once each, referred to by uint16 index (0xFFFF: None); the key epochs (uint8 count,
uint32 each), referred to by uint8 index; the clusters (uint16 count), each as: its keys
(uint16 count, per key uint8 kind, uint8 epoch index, uint8 length, bytes), conflict (uint8),
alerted rank (uint8), alerted agencies (uint16 count, indices), observations (uint16 count,
each a fixed 48-byte record: 16-byte event id, agency, sector, indicator (indices),
occurred_at (int64), age (int16), local and placing authority (indices), 16-byte
re-identification handle; then one flags byte: 0 for no episode, else bit 0 set and bit 1
MISSING (else ABSENT), bit 2 interview offered, bit 3 done, bit 4 ended, followed by ended_at
(int64, 0 when not ended) and reported_at (int64)). Format 3 differs only in having no flags
byte; format 2 also has no epoch table, a uint8 key count and no epoch index per key.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from safehub.errors import StoreError
from safehub.schemas.vocabulary import Indicator, MissingType, Sector, indicator_from_symbol
from safehub.services.correlation.core import BlockState, Cluster, Observation
from safehub.services.correlation.episodes import Episode
from safehub.services.correlation.linking import Key

_FORMAT = 4
_FORMAT_3 = 3
_FORMAT_2 = 2
_JSON_FORMAT = 1
_MAGIC = bytes([_FORMAT])
_MAGIC_3 = bytes([_FORMAT_3])
_MAGIC_2 = bytes([_FORMAT_2])
_EPISODE = struct.Struct("<qq")  # ended_at, reported_at
_IS_EPISODE, _MISSING, _OFFERED, _DONE, _ENDED = 1, 2, 4, 8, 16
_EPOCH = struct.Struct("<I")
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

    epochs: dict[int, int] = {}
    body: list[bytes] = [_U16.pack(len(state.clusters))]
    pack_obs = _OBS.pack
    fromhex = bytes.fromhex
    for c in state.clusters:
        keys = sorted(c.keys)
        body.append(_U16.pack(len(keys)))
        for kind, epoch, value in keys:
            index = epochs.get(epoch)
            if index is None:
                index = epochs[epoch] = len(epochs)
            body.append(bytes([kind, index, len(value)]) + value)
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
                body.append(_episode_bytes(o.episode))
            except struct.error as exc:
                raise StoreError(f"block state cannot be encoded: {exc}") from None
    if len(table) >= _NONE:
        raise StoreError("block state has too many distinct strings to encode")
    if len(epochs) > 255 or any(not 0 <= e < 2**32 for e in epochs):
        raise StoreError("block state has key epochs it cannot encode")
    strings: list[bytes] = []
    for text in table:
        data = text.encode()
        strings.append(_U16.pack(len(data)) + data)
    epoch_table = bytes([len(epochs)]) + b"".join(_EPOCH.pack(e) for e in epochs)
    return b"".join([_MAGIC, _HEAD.pack(state.watermark, len(table)), *strings, epoch_table,
                     *body])


def _episode_bytes(episode: Episode | None) -> bytes:
    if episode is None:
        return b"\x00"
    flags = (_IS_EPISODE | (_MISSING if episode.missing_type is MissingType.MISSING else 0)
             | (_OFFERED if episode.interview_offered else 0)
             | (_DONE if episode.interview_done else 0)
             | (_ENDED if episode.ended_at is not None else 0))
    ended = episode.ended_at if episode.ended_at is not None else 0
    return bytes([flags]) + _EPISODE.pack(ended, episode.reported_at)


def decode(data: bytes, legacy_epoch: int = 1) -> BlockState:
    try:
        if data[:1] in (_MAGIC, _MAGIC_3, _MAGIC_2):
            watermark, clusters = _decode_binary(data, legacy_epoch)
        else:
            watermark, clusters = _decode_json(data, legacy_epoch)
    except (ValueError, TypeError, KeyError, IndexError, struct.error) as exc:
        raise StoreError(f"block state cannot be read: {type(exc).__name__}") from exc
    ids = frozenset(o.event_id for c in clusters for o in c.observations)
    return BlockState(int(watermark), clusters, ids)


def _decode_binary(data: bytes, legacy_epoch: int) -> tuple[int, tuple[Cluster, ...]]:
    with_epochs = data[:1] in (_MAGIC, _MAGIC_3)
    with_episodes = data[:1] == _MAGIC
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

    epochs = [legacy_epoch]
    if with_epochs:
        n_epochs = data[p]
        epochs = [_EPOCH.unpack_from(data, p + 1 + 4 * i)[0] for i in range(n_epochs)]
        p += 1 + 4 * n_epochs
    (n_clusters,) = _U16.unpack_from(data, p)
    p += 2
    clusters: list[Cluster] = []
    for _ in range(n_clusters):
        if with_epochs:
            (n_keys,) = _U16.unpack_from(data, p)
            p += 2
        else:
            n_keys = data[p]
            p += 1
        keys: list[Key] = []
        for _ in range(n_keys):
            if with_epochs:
                kind, epoch, length = data[p], epochs[data[p + 1]], data[p + 2]
                p += 3
            else:
                kind, epoch, length = data[p], legacy_epoch, data[p + 1]
                p += 2
            keys.append((kind, epoch, data[p:p + length]))
            p += length
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
            episode = None
            if with_episodes:
                flags = data[p]
                p += 1
                if flags & ~(_IS_EPISODE | _MISSING | _OFFERED | _DONE | _ENDED):
                    raise ValueError("unknown episode flags")
                if flags:
                    if not flags & _IS_EPISODE:
                        raise ValueError("episode flags without an episode")
                    ended, reported = _EPISODE.unpack_from(data, p)
                    p += _EPISODE.size
                    episode = Episode(
                        MissingType.MISSING if flags & _MISSING else MissingType.ABSENT,
                        ended if flags & _ENDED else None, bool(flags & _OFFERED),
                        bool(flags & _DONE), reported)
            observations.append(Observation(eid.hex(), strings[a], sector, indicator, t, age,
                                            local, text(pa), reid.hex(), episode))
        clusters.append(Cluster(keys=frozenset(keys), observations=tuple(observations),
                                conflict=bool(conflict), alerted_rank=rank,
                                alerted_agencies=frozenset(agencies)))
    if p != len(data):
        raise ValueError("trailing bytes after the block state")
    return watermark, tuple(clusters)


def _decode_json(data: bytes, legacy_epoch: int) -> tuple[int, tuple[Cluster, ...]]:
    fmt, watermark, strings, raw_clusters = json.loads(data)
    if fmt != _JSON_FORMAT:
        raise StoreError(f"block state format {fmt} is not one of 1, 2, 3 or {_FORMAT}")
    return int(watermark), tuple(_cluster(strings, rc, legacy_epoch) for rc in raw_clusters)


def _hex(b64: str) -> str:
    return base64.b64decode(b64).hex()


def _cluster(strings: list[Any], raw: list[Any], legacy_epoch: int) -> Cluster:
    keys, conflict, rank, agencies, observations = raw
    return Cluster(
        keys=frozenset((int(k), legacy_epoch, base64.b64decode(v)) for k, v in keys),
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
