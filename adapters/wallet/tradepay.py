"""The trade.pay style wallet acquirer: RSA-signed JSON, amounts in yuan.

Flow (spec 6): ``trade.pay`` with the scanned code; WAIT_BUYER_PAY or an
unknown answer -> ``trade.query`` every ``poll_interval``; at the deadline
``trade.cancel`` until it is final (``retry_flag`` N), which either closes the
unpaid order (action ``close``) or refunds the paid one (action ``refund``):
the result's acquirer_ref ends in ``|closed`` or ``|refunded``.  The wire
format is described in :mod:`.messages`.
"""
from __future__ import annotations

import time

from . import messages, outcomes, signing
from .acquirer import Order, WalletAcquirer
from .http import gateway_failed


class TradePayAcquirer(WalletAcquirer):
    """``TradePayAcquirer(name, url, app_id=..., merchant_private_key=PEM,
    wallet_public_key=PEM, **WalletAcquirer options)``.

    ``merchant_private_key`` signs our requests (``key_password`` if the PEM is
    encrypted); ``wallet_public_key`` verifies the wallet's answers -- an answer
    that does not verify counts as no answer.
    """

    style = outcomes.TRADEPAY

    def __init__(
        self,
        name: str,
        url: str,
        *,
        app_id: str,
        merchant_private_key: bytes,
        wallet_public_key: bytes,
        key_password: bytes | None = None,
        **options,
    ):
        super().__init__(name, url, **options)
        self._codec = messages.TradePayCodec(
            app_id,
            signing.RsaSigner(merchant_private_key, key_password),
            signing.RsaVerifier(wallet_public_key),
        )

    async def _exchange(self, call: str, order: Order, timeout: float) -> messages.WalletReply | None:
        biz = {"out_trade_no": order.no}
        if call == "pay":
            biz.update(
                scene="bar_code",
                auth_code=order.code,
                total_amount=messages.yuan(order.amount),
                subject=self.subject,
            )
        body = self._codec.request(call, biz, time.strftime("%Y-%m-%d %H:%M:%S"))
        response = await self._pool.request(
            "POST", messages.TRADEPAY_PATH, body,
            content_type="application/json; charset=utf-8", timeout=timeout,
        )
        gateway_failed(response)
        if response.status != 200:
            return None
        return self._codec.reply(call, response.body, order.no, order.amount or None)
