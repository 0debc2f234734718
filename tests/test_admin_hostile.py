"""The operators' HTTP port against a hostile client: bounded in size and time,
up for others, and the admin token's failures counted and logged without it.

Over a real socket on 127.0.0.1, each scenario bounded by short timeouts."""
from __future__ import annotations

import asyncio
import logging
import re
import socket

import pytest

from switch.io import http
from tests.test_admin_http import TOKEN, exchange, post, with_admin

AUTH = f"Authorization: Bearer {TOKEN}"


async def healthy(port: int) -> bool:
    code, _, _ = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return code == 200


async def read_all(reader, timeout: float = 5) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


# -- hostile input ---------------------------------------------------------------------


def test_oversized_request_line_many_headers_and_bodies_get_a_4xx_and_the_port_stays_up():
    async def scenario(port, reloads):
        huge_target = b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        code, _, _ = await exchange(port, huge_target)
        assert 400 <= code < 500
        many = b"".join(b"X-%d: y\r\n" % i for i in range(5000))
        code, _, _ = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert code == 431
        code, _, _ = await exchange(port, post("/admin/reload", AUTH, body=b"x" * (http.MAX_REQUEST + 1)))
        assert code == 413 and reloads == []
        assert await healthy(port)

    with_admin(scenario)


def test_malformed_and_non_ascii_requests_get_400_and_the_port_stays_up():
    async def scenario(port, reloads):
        for raw in (b"GET /h\xc3\xa9althz HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                    b"GET\x00/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"):
            code, _, body = await exchange(port, raw)
            assert code == 400, raw
            assert b"\xc3" not in body
        code, headers, _ = await exchange(port, b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n")
        assert (code, headers["connection"]) == (505, "close")  # not served as if it were 1.1, nor held open
        assert await healthy(port)

    with_admin(scenario)


def test_path_traversal_in_the_rrn_is_a_400_that_quotes_nothing():
    async def scenario(port, reloads):
        for rrn in ("..%2f..%2fetc%2fpasswd", "../../etc", "%00", "123456789012%2f..", "12345678901\u00e9"):
            path = f"/admin/reversals/{rrn}/close"
            raw = post("x", AUTH).replace(b"POST x ", b"POST " + path.encode() + b" ")
            code, _, body = await exchange(port, raw)
            assert code == 400, rrn
            assert rrn.encode() not in body and b"etc" not in body
        # without the token, nothing is said about the path at all
        code, _, body = await exchange(port, post("/admin/reversals/../../etc/close"))
        assert code == 401 and b"etc" not in body
        assert reloads == []

    with_admin(scenario)


def test_pipelined_requests_are_each_answered_in_order():
    async def scenario(port, reloads):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        writer.write(one + b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" + one.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        data = await read_all(reader)
        writer.close()
        codes = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
        assert codes == [b"200", b"404", b"200"]

    with_admin(scenario)


def test_a_slow_client_is_cut_off_with_408_within_the_request_deadline(monkeypatch):
    monkeypatch.setattr(http, "REQUEST_TIMEOUT", 0.6)
    monkeypatch.setattr(http, "IDLE_TIMEOUT", 5.0)

    async def scenario(port, reloads):
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = loop.time()
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        # one header byte at a time, each well within any per-read timeout, until an answer comes
        first = b""
        for _ in range(25):
            try:
                writer.write(b"X")
                await writer.drain()
                first = await asyncio.wait_for(reader.read(64), 0.1)
                break
            except asyncio.TimeoutError:
                continue
            except ConnectionError:
                break
        data = first + await read_all(reader, 3)
        writer.close()
        assert data.startswith(b"HTTP/1.1 408 "), data[:40]
        assert loop.time() - started < 2.5
        assert await healthy(port)

    with_admin(scenario)


def test_a_client_that_never_reads_its_answers_is_cut_off(monkeypatch):
    # A slow reader: many pipelined requests, no answer read, so the switch's writes
    # back up.  It must not hold the connection (one of MAX_CONNECTIONS) forever.
    monkeypatch.setattr(http, "REQUEST_TIMEOUT", 0.5)

    async def scenario(port, reloads):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, from the handshake on
        sock.connect(("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)  # ~8.6 MB of answers
        await asyncio.sleep(2.0)
        answers = b""
        try:
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), 2.0)
                if not chunk:
                    break
                answers += chunk
        except (ConnectionError, asyncio.TimeoutError):
            pass
        writer.close()
        assert answers.count(b"HTTP/1.1 200 ") < 1000  # cut off, not served at the client's pace
        assert await healthy(port)

    with_admin(scenario)


def test_connections_beyond_the_limit_get_503_and_the_others_are_served(monkeypatch):
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 3)

    async def scenario(port, reloads):
        # three connections each in the middle of a request (idle ones would make room: below)
        busy = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for _, w in busy:
            w.write(b"GET /healthz HTTP/1.1\r\n")
        await asyncio.sleep(0.05)
        code, headers, _ = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (code, headers["connection"]) == (503, "close")
        for _, w in busy:
            w.close()
        await asyncio.sleep(0.1)
        assert await healthy(port)

    with_admin(scenario)


def test_at_the_limit_the_longest_idle_connection_makes_room(monkeypatch):
    # Connections that never send a byte cannot keep the port from Prometheus and the probes.
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 3)

    async def scenario(port, reloads):
        idle = []
        for _ in range(3):
            idle.append(await asyncio.open_connection("127.0.0.1", port))
            await asyncio.sleep(0.02)
        for _ in range(3):
            assert await healthy(port)
        assert await asyncio.wait_for(idle[0][0].read(), 1) == b""  # the oldest made room, once
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(idle[1][0].read(), 0.2)
        for _, w in idle:
            w.close()

    with_admin(scenario)


# -- admin authentication -----------------------------------------------------------


def auth_failures(text: bytes) -> float:
    for line in text.decode().splitlines():
        if line.startswith("payswitch_admin_auth_failures_total"):
            return float(line.split()[-1])
    raise AssertionError("payswitch_admin_auth_failures_total is not in /metrics")


def test_wrong_tokens_are_401_alike_counted_and_logged_without_the_token(caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "admin-token-0123456789abcdeX"

    async def scenario(port, reloads):
        _, _, metrics = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert auth_failures(metrics) == 0
        answers = set()
        for header in (f"Authorization: Bearer {wrong}", "Authorization: Basic " + TOKEN, "X-None: 1",
                       f"Authorization: Bearer {TOKEN[:-1]}", f"Authorization: Bearer {TOKEN}x"):
            code, _, body = await exchange(port, post("/admin/reload", header))
            answers.add((code, body))
        assert len(answers) == 1 and next(iter(answers))[0] == 401  # nothing says which part was wrong
        _, _, metrics = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert auth_failures(metrics) == 5
        # with the token, every admin route's other methods are 405
        for method in ("GET", "PUT", "DELETE"):
            for path in ("/admin/reload", "/admin/reversals/123456789012/close"):
                raw = post(path, AUTH).replace(b"POST ", method.encode() + b" ", 1)
                code, _, _ = await exchange(port, raw)
                assert code == 405, (method, path)
        assert reloads == []

    with_admin(scenario)
    refusals = [r for r in caplog.records if r.name == "payswitch.http" and r.levelno >= logging.WARNING]
    assert refusals, "a refused admin request is logged"
    logged = caplog.text
    assert TOKEN not in logged and wrong not in logged and TOKEN[:-1] not in logged


def test_the_supervisor_reports_its_own_refusals_beside_its_workers():
    import types

    from switch.io.fleet_http import FleetHttp

    worker = types.SimpleNamespace(index=0, alive=False, restarts=0, ready=None)
    fleet = types.SimpleNamespace(workers=[worker], writer=None, reloads={"ok": 0, "rejected": 0},
                                  last_reload_ok=True)
    supervisor = FleetHttp(fleet, token=TOKEN.encode())
    supervisor.auth_failures = 3
    text = asyncio.run(supervisor.metrics()).decode()
    assert 'payswitch_admin_auth_failures_total{worker="supervisor"} 3.0' in text


# -- terminal security (spec 8), on the service harness of test_security_pipeline -----------


def a0_count(sw) -> float:
    from tests import test_service as ts

    return sum(ts.sample(sw, "payswitch_requests_total", kind=k, mclass=m, code="A0")
               for k in ("card", "unknown") for m in ("financial", "auth", "unknown"))


def test_a_request_maced_with_another_terminals_key_or_replayed_is_never_authorized_twice(monkeypatch):
    from switch.security import terminal
    from tests import test_security_pipeline as sp
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)

    async def scenario(sw):
        tak1, _ = await sp.sign_on(sw, "SEC00001")
        tak2, _ = await sp.sign_on(sw, "SEC00002", stan="000901")
        before = a0_count(sw)
        # SEC00002's request under SEC00001's TAK: A0, unMACed, nowhere
        resp = await ts.call(sw, terminal.encode_signed(sp.TERM, sp.fields("SEC00002"), tak1, "tdes"))
        assert (resp[39], 64 in resp) == ("A0", False)
        assert a0_count(sw) == before + 1
        # the same MACed request twice (same MAC, same STAN): one authorization, the same answer
        body = terminal.encode_signed(sp.TERM, sp.fields("SEC00002", stan="000002"), tak2, "tdes")
        first = await sw.handle(body)
        again = await sw.handle(body)
        assert TERM_CODE(first) == "00" and again == first
        assert len(sw.acquirers["bank-a"].authorized) == 1

    sp.run(scenario)


def TERM_CODE(out: bytes) -> str:
    from tests import test_security_pipeline as sp

    return sp.TERM.decode(out)[39]


@pytest.mark.parametrize("ksn, why", [("FFFF9876543210E00004", "counter went backwards"),
                                      ("FFFF9876543210E00005", "counter did not move"),
                                      ("FFFF9876543210E007FF", "11 one-bits: never used"),
                                      ("FFFF9876543210FFFFFF", "exhausted"),
                                      ("FFFF9876543210E00000", "counter zero")])
def test_a_dukpt_ksn_that_is_not_fresh_answers_a0_and_is_counted(monkeypatch, ksn, why):
    from switch.security import terminal
    from tests import test_security_pipeline as sp
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)

    def signed(k, stan):
        try:
            mac_key, _, algorithm = terminal.dukpt_keys(sp.BDK, k)
        except ValueError:  # a counter no terminal derives keys for: MACed under another's, as a forger would
            mac_key, _, algorithm = terminal.dukpt_keys(sp.BDK, "FFFF9876543210E00006")
        return terminal.encode_signed(sp.TERM, sp.fields(sp.DUKPT_TID, stan=stan, f48="KS020" + k), mac_key, algorithm)

    async def scenario(sw):
        first = signed("FFFF9876543210E00005", "000001")
        assert TERM_CODE(await sw.handle(first)) == "00"
        before = a0_count(sw)
        resp = await ts.call(sw, signed(ksn, "000002"))
        assert (resp[39], 64 in resp) == ("A0", False), why
        assert a0_count(sw) == before + 1
        assert await ts.record(sw, "000002", sp.DUKPT_TID) is None
        # the first request sent again (its counter is no longer the highest) is a retransmission
        assert TERM_CODE(await sw.handle(first)) == "00"
        assert len(sw.acquirers["bank-a"].authorized) == 1

    sp.run(scenario)


