"""Privacy canary: publish known children, then search every byte written for their identities.

300 fictional children are exported by a school (CSV with NHS numbers, through the `safehub
publish` command in a subprocess) and by the police (JSON Lines without NHS numbers, with
typos, through the Python API with every logger at DEBUG), both deriving their match keys and
blocks through the OPRF key service (`safehub keyservice serve` as a child process over HTTPS,
a bearer secret per agency). Then every key, value and header of every topic the run wrote,
all captured output and log records (the key service client's HTTP logging included), the key
service's own log, and the vault file are searched for each identifier in the forms an agency
system might hold it. Zero hits are allowed (the vault may
hold only references, never identities). Neither agency's key service bearer secret may be
in any of those outputs either.

The same outputs, and the brokers' own logs, are also searched for every principal's Kafka
password (every `*.password` file in the secrets folder): none may be anywhere but its file.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest

from safehub.bus import make_admin, make_producer
from safehub.deploy.kafka.launcher import free_port
from safehub.deploy.registry import Kind, Party, Registry, Service, validate
from safehub.producers.exports import example_mapping, load_mapping, read_export
from safehub.producers.keying import Keying
from safehub.producers.normalisation import fold
from safehub.producers.publisher import DeliveryReport, Publisher
from safehub.producers.records import ChildIdentity
from safehub.producers.vault import Vault
from safehub.samples.children import children
from safehub.schemas.vocabulary import Sector
from safehub.services.keyservice import local
from tests.conftest import SERVICES, Namespace
from tests.fixtures.privacy import check_no_password_anywhere
from tests.fixtures.topics import read_all

pytestmark = pytest.mark.integration

N_CHILDREN = 300
_HEX_RUN = re.compile(rb"[0-9a-f]{32,}")


def identifier_forms(kid: ChildIdentity) -> set[str]:
    born = date.fromisoformat(kid.date_of_birth)
    forms: set[str] = set()
    for name in (kid.first_name, kid.surname):
        for variant in (name, fold(name), name.upper(), name.lower(), name.title()):
            if len(variant) >= 4:  # shorter fragments match ordinary words, not people
                forms.add(variant)
    forms |= {
        born.isoformat(), born.strftime("%d/%m/%Y"), born.strftime("%d-%m-%Y"),
        born.strftime("%d.%m.%Y"), born.strftime("%Y%m%d"), born.strftime("%d%m%Y"),
        born.strftime("%m/%d/%Y"), f"{born.day}/{born.month}/{born.year}",
        born.strftime("%d %b %Y"), born.strftime("%d %B %Y"),
    }
    assert kid.nhs_number and kid.postcode
    nhs = kid.nhs_number
    forms |= {nhs, f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}", f"{nhs[:3]}-{nhs[3:6]}-{nhs[6:]}"}
    compact = kid.postcode.replace(" ", "")
    forms |= {kid.postcode, compact, kid.postcode.lower(), compact.lower()}
    return forms


def hits(haystack: bytes, forms: set[str]) -> list[str]:
    # Runs of 32 or more hex digits (ids, handles, hashes) are random or keyed, so a form found
    # inside one, or starting in one, is a coincidence, and they are taken out before any form
    # is searched. Not only dates: Bradford postcodes start with hex digits ("bd77bd" is all
    # hex), and a vault row stores a handle right before "police-canary", so a handle ending
    # in "bd76b" once spelt the postcode "bd76bp" and failed CI.
    scrubbed = _HEX_RUN.sub(b"-", haystack)
    return [form for form in forms if form.encode("utf-8") in scrubbed]


def test_a_form_spelt_by_a_random_id_is_no_hit_and_a_real_one_is() -> None:
    handle = b"0123456789abcdef0123456789abd76b"
    assert hits(handle + b"police-canary", {"bd76bp"}) == []
    inside = b"id " + handle + b"bd77bd end"
    assert b"bd77bd" in inside and hits(inside, {"bd77bd"}) == []
    assert hits(handle + b" BD7 6BP;bd76bp", {"BD7 6BP", "bd76bp"}) != []
    assert sorted(hits(b"x,bd76bp," + handle, {"bd76bp", "BD7 6BP"})) == ["bd76bp"]


def test_no_identifier_leaves_the_agency(
    secure_namespace: Callable[..., Namespace], tmp_path: Path,
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    parties = (Party("school-canary", Kind.AGENCY, Sector.EDUCATION),
               Party("police-canary", Kind.AGENCY, Sector.POLICE),
               *SERVICES, Party(Service.KEYSERVICE, Kind.SERVICE))
    ns = secure_namespace(registry=Registry(validate(parties, "canary")), partitions=3)
    prefix = ns.prefix
    kids = children(N_CHILDREN, seed=2024)
    assert len({k.nhs_number for k in kids}) == N_CHILDREN

    # School: CSV in the education mapping, NHS numbers with spaces, plus two unusable lines
    # whose errors must not quote the identities in them either.
    school_csv = tmp_path / "school.csv"
    with school_csv.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["ConcernId", "UPN", "LegalForename", "LegalSurname", "DateOfBirth",
                      "NHSNumber", "Postcode", "HomeLA", "ConcernDate", "LoggedAt", "Category"])
        for i, kid in enumerate(kids):
            nhs = kid.nhs_number or ""
            out.writerow([f"C-{i:05d}", f"UPN{i:09d}", kid.first_name, kid.surname,
                          kid.date_of_birth, f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}", kid.postcode,
                          "E08000035", "2024-03-04T09:00", "2024-03-04T10:00",
                          ["ABS", "GIFTS", "ONLINE", "MH"][i % 4]])
        good = kids[0].nhs_number or ""
        bad_nhs = good[:9] + str((int(good[9]) + 1) % 10)
        out.writerow(["C-BAD1", "UPNX", kids[0].first_name, kids[0].surname,
                      kids[0].date_of_birth, bad_nhs, kids[0].postcode, "E08000035",
                      "2024-03-04T09:00", "", "ABS"])
        out.writerow(["C-BAD2", "UPNY", kids[1].first_name, kids[1].surname,
                      date.fromisoformat(kids[1].date_of_birth).strftime("%d/%m/%Y"),
                      "", kids[1].postcode, "E08000035", "2024-03-04T09:00", "", "ABS"])
    # Both agencies derive their match keys and blocks through the key service.
    keys = local.prepare(tmp_path / "keyservice", ["school-canary", "police-canary"],
                         free_port())
    keys_log = tmp_path / "keyservice.log"
    with local.serving(keys, {**os.environ, **ns.env(Service.KEYSERVICE)}, keys_log):
        # The school publishes as itself: --agency names the principal.
        env = dict(os.environ, **ns.env("school-canary"),
                   SAFEHUB_KEYSERVICE_URL=keys.url,
                   SAFEHUB_KEYSERVICE_SECRET_FILE=str(keys.secret_file("school-canary")),
                   SAFEHUB_KEYSERVICE_CA_FILE=str(keys.ca_file),
                   SAFEHUB_VAULT_URL=f"sqlite:///{tmp_path / 'school-vault.db'}")
        del env["SAFEHUB_KAFKA_PRINCIPAL"], env["SAFEHUB_KAFKA_PASSWORD_FILE"]
        done = subprocess.run(
            [sys.executable, "-m", "safehub.cli", "-v", "publish", "--agency", "school-canary",
             "--from", str(school_csv), "--sector", "education"],
            env=env, capture_output=True, timeout=300, check=False,
        )
        assert done.returncode == 1, done.stderr.decode()[-2000:]  # the two bad lines
        assert b"published 300 event(s)" in done.stdout and b"2 line(s) failed" in done.stdout
        assert b"line 302: nhs_number: mod-11" in done.stderr
        assert b"line 303: date_of_birth: not a date in format ISO" in done.stderr

        # Police: JSON Lines, no NHS number, first names misspelt, through the Python API with
        # every logger (kafka-python's too) at DEBUG.
        police_jsonl = tmp_path / "police.jsonl"
        with police_jsonl.open("w", encoding="utf-8") as handle:
            for i, kid in enumerate(kids):
                handle.write(json.dumps({
                    "IncidentRef": f"WY-{i:06d}", "NominalId": f"N-{i}",
                    "Forename": kid.first_name[:-1] + kid.first_name[-1] * 2,
                    "Surname": kid.surname.upper(),
                    "DOB": date.fromisoformat(kid.date_of_birth).strftime("%d/%m/%Y"),
                    "HomePostcode": (kid.postcode or "").lower(), "ResponsibleLA": "E08000035",
                    "IncidentDateTime": "02/03/2024 23:10", "ConcernCode": "CAR",
                }, ensure_ascii=False) + "\n")
        caplog.set_level(logging.DEBUG)
        for noisy in ("kafka", "sqlalchemy"):
            logging.getLogger(noisy).setLevel(logging.DEBUG)
        police_vault = Vault.open(f"sqlite:///{tmp_path / 'police-vault.db'}")
        producer = make_producer(ns.connection("police-canary"), "canary-police")
        try:
            with keys.client("police-canary") as client:
                publisher = Publisher(producer, police_vault, Keying(client, epoch=1),
                                      "police-canary", Sector.POLICE, prefix)
                mapping = load_mapping(example_mapping(Sector.POLICE))
                parsed = [r for _, r in read_export(police_jsonl, mapping)]
                outcomes = publisher.publish_many(parsed)  # type: ignore[arg-type]
        finally:
            producer.close()
            police_vault.close()
        # Both derived through the service, as its operator sees it.
        used = {row["agency"]: row["day"]["used"] for row in keys.usage()["agencies"]}
        assert used["school-canary"] > 0 and used["police-canary"] > 0, used
    assert all(isinstance(o, DeliveryReport) for o in outcomes) and len(outcomes) == N_CHILDREN

    # Everything the run wrote to Kafka: every topic under this test's prefix (read as admin).
    admin = make_admin(ns.kafka)
    try:
        topics = sorted(t for t in admin.list_topics() if t.startswith(prefix))
    finally:
        admin.close()
    assert {prefix + "ingress.school-canary", prefix + "ingress.police-canary"} <= set(topics)
    written = bytearray()
    count = 0
    for topic in topics:
        for record in read_all(ns.kafka, topic):
            count += 1
            written += (record.key or b"") + b"\0" + (record.value or b"") + b"\0"
            for name, value in record.headers or []:
                written += name.encode() + b"\0" + value + b"\0"
    assert count == 2 * N_CHILDREN
    captured = capsys.readouterr()
    logs = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    )
    assert len(caplog.records) > 0
    outputs = {
        "topics": bytes(written),
        "cli output": done.stdout + done.stderr,
        "logs": (logs + captured.out + captured.err).encode(),
        "key service log": keys_log.read_bytes(),
    }
    # The service started and was used (`used` above). The client's calls run in its worker
    # processes (services/keyservice/workers.py), which log nothing of their own: a failure
    # goes back to this process as a KeyServiceError, whose text is scanned with the logs.
    assert b"key service on https://" in keys_log.read_bytes()
    for agency in ("school-canary", "police-canary"):
        bearer = keys.secret_file(agency).read_text().strip().encode()
        assert [where for where, data in outputs.items() if bearer in data] == [], agency
    # Positive control: the same search does find the identities where they really are.
    control = hits(school_csv.read_bytes() + police_jsonl.read_bytes(), identifier_forms(kids[7]))
    probe = kids[7]
    assert {probe.date_of_birth, probe.surname.upper(), (probe.postcode or "").lower()} \
        <= set(control)
    leaks: dict[str, list[str]] = {}
    for kid in kids:
        forms = identifier_forms(kid)
        for where, data in outputs.items():
            found = hits(data, forms)
            if found:
                leaks.setdefault(where, []).extend(found)
    assert leaks == {}, f"identifiers found: { {k: len(v) for k, v in leaks.items()} }"
    # Nor any principal's password (kafka-python logged at DEBUG throughout).
    check_no_password_anywhere(ns.kafka, outputs)

    # The agencies' own references stay in their vaults, and the vaults hold no identity.
    for ref in (b"C-00042", b"UPN000000042", b"WY-000042", b"N-42"):
        assert ref not in written
    for vault_file in (tmp_path / "school-vault.db", tmp_path / "police-vault.db"):
        data = b"".join(p.read_bytes() for p in tmp_path.glob(vault_file.name + "*"))
        assert data, vault_file
        for kid in kids:
            assert hits(data, identifier_forms(kid)) == []
