"""The local key service's folder (services/keyservice/local.py): made once, kept across runs."""

from __future__ import annotations

import stat
from pathlib import Path

from safehub.services.keyservice import local
from safehub.services.keyservice.keys import key_path, load_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_prepare_makes_keys_secrets_and_tls_once(tmp_path: Path) -> None:
    folder = tmp_path / "ks"
    first = local.prepare(folder, ["police-x", "health-y"], 18443)
    keys = {e: load_key(key_path(first.keys, e)) for e in (0, 1)}
    secrets = {a: first.secret_file(a).read_text() for a in ("police-x", "health-y")}
    for agency, text in secrets.items():
        assert (folder / "clients" / f"{agency}.secret").read_text() == text
        assert _mode(first.secret_file(agency)) == 0o600
    assert secrets["police-x"] != secrets["health-y"]
    assert _mode(first.operator_secret) == 0o600 and _mode(folder) == 0o700
    assert first.tls.complete() and first.url == "https://127.0.0.1:18443"

    # A second run (another port, one more agency) keeps every key and secret it finds.
    again = local.prepare(folder, ["police-x", "health-y", "school-z"], 18444)
    assert {e: load_key(key_path(again.keys, e)) for e in (0, 1)} == keys
    assert {a: again.secret_file(a).read_text() for a in secrets} == secrets
    assert again.secret_file("school-z").is_file()


def test_serve_arguments_name_the_folder_and_quotas(tmp_path: Path) -> None:
    service = local.prepare(tmp_path / "ks", ["police-x"], 18443, quota=(100, 1000))
    argv = service.argv()
    assert argv[:4] == ("keyservice", "serve", "--listen", "127.0.0.1:18443")
    flags = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert flags["--keys"] == str(service.keys)
    assert flags["--tls-cert"] == flags["--tls-key"] == str(service.tls.node_file)
    assert Path(flags["--quota-config"]).read_text() == (
        "[default]\nper_minute = 100\nper_day = 1000\n")
    assert "--quota-state" in flags
    assert "seed" not in repr(service) and repr(service) == "LocalKeyService(https://127.0.0.1:18443)"
