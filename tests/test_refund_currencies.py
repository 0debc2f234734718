"""Refund limits per currency (spec section 6.1, switch.core.refunds), on the service harness.

Amounts in two currencies never add up: 1,000 JPY (no decimals) is not 10.00
EUR.  Each limit is in one currency, a refund is held against its own
currency's, and one in a currency a limit set does not name is refused 12.
"""
from __future__ import annotations

import pytest

from switch import config as config_mod
from switch.core import states
from tests.test_edges import hmac_key, run  # noqa: F401 (fixture)
from tests.test_service import CONFIG, KEY_ENV, call, record, request

EUR, JPY, USD = "978", "392", "840"


def refund(stan: str, amount: int, currency: str = EUR) -> bytes:
    return request(stan=stan, pcode="200000", amount="%012d" % amount, f49=currency)


def test_daily_limits_are_kept_per_currency_and_never_add_up():
    async def scenario(sw):
        assert (await call(sw, refund("000001", 100_000, EUR)))[39] == "00"
        assert (await call(sw, refund("000002", 1_000, JPY)))[39] == "00"  # before: 101000 "minor units" of nothing
        assert (await call(sw, refund("000003", 50_000, EUR)))[39] == "00"  # 150000 EUR: exactly the limit
        assert (await call(sw, refund("000004", 1, EUR)))[39] == "58"
        assert (await call(sw, refund("000005", 9_000, JPY)))[39] == "00"  # 10000 JPY: exactly the limit
        assert (await call(sw, refund("000006", 1, JPY)))[39] == "58"
        assert len(sw.acquirers["bank-a"].authorized) == 4

    run(scenario, merchant="refund_daily_max = { 978 = 150000, 392 = 10000 }")


def test_a_refund_in_a_currency_no_limit_names_is_refused_12_journaled_and_sent_nowhere():
    async def scenario(sw):
        usd = refund("000001", 1, USD)
        first = await call(sw, usd)
        assert first[39] == "12"
        assert (await call(sw, usd))[37] == first[37]  # the retransmission: the same answer
        rec = await record(sw, "000001")
        assert (rec.state, rec.response_code, rec.host_stan) == (states.REJECTED, "12", None)
        assert (await call(sw, refund("000002", 2_500, EUR)))[39] == "00"
        assert (await call(sw, request(stan="000003", f49=USD)))[39] == "00"  # purchases are not limited here
        assert len(sw.acquirers["bank-a"].authorized) == 2

    run(scenario, merchant="refund_daily_max = { 978 = 150000 }")


def test_a_plain_number_is_in_the_merchants_currency():
    async def scenario(sw):
        assert (await call(sw, refund("000001", 100_000, EUR)))[39] == "00"
        assert (await call(sw, refund("000002", 60_000, JPY)))[39] == "12"  # the merchant's limits are in euros
        assert (await call(sw, refund("000003", 60_000, EUR)))[39] == "58"
        assert (await call(sw, refund("000004", 50_000, EUR)))[39] == "00"
        assert len(sw.acquirers["bank-a"].authorized) == 2

    run(scenario, merchant='currency = "978"\nrefund_daily_max = 150000')


def test_every_limit_set_must_name_the_refunds_currency():
    # The single-refund limit names yen, the daily one euros only: a refund in yen has no
    # daily limit, so it is refused rather than let through unlimited.
    async def scenario(sw):
        assert (await call(sw, refund("000001", 5_000, JPY)))[39] == "12"
        assert (await call(sw, refund("000002", 100_001, EUR)))[39] == "58"  # above the single-refund limit
        assert (await call(sw, refund("000003", 100_000, EUR)))[39] == "00"
        assert len(sw.acquirers["bank-a"].authorized) == 1

    run(scenario, merchant="refund_max = { 978 = 100000, 392 = 10000 }\nrefund_daily_max = { 978 = 150000 }")


def test_refunds_of_a_merchant_without_limits_pass_in_any_currency():
    async def scenario(sw):
        for stan, currency in (("000001", EUR), ("000002", JPY), ("000003", USD)):
            assert (await call(sw, refund(stan, 10**9, currency)))[39] == "00"

    run(scenario)


@pytest.mark.parametrize("keys, error", [
    ("refund_max = { 999 = 100 }", "expected the ISO 4217 numeric code of a currency as the key, got '999'"
                                    " - at `$.merchants[0].refund_max[\"999\"]`"),
    ("refund_daily_max = { 978 = -1 }", "must be 0 or more, got -1 - at `$.merchants[0].refund_daily_max[\"978\"]`"),
    ("refund_daily_max = -5", "must be 0 or more, got -5 - at `$.merchants[0].refund_daily_max`"),
    ("refund_max = {}", "an empty table names no currency: leave the key out for no limit"
                        " - at `$.merchants[0].refund_max`"),
    # above what field 4 (n12, minor units) can carry: a slip (a unit for a cent, digits too many)
    ("refund_max = 1000000000000", "must be 0 or more and at most 999999999999 (field 4: 12 digits of minor units),"
                                   " got 1000000000000 - at `$.merchants[0].refund_max`"),
    ("refund_daily_max = { 978 = 5000, 392 = 9223372036854775807 }",
     "must be 0 or more and at most 999999999999 (field 4: 12 digits of minor units), got 9223372036854775807"
     " - at `$.merchants[0].refund_daily_max[\"392\"]`"),
])
def test_a_bad_refund_limit_is_a_config_error_naming_the_file_and_key(keys, error):
    text = CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=KEY_ENV).replace(
        'terminals = ["TERM0001-TERM0009"]', 'terminals = ["TERM0001-TERM0009"]\n' + keys, 1)
    with pytest.raises(config_mod.ConfigError) as err:
        config_mod.loads(text, "limits.toml")
    assert str(err.value) == "limits.toml: " + error
