"""RFC 6962 Merkle tree: published test vectors and rejection of corrupted proofs.

The vectors are the certificate-transparency reference data (RFC 6962 test inputs, as kept in
transparency-dev/merkle proof/verify_test.go and rfc6962/rfc6962_test.go), not our own output.
"""

from __future__ import annotations

import hashlib

import pytest

from safehub.services.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MerkleTree,
    ProofError,
    decode_proof,
    encode_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

LEAVES = [h(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                         "606162636465666768696a6b6c6d6e6f")]

# Root of the tree over the first n leaves, n = 1..8.
ROOTS = [h(x) for x in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]

# (leaf index, tree size, audit path)
INCLUSION = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]

# (first size, second size, proof)
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]

SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


@pytest.fixture(scope="module")
def tree() -> MerkleTree:
    return MerkleTree(leaf_hash(x) for x in LEAVES)


def test_hash_primitives_match_rfc6962_reference() -> None:
    assert h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == EMPTY_ROOT
    assert leaf_hash(b"") == h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(b"L123456") == h(
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    assert node_hash(b"N123", b"N456") == h(
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb")


def test_roots_for_every_prefix(tree: MerkleTree) -> None:
    assert tree.root(0) == EMPTY_ROOT
    for n, want in enumerate(ROOTS, start=1):
        assert tree.root(n) == want, n
        assert MerkleTree(leaf_hash(x) for x in LEAVES[:n]).root() == want


def test_compact_range_gives_the_same_roots() -> None:
    cr = CompactRange()
    assert cr.root() == EMPTY_ROOT
    for n, leaf in enumerate(LEAVES, start=1):
        cr.append(leaf_hash(leaf))
        assert cr.root() == ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_vectors(tree: MerkleTree, index: int, size: int, path: list[str]) -> None:
    proof = [h(p) for p in path]
    assert tree.inclusion_proof(index, size) == proof
    verify_inclusion(index, size, leaf_hash(LEAVES[index]), proof, ROOTS[size - 1])


@pytest.mark.parametrize(("first", "second", "path"), CONSISTENCY)
def test_consistency_vectors(tree: MerkleTree, first: int, second: int, path: list[str]) -> None:
    proof = [h(p) for p in path]
    assert tree.consistency_proof(first, second) == proof
    verify_consistency(first, second, ROOTS[first - 1], ROOTS[second - 1], proof)


def _flip(proof: list[bytes], i: int, mask: int) -> list[bytes]:
    out = list(proof)
    out[i] = bytes([out[i][0] ^ mask]) + out[i][1:]
    return out


def _inclusion_corruptions(index: int, size: int, proof: list[bytes], root: bytes,
                           leaf: bytes) -> list[tuple[str, int, int, bytes, list[bytes], bytes]]:
    cases = [
        ("index - 1", index - 1, size, leaf, proof, root),
        ("index + 1", index + 1, size, leaf, proof, root),
        ("index ^ 2", index ^ 2, size, leaf, proof, root),
        ("size * 2", index, size * 2, leaf, proof, root),
        ("size / 2", index, size // 2, leaf, proof, root),
        ("wrong leaf", index, size, b"WrongLeaf", proof, root),
        ("empty root", index, size, leaf, proof, EMPTY_ROOT),
        ("random root", index, size, leaf, proof, SOME_HASH),
        ("trailing garbage", index, size, leaf, [*proof, b""], root),
        ("trailing root", index, size, leaf, [*proof, root], root),
        ("preceding garbage", index, size, leaf, [b"", *proof], root),
        ("preceding root", index, size, leaf, [root, *proof], root),
    ]
    cases += [(f"flipped bit in [{i}]", index, size, leaf, _flip(proof, i, 8), root)
              for i in range(len(proof))]
    if proof:
        cases.append(("missing component", index, size, leaf, proof[:-1], root))
    if len(proof) > 1:
        cases.append(("extra component", index, size, leaf,
                      [proof[0], SOME_HASH, *proof[1:]], root))
    return cases


@pytest.mark.parametrize(("index", "size", "path"), [v for v in INCLUSION if v[2]])
def test_corrupted_inclusion_proofs_are_rejected(index: int, size: int, path: list[str]) -> None:
    proof = [h(p) for p in path]
    leaf = leaf_hash(LEAVES[index])
    for desc, i, n, lf, pr, rt in _inclusion_corruptions(index, size, proof, ROOTS[size - 1],
                                                          leaf):
        with pytest.raises(ProofError):
            verify_inclusion(i, n, lf, pr, rt)
        assert desc


@pytest.mark.parametrize(("first", "second", "path"), [v for v in CONSISTENCY if v[2]])
def test_corrupted_consistency_proofs_are_rejected(first: int, second: int,
                                                   path: list[str]) -> None:
    proof = [h(p) for p in path]
    r1, r2 = ROOTS[first - 1], ROOTS[second - 1]
    cases = [
        (first - 1, second, r1, r2, proof), (first + 1, second, r1, r2, proof),
        (first ^ 2, second, r1, r2, proof), (first, second * 2, r1, r2, proof),
        (first, second // 2, r1, r2, proof), (first, second, b"WrongRoot", r2, proof),
        (first, second, r1, b"WrongRoot", proof), (first, second, r2, r1, proof),
        (first, second, r1, r2, []), (first, second, r1, r2, [*proof, b""]),
        (first, second, r1, r2, [*proof, r1]), (first, second, r1, r2, [*proof, r2]),
        (first, second, r1, r2, [b"", *proof]), (first, second, r1, r2, [r1, *proof]),
        (first, second, r1, r2, [r2, *proof]), (first, second, r1, r2, [proof[0], *proof]),
        (first, second, r1, r2, proof[:-1]),
    ]
    cases += [(first, second, r1, r2, _flip(proof, i, 16)) for i in range(len(proof))]
    for f, s, a, b, pr in cases:
        if (f, s) == (first, second) and (a, b) == (r1, r2) and pr == proof:
            continue
        with pytest.raises(ProofError):
            verify_consistency(f, s, a, b, pr)


def test_trivial_consistency() -> None:
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, ROOTS[4], [])
    with pytest.raises(ProofError):
        verify_consistency(3, 3, ROOTS[2], ROOTS[3], [])  # a fork at equal size
    with pytest.raises(ProofError):
        verify_consistency(2, 1, ROOTS[1], ROOTS[0], [])  # a shrinking log
    with pytest.raises(ProofError):
        verify_consistency(1, 1, ROOTS[0], ROOTS[0], [EMPTY_ROOT])


def test_wire_form_rejects_trailing_bytes() -> None:
    proof = [h(p) for p in INCLUSION[2][2]]
    data = encode_proof(proof)
    assert decode_proof(data) == proof
    for bad in (data + b"\x00", data[:-1], data + b"\x00" * 31):
        with pytest.raises(ProofError, match="trailing"):
            decode_proof(bad)


def test_every_proof_of_a_larger_tree_verifies() -> None:
    """Proofs generated for all indices and sizes of a 70-leaf tree verify, and bind the leaf."""
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(70)]
    tree = MerkleTree(leaf_hash(x) for x in leaves)
    for size in range(1, 71):
        root = tree.root(size)
        cr = CompactRange()
        for leaf in leaves[:size]:
            cr.append(leaf_hash(leaf))
        assert cr.root() == root
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            verify_inclusion(index, size, tree.leaf(index), proof, root)
            if size > 1:
                with pytest.raises(ProofError):
                    verify_inclusion(index, size, tree.leaf((index + 1) % size), proof, root)
        for first in range(0, size + 1):
            verify_consistency(first, size, tree.root(first), root,
                               tree.consistency_proof(first, size))
