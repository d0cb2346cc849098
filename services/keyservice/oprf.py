"""RFC 9497 OPRF, mode 0x00 (OPRF), suite ristretto255-SHA512: the pure protocol.

Group arithmetic is libsodium's ristretto255 through `rbcl`, which bundles its own libsodium
(PyNaCl does not expose ristretto255). Everything here follows the RFC's section 3.3.1 and
section 4.1 exactly, so that the RFC's Appendix A.1.1 vectors pass and any agency's client in
any language interoperates. Randomness is used only for a blind that the caller did not supply.

Elements and scalars travel as their RFC encodings: 32 bytes each, scalars little-endian.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rbcl  # type: ignore[import-untyped]

from safehub.errors import ValidationError

MODE_OPRF = 0x00
CONTEXT = b"OPRFV1-" + bytes([MODE_OPRF]) + b"-ristretto255-SHA512"
HASH_TO_GROUP_DST = b"HashToGroup-" + CONTEXT
HASH_TO_SCALAR_DST = b"HashToScalar-" + CONTEXT
DERIVE_KEY_PAIR_DST = b"DeriveKeyPair" + CONTEXT

ELEMENT_BYTES = 32  # Ne
SCALAR_BYTES = 32  # Ns
OUTPUT_BYTES = 64  # Nh: SHA-512
SEED_BYTES = 32  # Nseed
MAX_INPUT_BYTES = 2**16 - 1  # inputs are length-prefixed with two bytes in Finalize
_IDENTITY = bytes(ELEMENT_BYTES)  # the canonical encoding of the identity element

_sodium: Any = rbcl


def _forget_rbcl_library_file() -> None:
    """rbcl writes its bundled libsodium to a new temporary file at every import and never
    removes it (2.7 MB per process in /tmp). Once loaded the mapping outlives the name on POSIX,
    so the file is removed here; if rbcl changes how it loads, nothing is removed."""
    module = sys.modules.get("rbcl._sodium")
    path = getattr(module, "lib_path", None)
    if not isinstance(path, str) or os.name != "posix":
        return
    file = Path(path)
    if file.parent == Path(tempfile.gettempdir()) and file.suffix == ".so":
        file.unlink(missing_ok=True)


_forget_rbcl_library_file()


def _i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def expand_message_xmd(msg: bytes, dst: bytes, length: int) -> bytes:
    """RFC 9380 section 5.3.1 with SHA-512 (b_in_bytes 64, s_in_bytes 128)."""
    b_in_bytes, s_in_bytes = 64, 128
    ell = -(-length // b_in_bytes)
    if ell > 255 or length > 65535 or len(dst) > 255:
        raise ValueError("expand_message_xmd: length or DST too long")
    dst_prime = dst + _i2osp(len(dst), 1)
    msg_prime = bytes(s_in_bytes) + msg + _i2osp(length, 2) + b"\x00" + dst_prime
    b0 = hashlib.sha512(msg_prime).digest()
    blocks = [hashlib.sha512(b0 + b"\x01" + dst_prime).digest()]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b0, blocks[-1], strict=True))
        blocks.append(hashlib.sha512(mixed + _i2osp(i, 1) + dst_prime).digest())
    return b"".join(blocks)[:length]


def hash_to_group(msg: bytes) -> bytes:
    """hash_to_ristretto255 (RFC 9380 appendix B) under the suite's HashToGroup DST."""
    uniform = expand_message_xmd(msg, HASH_TO_GROUP_DST, 64)
    return bytes(_sodium.crypto_core_ristretto255_from_hash(uniform))


def hash_to_scalar(msg: bytes, dst: bytes = HASH_TO_SCALAR_DST) -> bytes:
    """64 uniform bytes read little-endian and reduced modulo the group order."""
    uniform = expand_message_xmd(msg, dst, 64)
    return bytes(_sodium.crypto_core_ristretto255_scalar_reduce(uniform))


def _scalar_mult(scalar: bytes, element: bytes) -> bytes:
    try:
        return bytes(_sodium.crypto_scalarmult_ristretto255(scalar, element))
    except (RuntimeError, ValueError, TypeError) as exc:
        # Unreachable for a non-zero scalar and a validated element of this prime-order group.
        raise ValidationError("element", "scalar multiplication failed") from exc


def _check_encoding(data: bytes, field: str) -> None:
    """What libsodium's decoding does not check: the length, the identity (which it accepts),
    and the top bit. A canonical encoding is below 2^255 - 19; libsodium 1.0.18 (bundled by
    rbcl, and Debian 12's) ignores the top bit when decoding, so it would take x and
    x | 2^255 as the same element: the RFC requires the non-canonical one to be refused."""
    if len(data) != ELEMENT_BYTES:
        raise ValidationError(field, f"must be {ELEMENT_BYTES} bytes", f"got {len(data)}")
    if data == _IDENTITY:
        raise ValidationError(field, "is the identity element")
    if data[-1] & 0x80:
        raise ValidationError(field, "is not a canonical ristretto255 encoding")


def deserialize_element(data: bytes, field: str = "element") -> bytes:
    """The RFC's DeserializeElement: 32 bytes, a canonical ristretto255 encoding, not the
    identity."""
    _check_encoding(data, field)
    if not _sodium.crypto_core_ristretto255_is_valid_point(data):
        raise ValidationError(field, "is not a valid ristretto255 element")
    return data


def _check_scalar(scalar: bytes, field: str) -> None:
    # A canonical scalar is below the group order: reducing it (padded to 64 bytes) is a no-op.
    if len(scalar) != SCALAR_BYTES:
        raise ValidationError(field, f"must be {SCALAR_BYTES} bytes", f"got {len(scalar)}")
    if _sodium.crypto_core_ristretto255_scalar_reduce(scalar + bytes(32)) != scalar:
        raise ValidationError(field, "is not a canonical scalar")
    if scalar == bytes(SCALAR_BYTES):
        raise ValidationError(field, "is zero")