def test_a_pin_block_is_never_logged_journaled_or_echoed(monkeypatch, caplog):
    from switch.security import terminal
    from tests import test_security_pipeline as sp
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    caplog.set_level(logging.DEBUG)
    blocks = []

    async def scenario(sw):
        tak, tpk = await sp.sign_on(sw, sp.TDES_TID)
        for stan, pin in (("000001", "1234"), ("000002", "9999")):
            block = terminal.pin_block(pin, sp.VISA, tpk, "tdes")
            blocks.append(block)
            out = await sw.handle(terminal.encode_signed(sp.TERM, sp.fields(stan=stan, f52=block), tak, "tdes"))
            assert 52 not in sp.TERM.decode(out) and block not in out
            rec = await ts.record(sw, stan, sp.TDES_TID)
            assert rec is not None and block.hex() not in repr(rec).lower() and repr(block) not in repr(rec)
        bad = bytes(8)  # decrypts to no format: 55, and the log names no block
        resp = await ts.call(sw, terminal.encode_signed(sp.TERM, sp.fields(stan="000003", f52=bad), tak, "tdes"))
        assert resp[39] == "55"

    sp.run(scenario)
    text = caplog.text.lower()
    for block in blocks:
        assert block.hex() not in text and repr(block).lower() not in text


