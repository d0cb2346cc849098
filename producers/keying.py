"""Keyed derivation behind one interface: the PRF that turns identifier strings into match keys.

Every match key and linkage block is PRF(epoch, input), where the input is a domain tag and the
normalised fields (see matchkeys.py) and the output is 32 bytes. `KeyedPRF` is that one call,
batched: a producer evaluates a whole export's inputs a few thousand at a time, because with the
key service every call is an HTTPS round trip. Implementations:

- the key service (version 2, RFC 9497 OPRF): `safehub.services.keyservice.client.
  KeyServiceClient` has this very method, so it is used as it is. No agency holds the key and
  the service never sees an input.
- `HmacPRF` (version 1): HMAC-SHA256 under a secret every agency holds, kept only for the
  migration to the key service and as the comparison in tests and benchmarks. Its outputs are
  byte for byte those of version 1, so events already on the topics keep linking.
- `OprfPRF`: the same function as the key service, computed in-process from the secret key.
  For tests only: an agency holding the key is exactly what version 2 removes.
- `ByEpoch`: one PRF per epoch, for a rotation from one implementation to the other.
- `CachingPRF`: any of them, remembering outputs for the run (repeated birth dates, children).

Epochs. Epoch 0 is the linkage-block key; epochs >= 1 are match-key epochs. The block is never
derived under a match-key epoch, so rotating the match keys never moves a child's events to
another block, partition or worker. Rotating the block key itself is a separate procedure (a
full re-partition of the correlator's state by replay) and is not what `Keying` does.

Rotation. `Keying(prf, epoch=N, transition_epoch=M)` makes each event carry its match keys
under N and, in `transition_keys`, under M; the correlator links the two. After the transition
the producer runs with `epoch=M` alone and epoch N's key can be destroyed.
"""

from __future__ import annotations

import hmac
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from safehub.errors import ConfigError
from safehub.producers.linkagekey import LinkageKey

BLOCK_EPOCH = 0
OUTPUT_BYTES = 32
DEFAULT_BATCH = 2000  # inputs per PRF call: well under the key service's 4096 per request
SEP = b"\x1f"  # the unit separator between the domain tag and fields (see matchkeys.py)

T = TypeVar("T")


def _of_epoch(table: Mapping[int, T], epoch: int, what: str) -> T:
    """`table`'s entry for `epoch`, or a ConfigError saying that there is no `what` for it."""
    found = table.get(epoch)
    if found is None:
        raise ConfigError(f"no {what} for epoch {epoch}")
    return found


class KeyedPRF(Protocol):
    def evaluate(self, epoch: int, inputs: Sequence[bytes]) -> list[bytes]:
        """One 32-byte output per input, in order, under the key of `epoch`."""
        ...


class HmacPRF:
    """Version 1: HMAC-SHA256 with a shared secret per epoch.

    Version 1 wrote the epoch into the message after the domain tag
    (tag | epoch | fields); this reinserts it, so outputs equal version 1's. Each entry maps the
    epoch asked for to the `LinkageKey` used: its secret, and the epoch number written into the
    message. The block entry (epoch 0) is by default the version 1 key itself, so the blocks of
    a version 1 deployment do not move either.
    """

    def __init__(self, keys: Mapping[int, LinkageKey]) -> None:
        self._keys = dict(keys)

    @classmethod
    def version1(cls, key: LinkageKey, block_key: LinkageKey | None = None) -> HmacPRF:
        return cls({key.epoch: key, BLOCK_EPOCH: block_key or key})

    def __repr__(self) -> str:
        return f"HmacPRF(epochs={sorted(self._keys)})"

    def evaluate(self, epoch: int, inputs: Sequence[bytes]) -> list[bytes]:
        key = _of_epoch(self._keys, epoch, "HMAC linkage key")
        label = str(key.epoch).encode()
        out = []
        for data in inputs:
            tag, _, rest = data.partition(SEP)
            out.append(hmac.digest(key.secret, SEP.join((tag, label, rest)), "sha256"))
        return out