def _check_input(data: bytes) -> None:
    if len(data) > MAX_INPUT_BYTES:
        raise ValidationError("input", f"must be at most {MAX_INPUT_BYTES} bytes")


def derive_key_pair(seed: bytes, info: bytes) -> tuple[bytes, bytes]:
    """RFC 9497 section 3.2.1 DeriveKeyPair: (skS scalar, pkS element), both serialized."""
    if len(seed) != SEED_BYTES:
        raise ValidationError("seed", f"must be {SEED_BYTES} bytes", f"got {len(seed)}")
    if len(info) > 2**16 - 1:
        raise ValidationError("info", "must be at most 65535 bytes")
    derive_input = seed + _i2osp(len(info), 2) + info
    for counter in range(256):
        sk = hash_to_scalar(derive_input + _i2osp(counter, 1), DERIVE_KEY_PAIR_DST)
        if sk != bytes(SCALAR_BYTES):
            pk = bytes(_sodium.crypto_scalarmult_ristretto255_base(sk))
            return sk, pk
    raise ValidationError("seed", "DeriveKeyPairError: no non-zero scalar in 256 tries")


def random_scalar() -> bytes:
    """A uniformly random non-zero scalar (libsodium never returns zero here)."""
    return bytes(_sodium.crypto_core_ristretto255_scalar_random())


def blind(input: bytes, blind: bytes | None = None) -> tuple[bytes, bytes]:
    """Client: (blind, blindedElement). Pass `blind` only to reproduce test vectors."""
    _check_input(input)
    if blind is None:
        r = random_scalar()  # canonical and non-zero by construction
    else:
        r = blind
        _check_scalar(r, "blind")
    element = hash_to_group(input)
    if element == _IDENTITY:
        # Probability ~2^-252; the RFC names it InvalidInputError.
        raise ValidationError("input", "maps to the identity element")
    return r, _scalar_mult(r, element)


def blind_evaluate(secret_key: bytes, blinded_element: bytes) -> bytes:
    """Server: skS * blindedElement, the element checked as the RFC requires: the
    multiplication decodes it with is_valid_point's own check and fails on an invalid one."""
    _check_encoding(blinded_element, "blindedElement")
    try:
        return bytes(_sodium.crypto_scalarmult_ristretto255(secret_key, blinded_element))
    except (RuntimeError, ValueError, TypeError):
        raise ValidationError("blindedElement", "is not a valid ristretto255 element") from None


def _finalize_hash(data: bytes, unblinded: bytes) -> bytes:
    return hashlib.sha512(
        _i2osp(len(data), 2) + data + _i2osp(len(unblinded), 2) + unblinded + b"Finalize"
    ).digest()


def finalize(input: bytes, blind: bytes, evaluated: bytes) -> bytes:
    """Client: unblind and hash into the 64-byte PRF output."""
    return finalize_batch([input], [blind], [evaluated])[0]


def invert_scalars(scalars: Sequence[bytes]) -> list[bytes]:
    """Every scalar's inverse with one field inversion (Montgomery's trick): an inversion
    costs about 25 us in libsodium, a multiplication well under 1 us, and a client finalizes
    thousands of elements per batch."""
    if not scalars:
        return []
    mul = _sodium.crypto_core_ristretto255_scalar_mul
    prefix = [scalars[0]]
    for scalar in scalars[1:]:
        prefix.append(mul(prefix[-1], scalar))
    running = bytes(_sodium.crypto_core_ristretto255_scalar_invert(prefix[-1]))
    out = [b""] * len(scalars)
    for i in range(len(scalars) - 1, 0, -1):
        out[i] = bytes(mul(running, prefix[i - 1]))
        running = bytes(mul(running, scalars[i]))
    out[0] = running
    return out


def finalize_batch(inputs: Sequence[bytes], blinds: Sequence[bytes],
                   evaluated: Sequence[bytes]) -> list[bytes]:
    """Finalize for a batch, in order: the same outputs as Finalize one by one."""
    if not len(inputs) == len(blinds) == len(evaluated):
        raise ValueError("finalize_batch: one blind and one evaluated element per input")
    names = ([f"evaluatedElement[{i}]" for i in range(len(inputs))] if len(inputs) != 1
             else ["evaluatedElement"])
    for data, blind_scalar, element, name in zip(inputs, blinds, evaluated, names, strict=True):
        _check_input(data)
        _check_encoding(element, name)
        _check_scalar(blind_scalar, "blind")
    out = []
    multiply = _sodium.crypto_scalarmult_ristretto255
    for data, inverse, element, name in zip(inputs, invert_scalars(blinds), evaluated, names,
                                            strict=True):
        # The multiplication decodes the element exactly as is_valid_point does
        # (ristretto255_frombytes) and fails on an invalid one, so DeserializeElement's
        # validity check is this call's, not a second decode (5 us of the ~100 us an element
        # costs a client).
        try:
            unblinded = bytes(multiply(inverse, element))
        except (RuntimeError, ValueError, TypeError):
            raise ValidationError(name, "is not a valid ristretto255 element") from None
        out.append(_finalize_hash(data, unblinded))
    return out


def evaluate(secret_key: bytes, data: bytes) -> bytes:
    """The PRF computed directly with the key (RFC 9497 section 3.3.1 Evaluate): what the
    protocol must agree with. For tests and the server's own self-check only."""
    _check_input(data)
    element = hash_to_group(data)
    return _finalize_hash(data, _scalar_mult(secret_key, element))
