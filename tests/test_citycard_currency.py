"""The city-card centre's currency: field 49 of a debit, top-up or upload checked before the centre is asked.

The clearing centre's protocol carries no currency, so the switch checks
field 49 against the one configured for the centre (``options = { currency
= "..." }`` on the citycard acquirer, default the sandbox terminals'): another
is refused 12 by the adapter, never sent, journaled as the switch's answer and
counted in no totals.  An 0400 is never refused for its field 49.
"""
from __future__ import annotations

import asyncio

import msgspec
import pytest

from adapters.citycard.adapter import CityCardAcquirer
from adapters.citycard.mapping import Refusal, build_message
from adapters.citycard.plugin import DEFAULT_CURRENCY
from adapters.citycard.protocol import Debit, Load, Offline, Reverse
from native.iso8583 import build_tlv48
from switch import config, wiring
from switch.core.acquirer import Result
from switch.client import build
from tests import test_service as ts
from tests.test_citycard_adapter import cc, debit, offline, reversal_of, top_up
from tests.test_citycard_uploads import CARD, CITY, upload
from tests.test_service import call, fakes, record
from tests.test_vas import plugin_registered, run  # noqa: F401  (autouse fixture)


def in_currency(req, currency):
    return msgspec.structs.replace(req, currency=currency)


@pytest.mark.parametrize("make, kind", [(lambda: debit(CARD, 1, 500), Debit), (lambda: offline(CARD, 1, 500), Offline),
                                        (lambda: top_up(CARD, 1, 500), Load)])
def test_a_debit_top_up_or_upload_in_another_currency_is_refused_12(make, kind):
    req = make()  # field 49 156
    assert isinstance(build_message(req, "156"), kind)
    assert isinstance(build_message(in_currency(req, None), "156"), kind)  # none: the merchant's
    assert isinstance(build_message(in_currency(req, "840")), kind)  # no centre currency: any
    with pytest.raises(Refusal) as err:
        build_message(in_currency(req, "840"), "156")
    assert err.value.code == "12" and "'840'" in err.value.reason and "'156'" in err.value.reason


def test_a_reversal_is_never_refused_for_its_currency():
    req = debit(CARD, 1, 500)
    rev = in_currency(reversal_of(req, Result(response_code="00", acquirer_ref="7.x")), "840")
    assert build_message(rev, "156") == Reverse(id=0, ref="7.x")


def test_the_adapter_refuses_before_it_calls_the_centre():
    async def scenario():
        acq = CityCardAcquirer(endpoints=[("127.0.0.1", 9)], connect_timeout=0.01, currency="156")
        other = await acq.authorize(in_currency(debit(CARD, 1, 500), "840"), 1.0)
        same = await acq.authorize(debit(CARD, 2, 500), 1.0)  # no link to the centre: 91, not sent
        return other, same

    other, same = asyncio.run(scenario())
    assert (other.response_code, other.uncertain, other.acquirer_ref) == ("12", False, None)
    assert same.response_code == "91"


def test_the_switch_answers_12_journals_it_and_counts_it_nowhere():
    centre = CityCardAcquirer("city", endpoints=[("127.0.0.1", 9)], connect_timeout=0.01, currency="156")

    async def scenario(sw):
        load = ts.request(stan="000003", pan=CARD, pcode="210000", amount="000000000500", f22="071",
                          f48=build_tlv48({"CC": cc(CARD, 3, 500), "M1": "ABCDEF01"}))
        for msg in (upload("000001", 1, 500, mti="0200"), upload("000002", 2, 500), load):
            assert (await call(sw, msg))[39] == "12"  # field 49 978: not the centre's 156
        for stan in ("000001", "000002", "000003"):
            rec = await record(sw, stan)
            assert (rec.response_code, rec.state, rec.auth_code, rec.acquirer_ref) == ("12", "answered", None, None)
        assert (await call(sw, ts.reversal("000004", "000001")))[39] == "00"  # an 0400 is never refused
        assert (await call(sw, ts.settlement("000005")))[39] == "00"  # no debits counted

    run(scenario, acquirers=fakes(city=centre), extra=CITY)


def city_acquirer(options: str = ""):
    text = '[[acquirers]]\nname = "city"\ntype = "citycard"\nendpoints = ["127.0.0.1:9301"]\n' + options
    cfg = config.loads(text, "switch.toml")
    return wiring.build_acquirer(cfg.acquirers[0], 0, None, source=cfg.source)


def test_the_centre_currency_is_configured_and_defaults_to_what_the_sandbox_sends():
    assert city_acquirer().currency == DEFAULT_CURRENCY
    assert city_acquirer('options = { currency = "156" }').currency == "156"
    # The sandbox's terminals (payswitch send, the shop day) send their city-card debits in it.
    assert build("purchase", pan=CARD, amount=500)[49] == DEFAULT_CURRENCY
    sandbox = config.default()
    (centre,) = [a for a in sandbox.acquirers if a.type == "citycard"]
    assert wiring.build_acquirer(centre, 0, None, source=sandbox.source).currency == DEFAULT_CURRENCY


@pytest.mark.parametrize("options, message", [
    ('{ currency = "999" }', "options.currency: expected the ISO 4217 numeric code of a currency, got '999'"),
    ("{ currency = 978 }", "options.currency: expected the ISO 4217 numeric code of a currency, got 978"),
    ('{ speed = 3 }', "citycard acquirers take only options.currency (got speed)"),
])
def test_a_bad_centre_currency_names_the_key_and_the_file(options, message):
    with pytest.raises(config.ConfigError) as e:
        city_acquirer(f"options = {options}\n")
    assert str(e.value) == f"switch.toml: acquirer 'city': {message} - at `$.acquirers[0]`"
