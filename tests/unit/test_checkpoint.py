"""Signed checkpoints: canonical text, signature over exactly that text, strict parsing."""

from __future__ import annotations

import base64
import hashlib

import pytest
from nacl.signing import SigningKey

from safehub.errors import ConfigError
from safehub.services.audit.checkpoint import (
    CheckpointError,
    TreeHead,
    load_public_key,
    load_signing_key,
    parse_note,
    sign,
    verify,
)

KEY = SigningKey(hashlib.sha256(b"test audit key").digest())
ROOT = hashlib.sha256(b"root").digest()


def test_note_is_the_checkpoint_text_and_round_trips() -> None:
    cp = sign(TreeHead("safehub.test/audit", 42, ROOT), KEY)
    note = cp.note()
    body, _, sig = note.partition("\n\n")
    assert body.split("\n") == ["safehub.test/audit", "42",
                                base64.b64encode(ROOT).decode()]
    assert sig.startswith("\u2014 safehub.test/audit ")
    again = parse_note(note)
    assert again == cp
    verify(again, KEY.verify_key)


def test_signature_binds_size_root_and_origin() -> None:
    cp = sign(TreeHead("safehub.test/audit", 42, ROOT), KEY)
    for text in (cp.note().replace("\n42\n", "\n43\n"),
                 cp.note().replace("safehub.test/audit\n", "safehub.evil/audit\n", 1)):
        with pytest.raises(CheckpointError):
            verify(parse_note(text), KEY.verify_key)
    other_root = sign(TreeHead("safehub.test/audit", 42, bytes(32)), KEY)
    forged = type(cp)(other_root.head, cp.key_hash, cp.signature)
    with pytest.raises(CheckpointError, match="bad signature"):
        verify(forged, KEY.verify_key)


def test_another_key_is_refused() -> None:
    cp = sign(TreeHead("safehub.test/audit", 1, ROOT), SigningKey(bytes(32)))
    with pytest.raises(CheckpointError, match="unknown key"):
        verify(cp, KEY.verify_key)


@pytest.mark.parametrize("mangle", [
    lambda t: t + "x",
    lambda t: t.replace("\n\n", "\n"),
    lambda t: t.replace("\n7\n", "\n07\n"),
    lambda t: t.replace("\u2014", "-"),
    lambda t: t[:-5] + "\n",
])
def test_non_canonical_notes_do_not_parse(mangle: object) -> None:
    text = sign(TreeHead("o", 7, ROOT), KEY).note()
    with pytest.raises(CheckpointError):
        parse_note(mangle(text))  # type: ignore[operator]


def test_keys_come_from_env_or_file(tmp_path: object) -> None:
    seed = bytes(range(32)).hex()
    key = load_signing_key(None, {"SAFEHUB_AUDIT_SIGNING_KEY": seed})
    assert bytes(key) == bytes(range(32))
    pub = bytes(key.verify_key).hex()
    assert bytes(load_public_key(None, {"SAFEHUB_AUDIT_PUBLIC_KEY": pub})) == bytes(
        key.verify_key)
    with pytest.raises(ConfigError):
        load_signing_key(None, {})
    with pytest.raises(ConfigError):
        load_signing_key(None, {"SAFEHUB_AUDIT_SIGNING_KEY": "abc"})
