"""A wallet gateway answering 5xx: unreachable (a route falls back), and the
payment unanswered (uncertain, cancelled), never "answered but unverifiable"
with the wallet still counted healthy."""
from __future__ import annotations

import asyncio

import pytest

from adapters.wallet.micropay import MicroPayAcquirer
from adapters.wallet.signing import generate_rsa_pem
from adapters.wallet.tradepay import TradePayAcquirer
from tests.test_wallet_sim import FAST, code, purchase


async def _gateway(status: int) -> asyncio.AbstractServer:
    async def answer(reader, writer):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            body = b"<html>bad gateway</html>"
            writer.write(b"HTTP/1.1 %d Oops\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))
            await writer.drain()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def _adapter(style: str, url: str):
    if style == "tradepay":
        private, public = generate_rsa_pem(1024)
        return TradePayAcquirer("wallet-a", url, app_id="2021", merchant_private_key=private,
                                wallet_public_key=public, **FAST)
    return MicroPayAcquirer("wallet-b", url, app_id="wx0000000000000001", mch_id="1900000001",
                            secret=b"0123456789abcdef0123456789abcdef", **FAST)


@pytest.mark.parametrize("style", ["tradepay", "micropay"])
@pytest.mark.parametrize("status, healthy, outcome", [(502, False, "no_answer"), (503, False, "no_answer"),
                                                      (404, True, "unverifiable")])
def test_a_gateway_error_makes_the_wallet_unreachable_and_the_payment_unanswered(style, status, healthy, outcome):
    async def main():
        server = await _gateway(status)
        port = server.sockets[0].getsockname()[1]
        adapter = _adapter(style, f"http://127.0.0.1:{port}")
        try:
            result = await adapter.authorize(purchase(code("77")), 0.45)
            return result, adapter.healthy(), adapter
        finally:
            await adapter.close()
            server.close()

    result, is_healthy, adapter = asyncio.run(main())
    assert result.response_code == "91" and result.uncertain is True
    assert is_healthy is healthy
    assert adapter.metrics.get("calls", call="pay", outcome=outcome) == 1
