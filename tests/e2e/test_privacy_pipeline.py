"""Privacy canary over the whole pipeline: no identifier of a simulated child reaches the hub.

Runs the real `safehub demo --exit-when-done` (every service as a process, the agencies' real
publishers) on the session's broker under a unique topic prefix, with `--duration` as a hard
bound. The population is rebuilt here from the same seed (the simulator is deterministic), which
gives every identifier the simulator handed out: each child's true first name, surname, full
name, date of birth, NHS number and postcode, every agency's own copy of them (misspelt,
outdated, incomplete), and the agencies' record and person references. Each is searched in the
forms systems write it (tests/e2e/identifiers.py: raw, upper, lower, normalised; dates as ISO,
dd/mm/yyyy, ddmmyyyy, yyyymmdd and more; NHS numbers with and without spaces; postcodes with
and without the space) in:

1. every key, value and header of every partition of every topic the demo wrote (all topics
   under its prefix, the correlator's changelog included), as raw bytes and as decoded fields;
2. every hub-side file in the demo folder (the inbox, router and audit SQLite files with their
   WAL and shared-memory files, logs, users file, summary): raw bytes, and every cell of every
   table through sqlite3 (on a copy, so reading does not checkpoint the originals);
3. every service log and the demo's own stdout and stderr (the demo runs with -v, so the
   agencies' publishers in it log at DEBUG).

Re-identification is in the loop: the demo runs the agencies' desk (`safehub reid serve` for
every agency, with its vault and its own records) and `--reid-drill`, in which hub users ask
every contributing agency of several alerts who the child is, officers approve about half and
decline the rest, and the hub opens every approved identity, all through the pages' APIs. So the
requests and sealed answers are on the `reid-requests.*` and `reid-responses.*` topics, the
answers sealed in the inbox database, every step in the audit log and the service logs, and the
identities opened are the agencies' own copies, which are in the search set. The drill is shown
to have happened (its audit entries counted, one sealed answer per approval in the inbox); the
positive control opens the approved answers from the topic with the hub's private key and finds
the identity in the plaintext. The agencies' own records (`agencies/<agency>/`, agency side like
the vaults) are not searched as hub files; the search finds their identities there (control),
while the desk's request store beside them is searched with the hub's databases.

All of these, the agencies' vaults and the brokers' own logs are also searched for every
principal's Kafka password (every `*.password` file of the secrets folder: the admin's, and
those the demo made for every party of the registry), with the secrets folder itself as the
positive control.

Zero hits are allowed. Short single names (under five characters) are searched only as whole
words in decoded text, never in raw bytes; identifiers.py explains why. Positive controls keep
the test from passing vacuously: the same search finds every identifier in the simulator's
export files and every reference in the agencies' vaults (the one place references may be),
and the references found there are exactly the ones this rebuilt population published; a
synthetic dead letter shows the topic reading finds identifiers in headers and nested bytes.
The demo's topics are deleted afterwards (the broker is shared).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from safehub.bus import make_consumer
from safehub.connection import KafkaConnection
from safehub.deploy.kafka.launcher import free_port
from safehub.deploy.topics import delete_topics_with_prefix
from safehub.producers.simulation.command import write_population
from safehub.producers.simulation.trajectories import Population, simulate
from safehub.schemas import codec
from safehub.schemas.records import AuditEntry, DeadLetter, ReidResponse
from safehub.schemas.vocabulary import AuditAction, ReidOutcome
from safehub.services.demo_agencies import AGENCIES, hub_key_folders
from safehub.services.reid.sealing import binding, load_private_key, open_sealed
from tests.e2e.identifiers import (
    DATE_OF_BIRTH,
    FIRST_NAME,
    FULL_NAME,
    MIN_RAW_NAME,
    NHS_NUMBER,
    PERSON_REF,
    POSTCODE,
    RECORD_REF,
    SINGLE_NAMES,
    SURNAME,
    Hit,
    Identifier,
    Search,
    as_text,
    bytes_strings,
    forms,
    identity_identifiers,
    population_identifiers,
    record_identifiers,
    record_strings,
)
from tests.fixtures.demo import run_demo
from tests.fixtures.privacy import check_no_password_anywhere

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHILDREN, SEED, MONTHS, AUTHORITIES = 600, 4242, 12, 5
DRILL_ALERTS = 6  # alerts whose re-identification the demo works through
DURATION_S = 240  # the demo stops everything after this, settled or not
Leaks = list[str]


def _run_demo(folder: Path, env: dict[str, str], bootstrap: str) -> tuple[int, bytes, bytes]:
    # -v: the demo process (the agencies' publishers) logs at DEBUG, more to search.
    return run_demo(
        ["--folder", str(folder), "--children", str(CHILDREN), "--seed", str(SEED),
         "--months", str(MONTHS), "--authorities", str(AUTHORITIES), "--bootstrap", bootstrap,
         "--exit-when-done", "--duration", str(DURATION_S), "--web-port", str(free_port()),
         "--reid-port", str(free_port()), "--reid-drill", str(DRILL_ALERTS)],
        env, DURATION_S + 60, verbose=True, stderr_apart=True)


def _topic_records(kafka: KafkaConnection, prefix: str, timeout_s: float = 120.0
                   ) -> dict[str, list[ConsumerRecord]]:
    """Every record of every partition of every topic under `prefix`, from the beginning
    (read as admin: no other principal may read them all)."""
    # read_uncommitted: records of aborted transactions are bytes on the broker too.
    consumer = make_consumer(kafka, None, isolation_level="read_uncommitted",
                             client_id="privacy-canary")
    try:
        topics = sorted(t for t in consumer.topics() if t.startswith(prefix))
        parts = [TopicPartition(t, p) for t in topics
                 for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        records: dict[str, list[ConsumerRecord]] = {t: [] for t in topics}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            assert time.monotonic() < deadline, "timed out reading the demo's topics"
            for tp, batch in consumer.poll(timeout_ms=500).items():
                records[tp.topic].extend(batch)
        return records
    finally:
        consumer.close(autocommit=False)


def _describe(search: Search, where: str, hits: list[Hit]) -> Leaks:
    return [f"{where}: {h.form!r} ({', '.join(sorted({o.kind for o in search.owner[h.form]}))}) "
            f"at {h.at} in {h.context}" for h in hits]


def _search_bytes(search: Search, where: str, data: bytes) -> Leaks:
    """Raw bytes, and their text if they are printable UTF-8 or a contract record."""
    leaks = _describe(search, where, search.in_bytes(data))
    text = "\n".join(bytes_strings(data))
    return leaks + _describe(search, where + " (decoded)", search.in_text(text))


def _search_topics(search: Search, records: dict[str, list[ConsumerRecord]]) -> Leaks:
    leaks: Leaks = []
    for topic, recs in records.items():
        for r in recs:
            where = f"topic {topic} partition {r.partition} offset {r.offset}"
            leaks += _search_bytes(search, where + " key", r.key or b"")
            leaks += _search_bytes(search, where + " value", r.value or b"")
            for name, value in r.headers or []:
                leaks += _search_text(search, where + " header name", name)
                leaks += _search_bytes(search, f"{where} header {name}", value or b"")
    return leaks


def _search_text(search: Search, where: str, text: str) -> Leaks:
    return _describe(search, where, search.in_text(text))


def _sqlite_cells(path: Path, scratch: Path) -> Iterator[tuple[str, object]]:
    """(table, cell) for every cell of every table, sqlite_master included, read from a copy.

    A copy with its -wal and -shm: the last connection to close checkpoints the WAL into the
    database file, which would change the bytes this test searches raw.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    for part in path.parent.glob(path.name + "*"):
        shutil.copy2(part, scratch / part.name)
    db = sqlite3.connect(scratch / path.name)
    try:
        tables = [name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in ["sqlite_master", *tables]:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for cell in row:
                    yield table, cell
    finally:
        db.close()


def _search_database(search: Search, path: Path, scratch: Path
                     ) -> tuple[Leaks, set[Identifier], int]:
    """(hits described, identifiers hit, cells read) over every cell, as sqlite3 gives it."""
    leaks: Leaks = []
    found: set[Identifier] = set()
    texts: dict[str, list[str]] = {}
    cells = 0
    for table, cell in _sqlite_cells(path, scratch):
        cells += 1
        where = f"{path.name} table {table}"
        if isinstance(cell, bytes):
            hits = search.in_bytes(cell)
            found |= search.identifiers(hits)
            leaks += _describe(search, where + " (blob)", hits)
        texts.setdefault(where, []).extend(record_strings(cell))
    for where, strings in texts.items():
        hits = search.in_text("\n".join(strings))
        found |= search.identifiers(hits)
        leaks += _describe(search, where, hits)
    return leaks, found, cells


def _exports_control(search: Search, pop: Population, identifiers: set[Identifier],
                     out: Path) -> None:
    """The search finds the identities where they legitimately are: the agencies' exports."""
    write_population(pop, out)
    raw_found: set[Identifier] = set()
    text_found: set[Identifier] = set()
    for path in sorted((out / "exports").glob("*.jsonl")):
        data = path.read_bytes()
        raw_found |= search.identifiers(search.in_bytes(data))
        text_found |= search.identifiers(search.in_text(data.decode("utf-8")))
    # Exports keep first name and surname apart, so no full name is written there; children
    # no agency recorded are in no export.
    expected = {i for i in record_identifiers(pop) if i.kind != FULL_NAME}
    assert expected - text_found == set()
    short = {i for i in expected if i.kind in SINGLE_NAMES and len(i.value) < MIN_RAW_NAME}
    assert expected - short - raw_found == set()
    # Every form of every kind is found, in text and (long enough) in bytes.
    for kind in sorted({i.kind for i in identifiers}):
        probe = next(i for i in sorted(identifiers) if i.kind == kind)
        written = " | ".join(sorted(forms(probe)))
        assert {h.form for h in search.in_text(written)} >= forms(probe), probe
        raw = {f for f in forms(probe) if kind not in SINGLE_NAMES or len(f) >= MIN_RAW_NAME}
        assert {h.form for h in search.in_bytes(written.encode())} >= raw, probe


def _topic_control(search: Search, pop: Population) -> None:
    """A record carrying identifiers in a header and inside a dead letter's raw bytes is caught."""
    ident = next(r.identity for r in pop.records if len(r.identity.first_name) < MIN_RAW_NAME)
    ref = pop.records[0].record_ref
    raw = json.dumps({"forename": ident.first_name, "dob": f"{ident.date_of_birth:%d/%m/%Y}"})
    value = codec.encode(DeadLetter("ingress.x", 0, 1, "ValidationError", "bad", 1, raw.encode()))
    record = ConsumerRecord(
        topic="control", partition=0, leader_epoch=0, offset=1, timestamp=0, timestamp_type=0,
        key=b"\x00\x00\x01\x02", value=value, headers=[("ref", ref.encode())], checksum=None,
        serialized_key_size=4, serialized_value_size=len(value), serialized_header_size=3)
    found = "\n".join(_search_topics(search, {"control": [record]}))
    # The short first name only in the decoded dead letter; date and reference in both forms.
    assert f"value (decoded): {ident.first_name!r}" in found, found
    assert f"value: {ident.first_name!r}" not in found, found
    assert f"value: '{ident.date_of_birth:%d/%m/%Y}'" in found, found
    assert f"header ref: {ref!r}" in found, found


def _vaults_control(search: Search, pop: Population, vaults: Path, scratch: Path) -> int:
    """Each agency's vault holds exactly the references it published, and no identity."""
    files = sorted(vaults.glob("*.sqlite"))
    assert len(files) == len({r.agency_id for r in pop.records})
    for vault in files:
        agency = vault.stem
        raw = b"".join(p.read_bytes() for p in sorted(vaults.glob(vault.name + "*")))
        in_raw = search.identifiers(search.in_bytes(raw))
        _leaks, in_cells, _cells = _search_database(search, vault, scratch / agency)
        expected = {Identifier(RECORD_REF, r.record_ref) for r in pop.records
                    if r.agency_id == agency}
        expected |= {Identifier(PERSON_REF, r.person_ref) for r in pop.records
                     if r.agency_id == agency}
        # References only (no identity), and exactly this agency's: in the file's bytes and
        # in its cells as sqlite3 reads them.
        assert in_raw == expected, (agency, sorted(in_raw ^ expected)[:10])
        assert in_cells == expected, (agency, sorted(in_cells ^ expected)[:10])
    return len(files)


def _agency_side(folder: Path, path: Path) -> bool:
    """The agencies' vaults and own records: theirs, not the hub's (the desk's request store in
    agencies/ holds no identity, and is searched with the hub's databases)."""
    parts = path.relative_to(folder).parts
    return parts[0] == "vaults" or (parts[0] == AGENCIES and len(parts) > 2)


def _agency_records_control(search: Search, pop: Population, folder: Path) -> int:
    """Each agency's own records, as the demo gave them to its desk, hold its identities."""
    files = sorted((folder / AGENCIES).glob("*/records.jsonl"))
    assert {p.parent.name for p in files} == {r.agency_id for r in pop.records}
    for path in files:
        assert path.stat().st_mode & 0o077 == 0, path
        agency = path.parent.name
        found = search.identifiers(search.in_text(path.read_text("utf-8")))
        expected = {i for r in pop.records if r.agency_id == agency
                    for i in identity_identifiers(r.identity) if i.kind != FULL_NAME}
        assert expected <= found, (agency, sorted(expected - found)[:5])
    return len(files)


def _drill_happened(summary: dict[str, Any], records: dict[str, list[ConsumerRecord]], prefix: str,
                    inbox: Path, scratch: Path) -> dict[str, int]:
    """The drill's steps are in the audit log, and its approvals sealed in the inbox."""
    drill = summary["reid_drill"]
    assert "error" not in drill, drill
    assert drill["alerts"] == DRILL_ALERTS and drill["approved"] > 0 and drill["declined"] > 0, \
        drill
    assert drill["opened"] == drill["approved"], drill
    # Distinct entries: a redelivered request is audited again under the same entry id (ids
    # derive from the cause), a known duplicate, not another step.
    entries = {e.entry_id: e.action for e in (codec.decode(r.value, AuditEntry)
                                             for r in records[f"{prefix}audit"] if r.value)}
    actions = Counter(entries.values())
    counted = {a.value: actions[a] for a in AuditAction if a.value.startswith("REIDENTIFICATION")}
    assert counted["REIDENTIFICATION_REQUESTED"] == drill["requests"], counted
    assert counted["REIDENTIFICATION_RECEIVED"] == drill["requests"], counted
    assert counted["REIDENTIFICATION_APPROVED"] == drill["approved"], counted
    assert counted["REIDENTIFICATION_DECLINED"] == drill["declined"], counted
    assert counted["REIDENTIFICATION_DELIVERED"] == drill["requests"], counted
    assert counted["REIDENTIFICATION_VIEWED"] == drill["opened"], counted
    assert counted["REIDENTIFICATION_REJECTED"] == 0, counted
    scratch.mkdir(parents=True, exist_ok=True)
    for part in inbox.parent.glob(inbox.name + "*"):
        shutil.copy2(part, scratch / part.name)
    db = sqlite3.connect(scratch / inbox.name)
    try:
        rows = db.execute("SELECT status, sealed_identity IS NOT NULL, length(sealed_identity) "
                          "FROM inbox_reid_request").fetchall()
    finally:
        db.close()
    assert len(rows) == drill["requests"], rows
    sealed = [n for status, has, n in rows if status == "APPROVED" and has]
    assert len(sealed) == drill["approved"] and all(n > 100 for n in sealed), rows
    assert all(not has for status, has, _n in rows if status != "APPROVED"), rows
    return counted


def _answers_control(search: Search, identifiers: set[Identifier], pop: Population,
                     records: dict[str, list[ConsumerRecord]], prefix: str, folder: Path) -> int:
    """The approved answers on `reid-responses.<hub>` open with that hub's private key (bound to
    their requests), and the search finds the identity in the plaintext: were an answer ever in
    the clear anywhere searched, it would be seen."""
    private, _public = hub_key_folders(folder)
    refs = {(r.agency_id, r.record_ref) for r in pop.records}
    opened = 0
    for topic, recs in records.items():
        if not topic.startswith(f"{prefix}reid-responses."):
            continue
        for r in recs:
            response = codec.decode(r.value, ReidResponse)
            if response.outcome is not ReidOutcome.APPROVED:
                continue
            assert response.sealed_identity is not None
            identity = open_sealed(
                response.sealed_identity, load_private_key(private, response.hub_id),
                binding(response.request_id, response.alert_id, response.hub_id,
                        response.agency_id))
            # The child as the agency's own records hold them, every part in the search set.
            assert {(response.agency_id, ref) for ref in identity.record_refs} <= refs
            shared = {Identifier(FIRST_NAME, identity.first_name),
                      Identifier(SURNAME, identity.surname),
                      Identifier(DATE_OF_BIRTH, identity.date_of_birth),
                      *(Identifier(RECORD_REF, ref) for ref in identity.record_refs)}
            if identity.nhs_number:
                shared.add(Identifier(NHS_NUMBER, identity.nhs_number))
            if identity.postcode:
                shared.add(Identifier(POSTCODE, identity.postcode))
            assert shared <= identifiers
            plaintext = identity.to_bytes()
            assert search.identifiers(search.in_text(plaintext.decode("utf-8"))) >= shared
            long_enough = {i for i in shared
                           if i.kind not in SINGLE_NAMES or len(i.value) >= MIN_RAW_NAME}
            assert search.identifiers(search.in_bytes(plaintext)) >= long_enough
            # ... and not in the sealed bytes the canary searched on the topic.
            assert not search.in_bytes(response.sealed_identity)
            opened += 1
    assert opened > 0
    return opened


def test_no_identifier_reaches_any_topic_hub_database_or_log(
    kafka: KafkaConnection, tmp_path: Path,
) -> None:
    # A whole uuid: the search blanks hex runs that long as random, so the prefix, which is in
    # every topic name and dead letter's source header, cannot spell a short name by chance (a
    # 10-hex prefix once held "1aa.", and "aa" is one of the simulated first names' forms).
    prefix = "t" + uuid.uuid4().hex + "."
    try:
        _canary(kafka, prefix, tmp_path)
    finally:
        delete_topics_with_prefix(kafka, prefix)


def _canary(kafka: KafkaConnection, prefix: str, tmp_path: Path) -> None:
    started = time.monotonic()
    folder = tmp_path / "demo"
    # The demo takes the admin principal from the environment and starts every service as
    # its own principal, with password files in the same secrets folder.
    env = {**os.environ, **kafka.env(), "SAFEHUB_TOPIC_PREFIX": prefix,
           "SAFEHUB_STATE": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1"}
    code, out, err = _run_demo(folder, env, kafka.bootstrap)
    assert code == 0, err[-3000:]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["settled"], summary
    # Not vacuous: events went all the way to the hubs' inboxes.
    assert summary["published"] > 300 and summary["inbox_rows"] > 0, summary
    demo_s = time.monotonic() - started

    pop = simulate(SEED, children=CHILDREN, months=MONTHS, authorities=AUTHORITIES)
    identifiers = population_identifiers(pop)
    search = Search(identifiers)
    _exports_control(search, pop, identifiers, tmp_path / "sim")
    _topic_control(search, pop)
    vaults = _vaults_control(search, pop, folder / "vaults", tmp_path / "scratch" / "vaults")
    agency_files = _agency_records_control(search, pop, folder)

    leaks: Leaks = []
    records = _topic_records(kafka, prefix)
    per_topic = Counter({t[len(prefix):]: len(r) for t, r in records.items()})
    assert sum(n for t, n in per_topic.items() if t.startswith("ingress.")) \
        == summary["published"]
    for bare in ("correlated", "audit"):
        assert per_topic[bare] > 0, per_topic
    assert any(t.startswith("alerts.") and n for t, n in per_topic.items()), per_topic
    assert any(t.endswith("-changelog") and n for t, n in per_topic.items()), per_topic
    assert any(t.startswith("reid-requests.") and n for t, n in per_topic.items()), per_topic
    assert any(t.startswith("reid-responses.") and n for t, n in per_topic.items()), per_topic
    leaks += _search_topics(search, records)
    audited = _drill_happened(summary, records, prefix, folder / "inbox.sqlite",
                              tmp_path / "scratch" / "drill")
    answers = _answers_control(search, identifiers, pop, records, prefix, folder)

    hub_files = sorted(p for p in folder.rglob("*")
                       if p.is_file() and not _agency_side(folder, p))
    databases = [p for p in hub_files if p.suffix == ".sqlite"]
    assert {p.stem for p in databases} >= {"inbox", "router", "audit", "reid"}, databases
    logs = [p for p in hub_files if p.suffix == ".log"]
    assert {p.stem for p in logs} >= {"correlator", "router", "inbox", "audit-sink", "web",
                                      "reid"}
    for path in hub_files:
        data = path.read_bytes()
        where = str(path.relative_to(folder))
        leaks += _describe(search, where, search.in_bytes(data))
        text = as_text(data)
        if text is not None:
            leaks += _search_text(search, where + " (text)", text)
    cells = 0
    for db in databases:
        found, _identifiers, n = _search_database(search, db,
                                                  tmp_path / "scratch" / "hub" / db.stem)
        leaks += found
        cells += n
    assert cells > 1000
    for name, stream in (("demo stdout", out), ("demo stderr", err)):
        leaks += _describe(search, name, search.in_bytes(stream))
        leaks += _search_text(search, name + " (text)", stream.decode("utf-8", "replace"))

    searched = (sum(len(r.key or b"") + len(r.value or b"") for rs in records.values()
                    for r in rs), sum(p.stat().st_size for p in hub_files))
    print(f"\nprivacy canary: {len(identifiers)} identifiers in {search.counts['forms']} forms "
          f"({dict(Counter(i.kind for i in identifiers))}); searched {sum(per_topic.values())} "
          f"records on {len(records)} topics ({searched[0]} bytes), {len(hub_files)} hub files "
          f"({searched[1]} bytes, {cells} database cells), {len(out) + len(err)} bytes of demo "
          f"output; {vaults} vaults and {agency_files} agencies' records as positive control; "
          f"drill {summary['reid_drill']} with audit {audited}, {answers} answers opened from "
          f"the topics as positive control; demo {demo_s:.0f} s, "
          f"all {time.monotonic() - started:.0f} s")
    assert leaks == [], f"{len(leaks)} identifier hits, first ones:\n" + "\n".join(leaks[:40])

    # No principal's password in any of it, nor in the vaults or the brokers' logs.
    outputs = {"demo stdout": out, "demo stderr": err}
    for topic, recs in records.items():
        outputs[f"topic {topic}"] = b"\0".join(
            b"\0".join([r.key or b"", r.value or b"", *(n.encode() + b"=" + v
                                                       for n, v in r.headers or [])])
            for r in recs)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        outputs[str(path.relative_to(folder))] = path.read_bytes()
    assert any(name.startswith("logs") or name.endswith(".log") for name in outputs), outputs.keys()
    check_no_password_anywhere(kafka, outputs)
