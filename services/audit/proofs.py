"""The proof source: inclusion and consistency proofs over the stored rows, as the sink serves them.

Pure and untrusted by design: it builds its tree from the leaf hashes the ledger holds, exactly
what a sink answering proof requests would do, and checks nothing. Whoever asks (the verifier,
a witness) checks each proof against a checkpoint root it trusts, so a proof source that lies,
or serves rows altered after they were signed, makes verification fail instead of pass.

The sink can serve the same proofs later from its own ledger (`LedgerProofs.from_ledger`),
in the wire form of `merkle.encode_proof`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from safehub.services.audit.ledger import Ledger
from safehub.services.audit.merkle import MerkleTree, ProofError


class ProofSource(Protocol):
    """Whatever answers proof requests: the verifier never assumes it is honest."""

    def inclusion(self, index: int, size: int) -> Sequence[bytes]: ...

    def consistency(self, first: int, second: int) -> Sequence[bytes]: ...


class LedgerProofs:
    """Proofs over the tree of the ledger's stored leaf hashes (not recomputed from the rows'
    bytes: a server serves what it stored)."""

    def __init__(self, leaf_hashes: Iterable[bytes]) -> None:
        try:
            self._tree = MerkleTree(leaf_hashes)
        except ValueError as exc:
            raise ProofError(f"the stored leaf hashes do not make a tree: {exc}") from exc

    @classmethod
    def from_ledger(cls, ledger: Ledger) -> LedgerProofs:
        return cls(ledger.leaf_hashes())

    @property
    def size(self) -> int:
        return self._tree.size

    def inclusion(self, index: int, size: int) -> list[bytes]:
        try:
            return self._tree.inclusion_proof(index, size)
        except ValueError as exc:
            raise ProofError(f"no inclusion proof for leaf {index} of {size}: {exc}") from exc

    def consistency(self, first: int, second: int) -> list[bytes]:
        try:
            return self._tree.consistency_proof(first, second)
        except ValueError as exc:
            raise ProofError(f"no consistency proof from {first} to {second}: {exc}") from exc