class OprfPRF:
    """RFC 9497's PRF computed directly with the secret keys: for tests, never for an agency."""

    def __init__(self, secret_keys: Mapping[int, bytes]) -> None:
        self._keys = dict(secret_keys)

    @classmethod
    def from_seeds(cls, seeds: Mapping[int, bytes], info: bytes = b"safehub test") -> OprfPRF:
        from safehub.services.keyservice import oprf

        return cls({e: oprf.derive_key_pair(seed, info)[0] for e, seed in seeds.items()})

    def __repr__(self) -> str:
        return f"OprfPRF(epochs={sorted(self._keys)})"

    def evaluate(self, epoch: int, inputs: Sequence[bytes]) -> list[bytes]:
        from safehub.services.keyservice import oprf

        key = _of_epoch(self._keys, epoch, "OPRF key")
        # The key service's client keeps the first 32 bytes of the 64-byte output too.
        return [oprf.evaluate(key, data)[:OUTPUT_BYTES] for data in inputs]


class ByEpoch:
    """A PRF per epoch: e.g. HMAC for the old epoch and the key service for the new one while
    an HMAC deployment moves to the key service."""

    def __init__(self, by_epoch: Mapping[int, KeyedPRF]) -> None:
        self._by_epoch = dict(by_epoch)

    def __repr__(self) -> str:
        return f"ByEpoch({self._by_epoch!r})"

    def evaluate(self, epoch: int, inputs: Sequence[bytes]) -> list[bytes]:
        return _of_epoch(self._by_epoch, epoch, "keyed PRF").evaluate(epoch, inputs)


class CachingPRF:
    """Remembers outputs for the run, so that an input already evaluated is not sent again.

    An agency's export repeats children and, far more, birth dates: a few thousand birth dates
    cover every child, so after the first batches the linkage block costs no element at all.
    Bounded (least recently used out first) and in memory only: what it holds, the agency's
    process computes anyway, and nothing is written anywhere.
    """

    def __init__(self, inner: KeyedPRF, max_entries: int = 200_000) -> None:
        self._inner = inner
        self._max = max_entries
        self._memo: OrderedDict[tuple[int, bytes], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CachingPRF({self._inner!r}, {len(self._memo)} held)"

    def evaluate(self, epoch: int, inputs: Sequence[bytes]) -> list[bytes]:
        # One caller at a time: the inner PRF parallelises its own calls.
        with self._lock:
            memo = self._memo
            missing = list(dict.fromkeys(x for x in inputs if (epoch, x) not in memo))
            if missing:
                answered = self._inner.evaluate(epoch, missing)
                if len(answered) != len(missing):
                    raise ConfigError(f"the keyed PRF answered {len(answered)} values for "
                                      f"{len(missing)} inputs")
                memo.update(((epoch, x), v) for x, v in zip(missing, answered, strict=True))
            out = []
            for x in inputs:
                memo.move_to_end((epoch, x))
                out.append(memo[(epoch, x)])
            while len(memo) > self._max:
                memo.popitem(last=False)
        return out


@dataclass(frozen=True, slots=True)
class Keying:
    """How a producer derives keys: the PRF, the current match-key epoch and, during a rotation,
    the epoch it is moving to. `batch` bounds the inputs per PRF call."""

    prf: KeyedPRF = field(repr=False)
    epoch: int
    transition_epoch: int | None = None
    batch: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        if self.epoch < 1:
            raise ConfigError("the match-key epoch must be 1 or more (0 is the block key)")
        if self.transition_epoch is not None and (
            self.transition_epoch < 1 or self.transition_epoch == self.epoch
        ):
            raise ConfigError("the transition epoch must be 1 or more and not the current one")
        if self.batch < 1:
            raise ConfigError("the PRF batch must hold at least one input")

    def __repr__(self) -> str:
        return (f"Keying(epoch={self.epoch}, transition_epoch={self.transition_epoch}, "
                f"prf={type(self.prf).__name__})")

    def evaluate(self, epoch: int, inputs: Sequence[bytes]) -> list[bytes]:
        """The PRF over `inputs` in calls of at most `batch`, each output checked."""
        out: list[bytes] = []
        for start in range(0, len(inputs), self.batch):
            chunk = inputs[start:start + self.batch]
            answered = self.prf.evaluate(epoch, chunk)
            if len(answered) != len(chunk) or any(len(v) != OUTPUT_BYTES for v in answered):
                raise ConfigError(f"the keyed PRF answered {len(answered)} values for "
                                  f"{len(chunk)} inputs, or values not of {OUTPUT_BYTES} bytes")
            out.extend(answered)
        return out


def as_keying(key: LinkageKey | Keying) -> Keying:
    """A version 1 linkage key as the HMAC keying of its epoch (callers written for version 1)."""
    if isinstance(key, Keying):
        return key
    return Keying(HmacPRF.version1(key), key.epoch)
