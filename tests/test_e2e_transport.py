"""End to end, spec section 1: TLS 1.2+ listeners and TPDU listeners, same framing inside."""
import datetime
import socket
import ssl
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests import e2e
from tests.e2e import purchase

pytestmark = pytest.mark.e2e


def self_signed(tmp):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    keys = tmp / "keys"  # apart from the journal's directory (switch.preflight.keys_beside_journal)
    keys.mkdir(exist_ok=True)
    (keys / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (keys / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return keys / "cert.pem", keys / "key.pem"


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transport")
    cert, key = self_signed(tmp)
    tls_port, tpdu_port = e2e.free_port(), e2e.free_port()
    extra = f"""
[[listeners]]
host = "127.0.0.1"
port = {tls_port}
tls_cert_file = "{cert}"
tls_key_file = "{key}"

[[listeners]]
host = "127.0.0.1"
port = {tpdu_port}
tpdu = true
"""
    text, ports = e2e.card_config(tmp, extra=extra)
    ports.update(tls=tls_port, tpdu=tpdu_port)
    proc = e2e.SwitchProcess(tmp, text, ports).start()
    proc.cert = cert
    yield proc
    proc.stop()


def read_frame(sock):
    def exactly(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    return exactly(struct.unpack(">H", exactly(2))[0])


def test_tls_listener(switch):
    ctx = ssl.create_default_context(cafile=str(switch.cert))
    with socket.create_connection(("127.0.0.1", switch.ports["tls"]), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            body = e2e.encode(purchase(1500))
            s.sendall(struct.pack(">H", len(body)) + body)
            resp = e2e.decode(read_frame(s))
    assert resp["t"] == "0210" and resp["39"] == "00"


def test_tls_context_is_tls_1_2_or_later_and_names_bad_files(tmp_path):
    from switch.config import ConfigError, Listener
    from switch.io.server import tls_context

    cert, key = self_signed(tmp_path)
    ctx = tls_context(Listener(tls_cert_file=str(cert), tls_key_file=str(key)), "x.toml")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls_context(Listener(), "x.toml") is None
    with pytest.raises(ConfigError, match="x.toml: cannot load TLS certificate .*missing.pem"):
        tls_context(Listener(tls_cert_file=str(tmp_path / "missing.pem"), tls_key_file=str(key)), "x.toml")


def test_tpdu_is_answered_with_destination_and_source_swapped(switch):
    with socket.create_connection(("127.0.0.1", switch.ports["tpdu"]), timeout=10) as s:
        body = bytes.fromhex("6000120034") + e2e.encode(purchase(1600))
        s.sendall(struct.pack(">H", len(body)) + body)
        frame = read_frame(s)
    assert frame[:5] == bytes.fromhex("6000340012")
    resp = e2e.decode(frame[5:])
    assert resp["t"] == "0210" and resp["39"] == "00"


def test_plain_listener_still_serves(switch):
    c = e2e.Client(switch.ports["term"])
    try:
        assert c.transact(purchase(1700))["39"] == "00"
    finally:
        c.close()
