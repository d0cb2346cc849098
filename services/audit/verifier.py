"""`safehub audit verify` and `safehub audit witness`: the shells around verify.py and witness.py.

Read-only towards the hub: the store is opened read-only, the topic read without a consumer
group. The only files written are the auditor's own (report, pin) and the witness's own state.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

from safehub.errors import ConfigError
from safehub.services.audit.checkpoint import (
    CheckpointError,
    SignedCheckpoint,
    load_public_key,
    parse_note,
    verify,
)
from safehub.services.audit.command import AuditSettings
from safehub.services.audit.ledger import Ledger, open_engine
from safehub.services.audit.merkle import ProofError
from safehub.services.audit.proofs import LedgerProofs
from safehub.services.audit.verify import (
    Anchor,
    Finding,
    Report,
    TopicRecord,
    summary,
    verify_log,
)
from safehub.services.audit.witness import (
    CosignedCheckpoint,
    WitnessRefusal,
    check_extension,
    cosign,
    load_witness_key,
    parse_cosigned,
    save_state,
    verify_cosignature,
)

PINNED = "the pinned checkpoint"
WITNESSED = "the checkpoint the witness cosigned"


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc


def load_anchor(path: Path, what: str, key: VerifyKey,
                witness: VerifyKey | None = None) -> Anchor:
    """A pin or a witnessed checkpoint, checked against the hub's key (and the witness's);
    CheckpointError says which signature is missing."""
    cosigned = parse_cosigned(_read(path, what))
    verify(cosigned.checkpoint, key)
    if witness is not None:
        verify_cosignature(cosigned, witness)
    return Anchor(f"{what} in {path}", cosigned.checkpoint, witnessed=witness is not None)


def _topic(settings: AuditSettings) -> list[TopicRecord]:
    from safehub.services.audit.reading import read_all
    from safehub.services.audit.sink import CHECKPOINT_HEADER

    return [TopicRecord(r.offset, r.value or b"",
                        next((v.decode("utf-8", "replace") for k, v in r.headers
                              if k == CHECKPOINT_HEADER), None))
            for r in read_all(settings.kafka, [settings.audit_topic])]


def run_verify(args: argparse.Namespace, settings: AuditSettings) -> int:
    key = load_public_key(args.public_key)
    witness = load_public_key(args.witness_key) if args.witness_key else None
    anchors: list[Anchor] = []
    problems: list[Finding] = []
    if args.pin is not None:
        try:
            anchors.append(load_anchor(args.pin, PINNED, key))
        except CheckpointError as exc:
            problems.append(Finding("bad-pin", f"{PINNED} in {args.pin} does not verify with "
                                    f"the hub's key: {exc}"))
    if witness is not None:
        if not args.witnessed:
            problems.append(Finding("unwitnessed", "--witness-key needs --witnessed FILE (the "
                                    "witness's cosigned checkpoint)"))
        for path in args.witnessed:
            try:
                anchors.append(load_anchor(path, WITNESSED, key, witness))
            except CheckpointError as exc:
                problems.append(Finding("unwitnessed", f"{path}: {exc}"))
    engine = open_engine(settings.database_url, read_only=True)
    try:
        ledger = Ledger(engine)
        stored = list(ledger.entries())
        notes = [c.note for c in ledger.checkpoints()]
    finally:
        engine.dispose()
    topic = None if args.no_topic else _topic(settings)
    report = verify_log(stored, notes, topic, key, anchors=anchors,
                        require_witness=witness is not None, prior=problems)
    print(summary(report))
    if args.report:
        args.report.write_text(json.dumps(report.as_dict(), indent=2))
    if args.save_pin is not None:
        _save_pin(args.save_pin, report)
    return 0 if report.ok else 1


def _save_pin(path: Path, report: Report) -> None:
    if not report.ok or report.accepted is None:
        print(f"pin NOT saved to {path}: only a head that verified is worth pinning")
        return
    path.write_text(report.accepted.note())
    print(f"pinned the head of size {report.accepted.head.size} in {path}: keep it where the "
          "hub cannot change it, and pass it to later runs with --pin")


def run_witness(args: argparse.Namespace, settings: AuditSettings) -> int:
    key = load_public_key(args.public_key)
    witness_key = load_witness_key(args.key_file)
    engine = open_engine(settings.database_url, read_only=True)
    try:
        return _witness(args, Ledger(engine), key, witness_key)
    finally:
        engine.dispose()


def _witness(args: argparse.Namespace, ledger: Ledger, key: VerifyKey,
             witness_key: SigningKey) -> int:
    new = _checkpoint_to_cosign(args.checkpoint, ledger, key)
    previous: SignedCheckpoint | None = None
    if args.state.exists():
        try:
            state = parse_cosigned(_read(args.state, "the witness state"))
            verify(state.checkpoint, key)
            verify_cosignature(state, witness_key.verify_key)
        except CheckpointError as exc:
            # The witness's memory is the whole point: never start afresh silently.
            raise ConfigError(f"the witness state {args.state} does not verify ({exc}): "
                              "restore it from the witness's own backup") from exc
        previous = state.checkpoint
    proof = None
    if previous is not None and new.head.size > previous.head.size:
        try:
            proof = LedgerProofs.from_ledger(ledger).consistency(previous.head.size,
                                                                 new.head.size)
        except ProofError as exc:
            print(f"REFUSED: the log serves no consistency proof: {exc}")
            return 1
    try:
        checked = check_extension(previous, new, proof)
    except WitnessRefusal as exc:
        print(f"REFUSED: {exc}")
        return 1
    cosigned = CosignedCheckpoint(new, (cosign(new, witness_key, args.name, int(time.time())),))
    save_state(args.state, cosigned)
    if args.out is not None:
        args.out.write_text(cosigned.note())
    print(f"cosigned: {checked}")
    if args.out is None:
        print(cosigned.note(), end="")
    return 0


def _checkpoint_to_cosign(path: Path | None, ledger: Ledger, key: VerifyKey) -> SignedCheckpoint:
    """The given checkpoint, or the largest one the ledger holds, signed by the hub."""
    if path is not None:
        notes = [_read(path, "the checkpoint")]
    else:
        notes = [c.note for c in sorted(ledger.checkpoints(), key=lambda c: c.tree_size)]
    for note in reversed(notes):
        try:
            cp = parse_cosigned(note).checkpoint if path is not None else parse_note(note)
            verify(cp, key)
        except CheckpointError:
            continue
        return cp
    raise ConfigError("no checkpoint signed by the hub's key to cosign")
