"""Issue 8: TLS and mutual TLS on acquirer links (card host link, city-card
centre) and https:// wallets, certificate verification on by default.

A CA, server and client certificates are made here with ``cryptography``; a
TLS relay in front of the real simulator process checks the client
certificate (mutual TLS) and pipes bytes through, so the adapters' own TLS
is what is tested."""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from adapters.card.plugin import card
from adapters.citycard.plugin import citycard
from adapters.tls import client_context
from adapters.wallet.http import ConnectionPool, TransportError
from switch import config as config_mod
from tests.test_card_link import Sim, purchase

ROOT = Path(__file__).resolve().parent.parent


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer_name, issuer_key, *, ca=False, ip=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert, key=None) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test acquirer CA", ca_key, _name("test acquirer CA"), ca_key, ca=True)
    other = _cert("some other CA", other_key, _name("some other CA"), other_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = _cert("acquirer host", server_key, ca.subject, ca_key, ip="127.0.0.1")
    client = _cert("payswitch", client_key, ca.subject, ca_key)
    return SimpleNamespace(
        ca=str(_write(d / "ca.pem", ca)), other_ca=str(_write(d / "other.pem", other)),
        server=str(_write(d / "server.pem", server, server_key)), server_key=str(d / "server.key"),
        client=str(_write(d / "client.pem", client, client_key)), client_key=str(d / "client.key"),
    )


async def tls_relay(pki, target: tuple[str, int], *, mutual: bool, seen: list):
    """A TLS server on a free port that pipes each connection to ``target`` in clear."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server, pki.server_key)
    if mutual:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.ca)

    async def pipe(r, w):
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            w.close()

    async def handle(reader, writer):
        peer = writer.get_extra_info("peercert")
        seen.append(dict(x[0] for x in peer["subject"]) if peer else None)
        r2, w2 = await asyncio.open_connection(*target)
        await asyncio.gather(pipe(reader, w2), pipe(r2, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


def acquirer_cfg(kind: str, port: int, **tls) -> config_mod.Acquirer:
    ep = f"https://127.0.0.1:{port}" if kind.startswith("wallet") else f"127.0.0.1:{port}"
    return config_mod.Acquirer(name="bank-a", type=kind, endpoints=[ep], connections=1, acquirer_id="12345678901",
                               **tls)


@pytest.fixture(scope="module")
def card_sim():
    s = Sim()
    yield s
    s.stop()


def test_card_link_over_mutual_tls_and_refusals(pki, card_sim):
    async def main():
        seen = []
        server, port = await tls_relay(pki, card_sim.endpoint, mutual=True, seen=seen)
        try:
            good = card(acquirer_cfg("card", port, tls_ca_file=pki.ca, tls_cert_file=pki.client,
                                     tls_key_file=pki.client_key))
            await good.start()
            try:
                assert good.healthy()
                result = await good.authorize(purchase(1000), 5.0)
                assert result.response_code == "00"
                assert {"commonName": "payswitch"} in seen  # our client certificate was presented
            finally:
                await good.close()
            # a host whose certificate our CA did not sign: never connected
            for tls in ({"tls_ca_file": pki.other_ca, "tls_cert_file": pki.client, "tls_key_file": pki.client_key},
                        {"tls": True, "tls_cert_file": pki.client, "tls_key_file": pki.client_key},  # system CAs
                        {"tls_ca_file": pki.ca}):  # no client certificate: the host refuses us
                bad = card(acquirer_cfg("card", port, **tls))
                await bad.start()
                try:
                    await asyncio.sleep(0.3)
                    assert not bad.healthy(), tls
                finally:
                    await bad.close()
        finally:
            server.close()

    asyncio.run(main())


def test_city_card_link_over_mutual_tls(pki):
    proc = subprocess.Popen([sys.executable, "-m", "adapters.citycard.sim", "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on "), line
        host, port = line.split()[-1].rsplit(":", 1)

        async def main():
            seen = []
            server, relay = await tls_relay(pki, (host, int(port)), mutual=True, seen=seen)
            try:
                for tls, up in (({"tls_ca_file": pki.ca, "tls_cert_file": pki.client, "tls_key_file": pki.client_key}, True),
                                ({"tls_ca_file": pki.other_ca, "tls_cert_file": pki.client, "tls_key_file": pki.client_key}, False)):
                    acq = citycard(acquirer_cfg("citycard", relay, **tls))
                    acq.connect_timeout = 1.0
                    await acq.start()
                    try:
                        await asyncio.sleep(0.2)
                        assert acq.healthy() is up, tls
                    finally:
                        await acq.close()
                assert {"commonName": "payswitch"} in seen
            finally:
                server.close()

        asyncio.run(main())
    finally:
        proc.terminate()
        proc.wait(5)
        proc.stdout.close()


def test_https_wallet_verifies_the_certificate_by_default(pki):
    async def answer(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    async def main():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server, pki.server_key)
        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            # no TLS settings: the system's CAs, which never signed our test server
            plain = ConnectionPool(f"https://127.0.0.1:{port}", ssl=client_context(acquirer_cfg("wallet-micropay", port)))
            with pytest.raises(TransportError):
                await plain.request("POST", "/pay", b"{}", timeout=3)
            await plain.close()
            trusted = ConnectionPool(f"https://127.0.0.1:{port}",
                                     ssl=client_context(acquirer_cfg("wallet-micropay", port, tls_ca_file=pki.ca)))
            assert (await trusted.request("POST", "/pay", b"{}", timeout=3)).status == 200
            await trusted.close()
        finally:
            server.close()

    asyncio.run(main())


def test_tls_settings_in_the_configuration(pki, tmp_path):
    base = 'response_timeout = 60.0\n[[acquirers]]\nname = "w"\ntype = "{type}"\nendpoints = ["{ep}"]\n{extra}'
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    micropay = f'secret_file = "{secret}"\n'
    config_mod.loads(base.format(type="wallet-micropay", ep="https://wallet.example", extra=micropay), "t.toml")
    with pytest.raises(config_mod.ConfigError, match=r"need an https:// URL, got .* at `\$\.acquirers\[0\]\.endpoints\[0\]`"):
        config_mod.loads(base.format(type="wallet-micropay", ep="http://wallet.example",
                                     extra=micropay + f'tls_ca_file = "{pki.ca}"\n'), "t.toml")
    with pytest.raises(config_mod.ConfigError, match="both tls_cert_file and tls_key_file"):
        config_mod.loads(base.format(type="card", ep="10.0.0.1:5000", extra=f'tls_cert_file = "{pki.client}"\n'), "t.toml")
    cfg = config_mod.loads(base.format(type="card", ep="10.0.0.1:5000",
                                       extra=f'tls_cert_file = "{pki.client}"\ntls_key_file = "{pki.server_key}"\n'), "t.toml")
    from switch import preflight

    with pytest.raises(config_mod.ConfigError, match=r"cannot load TLS client certificate .* at `\$\.acquirers\[0\]`") as e:
        preflight.check(cfg)
    assert "PRIVATE KEY" not in str(e.value)
