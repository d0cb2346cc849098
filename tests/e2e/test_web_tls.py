"""The pages served over TLS (issue 21, "Web"): a real uvicorn server with a certificate, as
`safehub web --tls-cert/--tls-key` and `safehub reid serve --tls-cert/--tls-key` run it; the
session cookie it sets is Secure, and plain HTTP to its port gets no page.

HTTPS is the default: without certificate files both commands make a local certificate from
the project's own CA (and say which CA file to trust); plain HTTP needs the explicit
--plain-http-behind-proxy, and refuses to be combined with a certificate.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI

from safehub.deploy.kafka.launcher import free_port
from safehub.errors import ConfigError
from safehub.services.reid import command as reid_command
from safehub.services.web import command as web_command
from safehub.services.web.pages import PLAIN_HTTP_FLAG, Tls, server_config, serving_tls
from tests.fixtures.web import desk_app, hub_app


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for 127.0.0.1."""
    where = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "safehub test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (where / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (where / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return Tls(where / "cert.pem", where / "key.pem")


@contextmanager
def serving(app: FastAPI, tls: Tls) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, tls))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.parametrize("which", ["hub", "desk"])
def test_served_over_tls_with_a_secure_cookie(which: str, tls: Tls, tmp_path: Path) -> None:
    app = (hub_app(tmp_path, secure_cookies=True) if which == "hub"
           else desk_app(secure_cookies=True))
    ref = "sw-1" if which == "hub" else "off-1"
    trust = ssl.create_default_context(cafile=str(tls.cert))
    with serving(app, tls) as where:
        with httpx.Client(base_url=f"https://{where}", verify=trust) as client:
            signed = client.post("/login", data={"ref": ref, "password": "pw"})
            assert signed.status_code == 303
            cookie = signed.headers["set-cookie"].lower()
            assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
            # The signed-in landing page, over TLS, with the cookie the client kept.
            landing = client.get(signed.headers["location"])
            assert landing.status_code == 200 and "sign out" in landing.text.lower()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{where}/login", timeout=5)


def test_tls_needs_both_files_that_exist(tls: Tls, tmp_path: Path) -> None:
    assert Tls.from_options(None, None) is None
    assert Tls.from_options(str(tls.cert), str(tls.key)) == tls
    with pytest.raises(ConfigError):
        Tls.from_options(str(tls.cert), None)
    with pytest.raises(ConfigError):
        Tls.from_options(str(tmp_path / "missing.pem"), str(tls.key))
    # `safehub web` refuses a half TLS setting before it connects to anything.
    with pytest.raises(ConfigError):
        web_command.run(argparse.Namespace(hash_password=False, tls_cert=str(tls.cert),
                                           tls_key=None, plain_http=False))


@pytest.mark.parametrize("which", ["hub", "desk"])
def test_https_by_default_with_a_local_certificate(which: str, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    local = tmp_path / "web-tls"
    with caplog.at_level("WARNING"):
        tls = serving_tls(None, None, False, local)
    assert tls is not None
    ca = local / "ca.pem"
    assert str(ca) in caplog.text  # the operator is told which CA to trust
    assert (tls.key.stat().st_mode & 0o777) == 0o600
    # Made once and kept: a browser that trusts the CA keeps trusting it.
    again = serving_tls(None, None, False, local)
    assert again == tls and ca.read_bytes() == (local / "ca.pem").read_bytes()
    app = (hub_app(tmp_path, secure_cookies=True) if which == "hub"
           else desk_app(secure_cookies=True))
    ref = "sw-1" if which == "hub" else "off-1"
    # Verified against that CA alone, by address: the certificate is valid for 127.0.0.1.
    trust = ssl.create_default_context(cafile=str(ca))
    with serving(app, tls) as where:
        with httpx.Client(base_url=f"https://{where}", verify=trust) as client:
            signed = client.post("/login", data={"ref": ref, "password": "pw"})
            assert signed.status_code == 303 and "secure" in signed.headers["set-cookie"].lower()
        with pytest.raises(httpx.HTTPError):  # and not by a client that trusts only the usual
            httpx.get(f"https://{where}/login", timeout=5)


def test_plain_http_only_when_told_and_never_with_a_certificate(tls: Tls, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture
                                                                ) -> None:
    with caplog.at_level("WARNING"):
        assert serving_tls(None, None, True, tmp_path / "unused") is None
    assert PLAIN_HTTP_FLAG in caplog.text and not (tmp_path / "unused").exists()
    with pytest.raises(ConfigError):
        serving_tls(str(tls.cert), str(tls.key), True, tmp_path)
    assert serving_tls(str(tls.cert), str(tls.key), False, tmp_path / "unused") == tls
    # Both commands default to HTTPS and take the same explicit flag.
    for configure, argv in ((web_command.configure, []),
                            (reid_command.configure, ["serve"])):
        parser = argparse.ArgumentParser()
        configure(parser)
        assert parser.parse_args(argv).plain_http is False
        assert parser.parse_args([*argv, PLAIN_HTTP_FLAG]).plain_http is True
