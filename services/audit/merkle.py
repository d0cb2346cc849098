"""RFC 6962 Merkle hash tree over the audit log: tree heads, inclusion and consistency proofs.

Pure: bytes in, bytes out. Hashes follow RFC 6962 section 2.1 (leaf = SHA-256(0x00 || entry),
node = SHA-256(0x01 || left || right)); the verifiers follow the iterative algorithms of
RFC 9162 sections 2.1.3.2 and 2.1.4.2, which reject a proof that is a component too long or too
short rather than ignoring the extra component.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof is malformed or does not prove what it claims; the message says why."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """All levels of the tree over a list of leaf hashes, for fast proofs at any prefix size.

    A lone right node is carried up unchanged, which yields exactly RFC 6962's MTH: its left
    subtrees are always complete power-of-two subtrees.
    """

    def __init__(self, leaf_hashes: Iterable[bytes]) -> None:
        level = list(leaf_hashes)
        for h in level:
            if len(h) != HASH_SIZE:
                raise ValueError("a leaf hash must be 32 bytes")
        self._levels: list[list[bytes]] = [level]
        while len(level) > 1:
            nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                nxt.append(level[-1])
            self._levels.append(nxt)
            level = nxt

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def root(self, size: int | None = None) -> bytes:
        n = self.size if size is None else size
        self._check_size(n)
        return EMPTY_ROOT if n == 0 else self._range(0, n)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} outside 0..{self.size}")

    def _range(self, lo: int, hi: int) -> bytes:
        """MTH of leaves [lo, hi); lo is always a multiple of the largest power of 2 <= hi-lo."""
        n = hi - lo
        if n & (n - 1) == 0:
            height = n.bit_length() - 1
            return self._levels[height][lo >> height]
        k = _split(n)
        return node_hash(self._range(lo, lo + k), self._range(lo + k, hi))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 6962 PATH(index, D[0:size])."""
        n = self.size if size is None else size
        self._check_size(n)
        if not 0 <= index < n:
            raise ValueError(f"leaf index {index} outside tree of size {n}")
        path: list[bytes] = []
        lo, hi, m = 0, n, index
        while hi - lo > 1:
            k = _split(hi - lo)
            if m < k:
                path.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                path.append(self._range(lo, lo + k))
                lo, m = lo + k, m - k
        path.reverse()
        return path

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        """RFC 6962 PROOF(first, D[0:second])."""
        n = self.size if second is None else second
        self._check_size(n)
        if not 0 <= first <= n:
            raise ValueError(f"first size {first} outside 0..{n}")
        if first in (0, n):
            return []
        proof: list[bytes] = []
        lo, hi, m, complete = 0, n, first, True
        while m != hi - lo:
            k = _split(hi - lo)
            if m <= k:
                proof.append(self._range(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._range(lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            proof.append(self._range(lo, hi))
        proof.reverse()
        return proof


def root_of(entries: Iterable[bytes]) -> bytes:
    """MTH over raw entries."""
    return MerkleTree(leaf_hash(e) for e in entries).root()


class CompactRange:
    """Appends leaf hashes one by one keeping only O(log n) subtree roots; gives the root at any
    moment. The sink uses it to checkpoint without holding the whole log in memory."""

    def __init__(self) -> None:
        self._size = 0
        self._peaks: list[bytes] = []  # roots of the perfect subtrees, left to right

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> None:
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash must be 32 bytes")
        self._peaks.append(leaf)
        n = self._size
        while n & 1:
            right = self._peaks.pop()
            left = self._peaks.pop()
            self._peaks.append(node_hash(left, right))
            n >>= 1
        self._size += 1

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        acc = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            acc = node_hash(peak, acc)
        return acc


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def root_from_inclusion_proof(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes]
) -> bytes:
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} outside tree of size {size}")
    _check_hash(leaf, "leaf hash")
    fn, sn, r = index, size - 1, leaf
    for i, p in enumerate(proof):
        _check_hash(p, f"proof component {i}")
        if sn == 0:
            raise ProofError("inclusion proof has more components than the tree has levels")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof has fewer components than the tree has levels")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless `proof` shows leaf hash `leaf` at `index` in the tree `root`."""
    _check_hash(root, "root hash")
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(f"inclusion proof for leaf {index} of {size} does not reach the root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless the tree (second, second_root) extends (first, first_root)."""
    if not 0 <= first <= second:
        raise ProofError(f"sizes {first} -> {second}: a log never shrinks")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof component {i}")
    if first == second:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if first_root != second_root:
            raise ProofError(f"two different roots for tree size {first}")
        return
    if first == 0:
        if proof:
            raise ProofError("a proof from the empty tree must be empty")
        return
    _check_hash(first_root, "first root")
    _check_hash(second_root, "second root")
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof has more components than needed")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof has fewer components than needed")
    if fr != first_root:
        raise ProofError(f"consistency proof does not reproduce the root of size {first}")
    if sr != second_root:
        raise ProofError(f"consistency proof does not reproduce the root of size {second}")


def encode_proof(proof: Sequence[bytes]) -> bytes:
    """Wire form: the components concatenated (each exactly 32 bytes)."""
    for i, p in enumerate(proof):
        _check_hash(p, f"proof component {i}")
    return b"".join(proof)


def decode_proof(data: bytes) -> list[bytes]:
    """Parse the wire form; trailing bytes that do not make a whole hash are an error."""
    if len(data) % HASH_SIZE:
        raise ProofError(f"proof of {len(data)} bytes has {len(data) % HASH_SIZE} trailing bytes")
    return [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