def test_no_endpoint_shows_a_pan_a_key_a_pin_block_or_the_token(monkeypatch):
    from switch.io.http import AdminHttp
    from switch.security import terminal
    from tests import test_security_pipeline as sp
    from tests import test_service as ts

    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    secrets: list[bytes] = [TOKEN.encode()]

    async def scenario(sw):
        tak, tpk = await sp.sign_on(sw, sp.TDES_TID)
        block = terminal.pin_block("1234", sp.VISA, tpk, "tdes")
        secrets.extend([sp.VISA.encode(), sp.VISA[-10:].encode()])
        for value in (tak, tpk, block, sp.TMK_TDES, sp.BDK):
            secrets.extend([value.hex().encode(), value.hex().upper().encode()])
        await ts.call(sw, terminal.encode_signed(sp.TERM, sp.fields(f52=block), tak, "tdes"))
        await ts.call(sw, terminal.encode_signed(sp.TERM, sp.fields(stan="000002", f35=sp.VISA + "=2812101"), tak, "tdes"))
        server = AdminHttp(sw, lambda: (False, "no file"), token=TOKEN.encode())
        outputs = []
        for method, path in ((b"GET", b"/metrics"), (b"GET", b"/status.json"), (b"GET", b"/status"),
                             (b"GET", b"/readyz"), (b"GET", b"/healthz"), (b"POST", b"/admin/reload"),
                             (b"POST", b"/admin/reversals/" + sp.VISA.encode() + b"/close"),
                             (b"GET", b"/" + sp.VISA.encode())):
            outputs.append(await server._route(method, path, [(b"authorization", b"Bearer " + TOKEN.encode())]))
        return outputs

    outputs = sp.run(scenario)
    for code, _, body in outputs:
        for secret in secrets:
            assert secret not in body, (code, secret)


def test_a_route_that_fails_answers_500_without_the_reason_and_the_port_stays_up(caplog):
    from tests.test_admin_http import fake_switch

    def reload():
        raise OSError("/etc/payswitch/secret.key: key material 0123456789ABCDEF")

    async def main():
        server = await http.AdminHttp(fake_switch(), reload, token=TOKEN.encode()).serve("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            answer = await exchange(port, post("/admin/reload", AUTH))
            return answer, await healthy(port)
        finally:
            server.close()

    (code, headers, body), up = asyncio.run(main())
    assert (code, up) == (500, True)
    assert b"secret" not in body and b"0123456789ABCDEF" not in body
