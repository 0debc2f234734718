"""Barcode-wallet acquirers (spec section 3 "Barcode wallet", 6, 7).

- :mod:`.tradepay` -- ``TradePayAcquirer``: RSA-signed JSON, amounts in yuan.
- :mod:`.micropay` -- ``MicroPayAcquirer``: HMAC-signed JSON, amounts in fen.
- :mod:`.acquirer` -- what both share: ``order_number(request)``, the asyncio
  driver, ``query`` / ``finish`` for a sweeper.
- :mod:`.flow` -- the hold / poll / cancel state machine (no I/O, no clock).
- :mod:`.outcomes` -- the one table from wallet answers to response codes.
- :mod:`.messages`, :mod:`.signing` -- wire formats and signatures, both sides.
- :mod:`.http` -- keep-alive HTTP/1.1 client pool (h11 on asyncio).
- :mod:`.sandbox`, :mod:`.sim` -- the sandbox rules and their trio simulator.

Nothing is imported here: the simulator runs on trio and must not pull in the
asyncio adapters; import the module you need.
"""
