"""RFC 9497 OPRF (ristretto255-SHA512) through the pure functions: the RFC's own vectors,
element validation, key files, quota accounting, bearer secrets, and the HTTP app in process
(the running service over HTTPS is tests/integration/test_keyservice.py)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from safehub.errors import ConfigError, ValidationError
from safehub.services.keyservice import oprf
from safehub.services.keyservice.credentials import Credentials
from safehub.services.keyservice.keys import KeyDirectory, key_path, write_key_file
from safehub.services.keyservice.quota import (
    DAY_MS,
    MINUTE_MS,
    Limit,
    QuotaBook,
    QuotaConfig,
    Refusal,
    parse_quota_config,
    read_counts,
    write_counts,
)
from safehub.services.keyservice.server import MAX_BATCH, create_app, refusal_subject
from tests.fixtures.clock import ManualClock

VECTORS = json.loads((Path(__file__).parent / "rfc9497_vectors.json").read_text())
SEED = bytes.fromhex(VECTORS["Seed"])
INFO = bytes.fromhex(VECTORS["KeyInfo"])


def test_derive_key_pair_gives_the_rfc_secret_key() -> None:
    sk, pk = oprf.derive_key_pair(SEED, INFO)
    assert sk.hex() == VECTORS["skSm"]
    assert len(pk) == 32 and oprf.deserialize_element(pk) == pk


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_rfc_vectors(vector: dict[str, str]) -> None:
    sk, _ = oprf.derive_key_pair(SEED, INFO)
    data = bytes.fromhex(vector["Input"])
    blind, blinded = oprf.blind(data, bytes.fromhex(vector["Blind"]))
    assert blinded.hex() == vector["BlindedElement"]
    evaluated = oprf.blind_evaluate(sk, blinded)
    assert evaluated.hex() == vector["EvaluationElement"]
    output = oprf.finalize(data, blind, evaluated)
    assert output.hex() == vector["Output"]
    assert oprf.evaluate(sk, data) == output


def test_random_blinds_give_the_same_output() -> None:
    sk, _ = oprf.derive_key_pair(SEED, INFO)
    data = b"MK2|JANE|DOE|2012-03-04"
    outputs = set()
    blinded_seen = set()
    for _ in range(3):
        blind, blinded = oprf.blind(data)
        blinded_seen.add(blinded)
        outputs.add(oprf.finalize(data, blind, oprf.blind_evaluate(sk, blinded)))
    assert len(outputs) == 1 and len(blinded_seen) == 3  # the server sees unlinkable elements


def test_other_key_other_output() -> None:
    sk1, _ = oprf.derive_key_pair(SEED, INFO)
    sk2, _ = oprf.derive_key_pair(SEED, b"another key")
    assert oprf.evaluate(sk1, b"x") != oprf.evaluate(sk2, b"x")


def test_expand_message_xmd_rfc9380_vector() -> None:
    # RFC 9380 appendix K.3 (expand_message_xmd(SHA-512)), msg "", len_in_bytes 0x20.
    dst = b"QUUX-V01-CS02-with-expander-SHA512-256"
    assert oprf.expand_message_xmd(b"", dst, 0x20).hex() == (
        "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"
    )


INVALID = {
    "short": bytes(31),
    "long": bytes(33),
    "identity": bytes(32),
    "all ones (non-canonical)": b"\xff" * 32,
    "negative field element": b"\x01" + bytes(31),
    "high bit set": bytes(31) + b"\x80",
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_elements_are_refused(name: str) -> None:
    sk, _ = oprf.derive_key_pair(SEED, INFO)
    with pytest.raises(ValidationError) as info:
        oprf.blind_evaluate(sk, INVALID[name])
    assert info.value.field == "blindedElement"
    with pytest.raises(ValidationError) as info:
        oprf.finalize(b"x", oprf.random_scalar(), INVALID[name])
    assert info.value.field == "evaluatedElement"
    good = oprf.blind_evaluate(sk, oprf.blind(b"y")[1])
    with pytest.raises(ValidationError) as info:  # the element's place in a batch is named
        oprf.finalize_batch([b"y", b"x"], [oprf.random_scalar()] * 2, [good, INVALID[name]])
    assert info.value.field == "evaluatedElement[1]"


def test_identity_error_is_clear() -> None:
    with pytest.raises(ValidationError, match="identity"):
        oprf.deserialize_element(bytes(32), "elements[3]")


def test_bad_blinds_and_inputs() -> None:
    with pytest.raises(ValidationError, match="zero"):
        oprf.blind(b"x", bytes(32))
    with pytest.raises(ValidationError, match="canonical"):
        oprf.blind(b"x", b"\xff" * 32)
    with pytest.raises(ValidationError, match="65535"):
        oprf.blind(b"x" * 65536)
    with pytest.raises(ValidationError, match="32 bytes"):
        oprf.derive_key_pair(bytes(31), b"")


def test_a_valid_element_with_the_top_bit_set_is_refused() -> None:
    # libsodium 1.0.18 decodes it as the same element; RFC 9497 demands canonical encodings.
    sk, pk = oprf.derive_key_pair(SEED, INFO)
    twin = pk[:-1] + bytes([pk[-1] | 0x80])
    with pytest.raises(ValidationError, match="canonical"):
        oprf.blind_evaluate(sk, twin)


# --- key files -----------------------------------------------------------------------------


def test_key_file_round_trip_and_hidden_repr(tmp_path: Path) -> None:
    path = write_key_file(tmp_path, 1, SEED, INFO)
    assert path == key_path(tmp_path, 1)
    assert path.stat().st_mode & 0o777 == 0o600
    key = KeyDirectory(tmp_path).get(1)
    assert key is not None and key.secret.hex() == VECTORS["skSm"]
    text = repr(key) + repr(KeyDirectory(tmp_path))
    assert VECTORS["skSm"] not in text and SEED.hex() not in text and "secret" not in text
    with pytest.raises(ConfigError, match="already has a key"):
        write_key_file(tmp_path, 1)


def test_random_keygen_and_destroyed_epoch(tmp_path: Path) -> None:
    write_key_file(tmp_path, 0)
    write_key_file(tmp_path, 2)
    keys = KeyDirectory(tmp_path)
    assert keys.check() == [0, 2]
    k0, k2 = keys.get(0), keys.get(2)
    assert k0 is not None and k2 is not None and k0.secret != k2.secret
    key_path(tmp_path, 2).unlink()
    assert keys.get(2) is None and keys.epochs() == [0]


def test_key_file_must_be_owner_only_and_well_formed(tmp_path: Path) -> None:
    path = write_key_file(tmp_path, 3, SEED, INFO)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        KeyDirectory(tmp_path).get(3)
    path.chmod(0o600)
    path.write_text('{"epoch": 4, "seed": "' + SEED.hex() + '", "info": ""}')
    with pytest.raises(ConfigError, match=r"epoch-4\.json"):
        KeyDirectory(tmp_path).get(3)
    path.write_text('{"epoch": 3, "seed": "abcd", "info": ""}')
    with pytest.raises(ConfigError, match="32 bytes") as info:
        KeyDirectory(tmp_path).get(3)
    assert "abcd" not in str(info.value)


# --- quotas --------------------------------------------------------------------------------

T0 = 1_764_892_800_000  # 2025-12-05T00:00:00Z, a day boundary


def test_quota_minute_limit_refuses_whole_batch_and_resets() -> None:
    book = QuotaBook(QuotaConfig(Limit(per_minute=10, per_day=100)))
    assert book.charge("a", 6, T0 + 1000) is None
    refusal = book.charge("a", 5, T0 + 2000)
    assert isinstance(refusal, Refusal)
    assert (refusal.window, refusal.used, refusal.requested) == ("minute", 6, 5)
    assert refusal.resets_at_ms == T0 + MINUTE_MS
    assert "per-minute quota of 10" in refusal.message and "00:01:00Z" in refusal.message
    assert book.charge("a", 4, T0 + 3000) is None  # exactly at the limit: allowed
    assert book.charge("a", 1, T0 + MINUTE_MS - 1) is not None
    assert book.charge("a", 1, T0 + MINUTE_MS) is None  # a new minute
    assert book.charge("b", 10, T0 + 3000) is None  # another agency is unaffected


def test_quota_day_limit_and_batch_bigger_than_limit() -> None:
    config = parse_quota_config(
        "[default]\nper_minute = 50\nper_day = 60\n[agencies.big]\nper_day = 1000\n")
    book = QuotaBook(config)
    assert book.charge("a", 50, T0) is None
    assert book.charge("a", 11, T0 + MINUTE_MS) is not None
    refusal = book.charge("a", 11, T0 + MINUTE_MS)
    assert refusal is not None and refusal.window == "day"
    assert refusal.resets_at_ms == T0 + DAY_MS
    assert book.charge("a", 10, T0 + MINUTE_MS) is None
    assert book.charge("a", 1, T0 + DAY_MS) is None  # the next UTC day
    too_big = book.charge("big", 51, T0)
    assert too_big is not None and "send smaller batches" in too_big.message
    assert config.limit_for("big") == Limit(50, 1000)
    assert book.charge("big", 0, T0) is None


def test_quota_usage_and_bad_config() -> None:
    book = QuotaBook(QuotaConfig(Limit(10, 100)))
    book.charge("a", 3, T0)
    rows = {u.agency: u for u in book.usage({"b"}, T0 + 1)}
    assert rows["a"].minute.used == 3 and rows["a"].day.used == 3 and rows["b"].day.used == 0
    later = {u.agency: u for u in book.usage(set(), T0 + MINUTE_MS)}
    assert later["a"].minute.used == 0 and later["a"].day.used == 3
    for bad in ("[default]\nper_minute = -1\n", "[defaults]\n", "[default]\nper_hour = 1\n",
                "[agencies]\nx = 3\n", "not toml ["):
        with pytest.raises(ConfigError):
            parse_quota_config(bad)


def test_quota_counts_survive_a_restart(tmp_path: Path) -> None:
    config = QuotaConfig(Limit(per_minute=10, per_day=15))
    book = QuotaBook(config)
    book.charge("a", 8, T0)
    state = tmp_path / "quota.json"
    assert read_counts(state) == {}
    write_counts(state, book.counts())
    again = QuotaBook(config)
    again.restore(read_counts(state))
    assert again.charge("a", 3, T0 + 1) is not None  # same minute: 8 + 3 > 10
    refusal = again.charge("a", 8, T0 + MINUTE_MS)
    assert refusal is not None and refusal.window == "day"  # same day: 8 + 8 > 15
    state.write_text('{"a": [1, 2]}')
    with pytest.raises(ConfigError, match="bad counters"):
        QuotaBook(config).restore(read_counts(state))
    state.write_text("[")
    with pytest.raises(ConfigError, match="unreadable"):
        read_counts(state)


# --- the HTTP app, in process --------------------------------------------------------------


def _app(tmp_path: Path, limit: Limit | None = None):
    write_key_file(tmp_path / "keys", 1, SEED, INFO)
    audited: list[tuple[Refusal, int]] = []
    auth = Credentials.from_secrets({"police-x": "pw-police", "health-y": "pw-health"}, "ops")
    clock = ManualClock(T0)
    app = create_app(KeyDirectory(tmp_path / "keys"),
                     QuotaBook(QuotaConfig(limit or Limit(100, 1000))), auth,
                     lambda r, e: audited.append((r, e)), clock,
                     lambda counts: write_counts(tmp_path / "quota.json", counts))
    return TestClient(app), audited, clock


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def test_app_evaluates_the_rfc_vectors(tmp_path: Path) -> None:
    client, _, _ = _app(tmp_path)
    elements = [_b64(bytes.fromhex(v["BlindedElement"])) for v in VECTORS["vectors"]]
    r = client.post("/v1/evaluate", json={"epoch": 1, "elements": elements},
                    headers={"Authorization": "Bearer pw-police"})
    assert r.status_code == 200, r.text
    assert r.json()["epoch"] == 1
    assert [base64.b64decode(e).hex() for e in r.json()["evaluated"]] == [
        v["EvaluationElement"] for v in VECTORS["vectors"]]
    assert client.get("/healthz").json() == {"status": "ok", "epochs": [1]}


def test_app_refusals(tmp_path: Path) -> None:
    client, audited, clock = _app(tmp_path, Limit(per_minute=3, per_day=1000))
    good = _b64(bytes.fromhex(VECTORS["vectors"][0]["BlindedElement"]))
    police = {"Authorization": "Bearer pw-police"}

    def post(body: object, headers: dict[str, str] = police):
        return client.post("/v1/evaluate", json=body, headers=headers)

    assert post({"epoch": 1, "elements": [good]}, {"Authorization": "Bearer nope"}
                ).status_code == 401
    assert post({"epoch": 1, "elements": [good]}, {}).status_code == 401
    r = post({"epoch": 1, "elements": [good, "!!notbase64", good]})
    assert r.status_code == 400 and r.json()["detail"] == "elements[1]: not valid base64"
    r = post({"epoch": 1, "elements": [good, _b64(bytes(32))]})
    assert r.status_code == 400 and "elements[1]" in r.json()["detail"]
    assert "identity" in r.json()["detail"]
    r = post({"epoch": 1, "elements": [_b64(b"\xff" * 32)]})
    assert r.status_code == 400 and "elements[0]" in r.json()["detail"]
    assert _b64(b"\xff" * 32) not in r.text
    r = post({"epoch": 1, "elements": [_b64(bytes(16))]})
    assert r.status_code == 400 and "got 16" in r.json()["detail"]
    assert post({"epoch": "1", "elements": [good]}).status_code == 400
    assert post([1, 2]).status_code == 400
    r = post({"epoch": 1, "elements": [good] * (MAX_BATCH + 1)})
    assert r.status_code == 413 and str(MAX_BATCH) in r.json()["detail"]
    r = post({"epoch": 7, "elements": [good]})
    assert r.status_code == 404 and "epoch 7" in r.json()["detail"]
    assert audited == []  # none of those was charged or is a quota refusal

    assert post({"epoch": 1, "elements": [good] * 3}).status_code == 200
    r = post({"epoch": 1, "elements": [good]})
    assert r.status_code == 429 and "per-minute quota of 3" in r.json()["detail"]
    assert r.headers["Retry-After"] == "60"
    assert len(audited) == 1 and audited[0][0].agency == "police-x" and audited[0][1] == 1
    health = {"Authorization": "Bearer pw-health"}
    assert post({"epoch": 1, "elements": [good]}, health).status_code == 200
    assert read_counts(tmp_path / "quota.json") == {"police-x": [T0 // MINUTE_MS, 3,
                                                                 T0 // DAY_MS, 3],
                                                    "health-y": [T0 // MINUTE_MS, 1,
                                                                 T0 // DAY_MS, 1]}
    clock.now += MINUTE_MS
    assert post({"epoch": 1, "elements": [good]}).status_code == 200


def test_app_usage_needs_the_operator(tmp_path: Path) -> None:
    client, _, _ = _app(tmp_path)
    good = _b64(bytes.fromhex(VECTORS["vectors"][0]["BlindedElement"]))
    client.post("/v1/evaluate", json={"epoch": 1, "elements": [good] * 2},
                headers={"Authorization": "Bearer pw-police"})
    assert client.get("/v1/usage").status_code == 401
    assert client.get("/v1/usage", headers={"Authorization": "Bearer pw-police"}
                      ).status_code == 401
    r = client.get("/v1/usage", headers={"Authorization": "Bearer ops"})
    assert r.status_code == 200
    rows = {a["agency"]: a for a in r.json()["agencies"]}
    assert rows["police-x"]["minute"] == {"used": 2, "limit": 100,
                                          "resets_at": "2025-12-05T00:01:00Z"}
    assert rows["health-y"]["day"]["used"] == 0


def test_destroyed_epoch_is_404_without_restart(tmp_path: Path) -> None:
    client, _, _ = _app(tmp_path)
    good = _b64(bytes.fromhex(VECTORS["vectors"][0]["BlindedElement"]))
    police = {"Authorization": "Bearer pw-police"}
    assert client.post("/v1/evaluate", json={"epoch": 1, "elements": [good]},
                       headers=police).status_code == 200
    os.unlink(key_path(tmp_path / "keys", 1))
    r = client.post("/v1/evaluate", json={"epoch": 1, "elements": [good]}, headers=police)
    assert r.status_code == 404 and "destroyed" in r.json()["detail"]


def test_counts_that_cannot_be_saved_fail_closed(tmp_path: Path) -> None:
    write_key_file(tmp_path / "keys", 1, SEED, INFO)

    def broken(counts: dict[str, list[int]]) -> None:
        raise OSError(28, "No space left on device")

    app = create_app(KeyDirectory(tmp_path / "keys"), QuotaBook(QuotaConfig(Limit(10, 10))),
                     Credentials.from_secrets({"police-x": "pw"}), lambda r, e: None,
                     ManualClock(T0), broken)
    good = _b64(bytes.fromhex(VECTORS["vectors"][0]["BlindedElement"]))
    r = TestClient(app).post("/v1/evaluate", json={"epoch": 1, "elements": [good]},
                             headers={"Authorization": "Bearer pw"})
    assert r.status_code == 503 and "evaluated" not in r.json()


def test_refusal_subject_is_per_agency_epoch_minute() -> None:
    s = refusal_subject("police-x", 1, T0)
    assert len(s) == 32 and int(s, 16) >= 0
    assert s == refusal_subject("police-x", 1, T0 + MINUTE_MS - 1)
    assert len({s, refusal_subject("police-x", 1, T0 + MINUTE_MS),
                refusal_subject("police-x", 2, T0), refusal_subject("health-y", 1, T0)}) == 4


def test_credentials_files(tmp_path: Path) -> None:
    (tmp_path / "police-x.secret").write_text("s1\n")
    (tmp_path / "police-x.secret").chmod(0o600)
    creds = Credentials.load(tmp_path, None)
    assert creds.agency_for("s1") == "police-x" and creds.agency_for("s2") is None
    assert not creds.is_operator("s1") and "s1" not in repr(creds)
    (tmp_path / "police-x.secret").chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        Credentials.load(tmp_path, None)


def test_finalize_batch_matches_finalize_one_by_one() -> None:
    sk, _ = oprf.derive_key_pair(SEED, INFO)
    inputs = [bytes.fromhex(v["Input"]) for v in VECTORS["vectors"]] + [b"a", b"", b"c" * 300]
    pairs = [oprf.blind(x) for x in inputs]
    evaluated = [oprf.blind_evaluate(sk, b) for _, b in pairs]
    batch = oprf.finalize_batch(inputs, [r for r, _ in pairs], evaluated)
    assert batch == [oprf.evaluate(sk, x) for x in inputs]
    assert batch[:2] == [bytes.fromhex(v["Output"]) for v in VECTORS["vectors"]]
    assert oprf.finalize_batch([], [], []) == []
    assert oprf.invert_scalars([pairs[0][0]]) == [
        bytes(oprf._sodium.crypto_core_ristretto255_scalar_invert(pairs[0][0]))]
    with pytest.raises(ValidationError, match=r"evaluatedElement\[1\]"):
        oprf.finalize_batch(inputs[:2], [r for r, _ in pairs[:2]], [evaluated[0], bytes(32)])


def test_rbcl_library_file_is_not_left_in_tmp() -> None:
    import sys

    path = getattr(sys.modules["rbcl._sodium"], "lib_path", None)
    assert path is not None and not Path(path).exists()
