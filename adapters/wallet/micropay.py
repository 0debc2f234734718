"""The micropay style wallet acquirer: HMAC-SHA256 signed JSON, amounts in fen.

Flow (spec 6): ``/pay/micropay`` with the scanned code; USERPAYING or
SYSTEMERROR -> ``/pay/orderquery`` every ``poll_interval``; at the deadline
``/secapi/pay/reverse`` until it is acknowledged (``recall`` N).  The answer
does not tell a closed order from a refunded one: the result's acquirer_ref
ends in ``|reversed``.  The wire format is described in :mod:`.messages`.
"""
from __future__ import annotations

import secrets

from . import messages, outcomes
from .acquirer import Order, WalletAcquirer
from .http import gateway_failed


class MicroPayAcquirer(WalletAcquirer):
    """``MicroPayAcquirer(name, url, app_id=..., mch_id=..., secret=bytes,
    **WalletAcquirer options)``: ``secret`` is the merchant's API key (ASCII),
    which signs requests and verifies answers."""

    style = outcomes.MICROPAY

    def __init__(self, name: str, url: str, *, app_id: str, mch_id: str, secret: bytes, **options):
        super().__init__(name, url, **options)
        self._codec = messages.MicroPayCodec(app_id, mch_id, secret.strip())

    async def _exchange(self, call: str, order: Order, timeout: float) -> messages.WalletReply | None:
        fields = {"out_trade_no": order.no}
        if call == "pay":
            fields.update(auth_code=order.code, total_fee=str(order.amount), body=self.subject)
        response = await self._pool.request(
            "POST", messages.MICROPAY_PATHS[call],
            self._codec.request(fields, secrets.token_hex(16)), timeout=timeout,
        )
        gateway_failed(response)
        if response.status != 200:
            return None
        return self._codec.reply(call, response.body, order.no, order.amount or None)
