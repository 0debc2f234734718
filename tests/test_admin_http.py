"""Issue 8: the admin API needs the bearer token, and no web page can make it act.

Over a real socket (h11 parsing the headers a browser or curl would send);
the reload callback counts the times it ran, so "changed nothing" is checked,
not assumed."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from switch import config as config_mod
from switch.config_security import is_loopback, load_admin_token
from switch.io.http import AdminHttp
from switch.metrics import Metrics

TOKEN = "admin-token-0123456789abcdef"


class Journal:
    def ping(self):
        import concurrent.futures

        f = concurrent.futures.Future()
        f.set_result(None)
        return f


def fake_switch():
    return SimpleNamespace(metrics=Metrics(process=False), journal=Journal(), acquirers={},
                           cfg=SimpleNamespace(routes=[]), started=None, draining=False)


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def post(path="/admin/reload", *headers: str, body: bytes = b"") -> bytes:
    extra = "".join(h + "\r\n" for h in headers)
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:9583\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n").encode() + body


def with_admin(scenario, token: bytes | None = TOKEN.encode()):
    reloads = []

    def reload():
        reloads.append(1)
        return True, "reloaded"

    async def main():
        server = await AdminHttp(fake_switch(), reload, token=token).serve("127.0.0.1", 0)
        try:
            return await scenario(server.sockets[0].getsockname()[1], reloads)
        finally:
            server.close()

    return asyncio.run(main())


def test_admin_endpoints_need_the_bearer_token_and_change_nothing_without_it():
    async def scenario(port, reloads):
        for raw in (
            post(),
            post("/admin/reload", "Authorization: Bearer wrong-token-0123456789"),
            post("/admin/reload", f"Authorization: Basic {TOKEN}"),
            post("/admin/reload", f"Authorization: Bearer {TOKEN}x"),
            post("/admin/reload?token=" + TOKEN),
        ):
            code, headers, body = await exchange(port, raw)
            assert code == 401 and headers["www-authenticate"] == "Bearer", raw
        assert reloads == []
        code, _, body = await exchange(port, post("/admin/reload", f"Authorization: Bearer {TOKEN}"))
        assert code == 200 and json.loads(body)["reloaded"] is True
        assert reloads == [1]
        # health, metrics and status stay open
        for path in ("/healthz", "/readyz", "/metrics", "/status"):
            code, _, _ = await exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            assert code == 200, path

    with_admin(scenario)


def test_without_a_configured_token_the_admin_api_is_off():
    async def scenario(port, reloads):
        code, _, body = await exchange(port, post("/admin/reload", "Authorization: Bearer anything-at-all-here"))
        assert code == 403 and b"admin_token" in body
        assert reloads == []

    with_admin(scenario, token=None)


def test_what_a_browser_page_can_send_is_refused_even_with_the_token():
    # A page can't add Authorization cross-origin without a preflight we never
    # grant; even a request carrying it is refused when it looks like a browser's.
    auth = f"Authorization: Bearer {TOKEN}"

    async def scenario(port, reloads):
        for headers, want in (
            (["Content-Type: application/x-www-form-urlencoded"], 415),
            (["Content-Type: multipart/form-data; boundary=x"], 415),
            (["Content-Type: text/plain;charset=UTF-8"], 415),
            (["Origin: https://evil.example"], 403),
            (["Sec-Fetch-Site: cross-site"], 403),
        ):
            code, _, _ = await exchange(port, post("/admin/reload", auth, *headers, body=b"a=1"))
            assert code == want, headers
        # a form post without the token is a 401 before anything else
        code, _, _ = await exchange(port, post("/admin/reload", "Content-Type: text/plain", body=b"x"))
        assert code == 401
        # and a preflight is never granted
        code, headers, _ = await exchange(
            port, b"OPTIONS /admin/reload HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n"
                  b"Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n")
        assert code in (401, 403, 405) and "access-control-allow-origin" not in headers
        assert reloads == []

    with_admin(scenario)


def test_a_non_loopback_bind_without_a_token_is_a_configuration_error(monkeypatch, tmp_path):
    base = '[http]\nhost = "{host}"\nport = 9583\n{extra}'
    with pytest.raises(config_mod.ConfigError, match=r"needs a bearer token .* at `\$\.http\.host`"):
        config_mod.loads(base.format(host="0.0.0.0", extra=""), "t.toml")
    with pytest.raises(config_mod.ConfigError, match="needs a bearer token"):
        config_mod.loads(base.format(host="10.1.2.3", extra=""), "t.toml")
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.53"):
        config_mod.loads(base.format(host=host, extra=""), "t.toml")
    monkeypatch.setenv("PAYSWITCH_TEST_ADMIN", TOKEN)
    cfg = config_mod.loads(base.format(host="0.0.0.0", extra='admin_token_env = "PAYSWITCH_TEST_ADMIN"'), "t.toml")
    assert load_admin_token(cfg.http) == TOKEN.encode()
    f = tmp_path / "admin.token"
    f.write_text("short\n")
    cfg = config_mod.loads(base.format(host="0.0.0.0", extra=f'admin_token_file = "{f}"'), "t.toml")
    with pytest.raises(config_mod.ConfigError, match="shorter than 16") as e:
        load_admin_token(cfg.http, "t.toml")
    assert "short" not in str(e.value).replace("shorter", "")
    f.write_text(TOKEN + "\n")
    assert load_admin_token(cfg.http) == TOKEN.encode()
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and is_loopback("::1")


def test_head_answers_as_get_without_the_body():
    # Load balancers' and uptime monitors' health checks often send HEAD.
    async def scenario(port, reloads):
        for path in ("/healthz", "/readyz", "/metrics", "/status", "/status.json"):
            request = f"{{}} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            code, headers, body = await exchange(port, request.format("HEAD").encode())
            got, get_headers, get_body = await exchange(port, request.format("GET").encode())
            assert (code, body, headers["content-type"]) == (got, b"", get_headers["content-type"]), path
            assert int(headers["content-length"]) > 0, path
        auth = f"Authorization: Bearer {TOKEN}"
        code, _, _ = await exchange(port, f"HEAD /admin/reload HTTP/1.1\r\nHost: x\r\n{auth}\r\nConnection: close\r\n\r\n"
                                    .encode())
        assert code == 405 and reloads == []
        code, _, _ = await exchange(port, b"HEAD /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert code == 404

    with_admin(scenario)


def test_requests_the_server_cannot_take_get_their_status_not_a_silent_close():
    async def scenario(port, reloads):
        auth = f"Authorization: Bearer {TOKEN}"
        # HTTP/1.1 without Host, and not HTTP at all: 400
        code, _, body = await exchange(port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert (code, body) == (400, b"bad request\n")
        code, _, _ = await exchange(port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        assert code == 400
        # headers beyond the limit: 431
        code, _, _ = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 40000 + b"\r\n\r\n")
        assert code == 431
        # a body no admin call has (or a chunked one) is refused before it is read, token or not
        for extra in ("Content-Length: 10000000", "Transfer-Encoding: chunked"):
            code, headers, _ = await exchange(
                port, f"POST /admin/reload HTTP/1.1\r\nHost: x\r\n{auth}\r\n{extra}\r\n\r\n".encode())
            assert (code, headers["connection"]) == (413, "close"), extra
        assert reloads == []
        # a small body is still read past, and the call answered
        code, _, _ = await exchange(port, post("/admin/reload", auth, body=b"{}"))
        assert code == 200 and reloads == [1]

    with_admin(scenario)
