"""The source engines (``connectif_sync.sources``): PyMySQL's "preferred" TLS made without loading the CA bundle
still encrypts where the server offers TLS and falls back to plain TCP where it does not; TLS options in a URL
keep PyMySQL's own verifying context. Against real MariaDB servers: the session's (no TLS) and one started here
with a self-signed certificate."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectif_sync.sources import source_engine
from localdb.mariadb import FAST_SETTINGS, LocalMariaDB, start

pytestmark = pytest.mark.mysql


def _self_signed(folder: Path, stem: str) -> Path:
    """A certificate for 127.0.0.1 and its key (``stem.pem``, ``stem.key``), readable by the server's user."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = folder / f"{stem}.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{stem}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    for f in (pem, folder / f"{stem}.key"):
        f.chmod(0o644)
    return pem


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[LocalMariaDB, Path]]:
    """A MariaDB server that offers TLS with a self-signed certificate (returned with it)."""
    root = Path(tempfile.mkdtemp(prefix="connectif-mariadb-tls-"))
    root.chmod(0o755)
    cert = _self_signed(root, "server")
    settings = {**FAST_SETTINGS, "innodb_buffer_pool_size": "32M", "ssl-cert": str(cert),
                "ssl-key": str(root / "server.key")}  # fmt: skip
    server = start(root / "server", settings=settings)
    try:
        yield server, cert
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _cipher(url: str) -> tuple[str, ssl.SSLContext | None]:
    """The TLS cipher of a connection of the source engine of ``url`` ('' without TLS), and its context."""
    with source_engine(url).connect() as conn:
        cipher = conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Ssl_cipher'").one()[1]
        return str(cipher or ""), getattr(conn.connection.dbapi_connection, "ctx", None)


def test_preferred_tls_is_negotiated_without_the_ca_bundle(tls_server: tuple[LocalMariaDB, Path]) -> None:
    server, _ = tls_server
    cipher, ctx = _cipher(server.create_database("t_tls"))
    assert cipher  # the server offers TLS: the connection is encrypted, as PyMySQL's preferred mode does
    assert ctx is not None and ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.cert_store_stats()["x509_ca"] == 0  # no CA bundle loaded: that was 20-35 ms of every connection


def test_preferred_tls_falls_back_to_plain_tcp(mysql_database: str) -> None:
    cipher, _ = _cipher(mysql_database)  # the session's server has no TLS: connected all the same
    assert cipher == ""


def test_tls_options_in_the_url_keep_pymysql_verifying_context(tls_server: tuple[LocalMariaDB, Path]) -> None:
    server, cert = tls_server
    url = sa.make_url(server.create_database("t_verify"))
    verified = url.update_query_dict({"ssl_ca": str(cert)})  # TLS required, certificate and host name checked
    cipher, ctx = _cipher(verified.render_as_string(hide_password=False))
    assert cipher and ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    other = _self_signed(cert.parent, "other")  # a CA that did not sign the server's certificate: refused
    wrong = url.update_query_dict({"ssl_ca": str(other)})
    with pytest.raises(sa.exc.OperationalError):
        _cipher(wrong.render_as_string(hide_password=False))
