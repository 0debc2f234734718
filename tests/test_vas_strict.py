"""Value-added services as a bank and a partner see them: bad answers, time, repeats, card data.

The services are in-process plugins whose answers a test scripts, sync or
async; the acquirers are the service harness's fakes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from importlib.metadata import EntryPoint

import pytest

from native.iso8583 import build_tlv48
from switch import config as config_mod
from switch.core.acquirer import Result
from switch.core.vas import payload
from switch.io import vas as vas_io
from switch.io.service import Switch
from tests import test_service as ts
from tests.test_service import FakeAcquirer, call, fakes, record, request, reversal
from tests import test_vas as tv
from tests.test_vas import outbox, tags

CARD = "4111111111111111"  # a card number a service quotes back (Luhn-valid)

SERVICE = """
[[vas]]
name = "shop"
type = "strictplugin"
merchants = ["SHOP00000000001"]
deadline = {deadline}
"""

SEEN: list[tuple[str, dict]] = []
BEHAVIOUR: dict = {}


class Plugin:
    """``BEHAVIOUR[moment]``: a dict answered as is, or a function of the payload (sync or async)."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    async def call(self, moment: str, p: dict):
        SEEN.append((moment, p))
        what = BEHAVIOUR.get((self.cfg.name, moment), BEHAVIOUR.get(moment, {}))
        if callable(what):
            what = what(p)
            if asyncio.iscoroutine(what):
                what = await what
        return dict(what) if isinstance(what, dict) else what


def plugin(cfg):
    return Plugin(cfg)


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    SEEN.clear()
    BEHAVIOUR.clear()
    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    monkeypatch.setenv("PAYSWITCH_TEST_TOKEN_KEY", "77" * 32)
    types = vas_io.vas_types()
    monkeypatch.setattr(vas_io, "vas_types", lambda: {
        **types, "strictplugin": EntryPoint("strictplugin", "tests.test_vas_strict:plugin", vas_io.GROUP)})


def run(scenario, *, acquirers=None, deadline=0.05, timeout=0.3, response_timeout=2.0, extra=""):
    text = ts.CONFIG.format(timeout=timeout, response_timeout=response_timeout, key_env=ts.KEY_ENV)
    text += SERVICE.format(deadline=deadline) + extra
    text += '\n[[token_keys]]\ngroup = "SHOP00000000001"\nkey_env = "PAYSWITCH_TEST_TOKEN_KEY"\n'
    cfg = config_mod.loads(text, "test_vas_strict.toml")

    async def main():
        sw = Switch(cfg, acquirers=acquirers if acquirers is not None else fakes())
        try:
            await sw.start()
            return await scenario(sw)
        finally:
            await sw.close()

    return asyncio.run(main())


def coupon(amount="000000010000", **kw) -> bytes:
    return request(amount=amount, f48=build_tlv48({"CP": "SPRING10"}), **kw)


def outcomes(sw, moment="before") -> dict:
    return {o: ts.sample(sw, "payswitch_vas_calls_total", service="shop", moment=moment, outcome=o)
            for o in ("ok", "error", "timeout")}


# -- 3. a discount that makes no sense -------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"amount": 20000}, {"amount": -1}, {"amount": 0}, {"amount": 9000.0}, {"amount": True},
    {"amount": "9000"}, {"amount": 9000, "currency": "840"}, {"amount": 9000, "currency": 978},
    {"amount": 9000, "line": ["not", "text"]},
])
def test_a_nonsensical_answer_is_an_error_and_the_payment_goes_on_undiscounted(bad):
    BEHAVIOUR["before"] = {"line": "MEMBER PRICE", **bad}

    async def scenario(sw):
        resp = await call(sw, coupon())
        assert resp[39] == "00" and resp[4] == "000000010000"
        assert "DS" not in tags(resp) and "LY" not in tags(resp)  # as if the service were not configured
        assert sw.acquirers["bank-a"].authorized[0][0].amount == 10000
        assert (await record(sw, "000001")).amount == 10000
        assert outcomes(sw) == {"ok": 0, "error": 1, "timeout": 0}

    run(scenario)


def test_a_discount_in_the_payments_own_currency_is_taken():
    BEHAVIOUR["before"] = {"amount": 9000, "currency": "978", "line": "MEMBER PRICE"}

    async def scenario(sw):
        resp = await call(sw, coupon())
        assert resp[4] == "000000009000" and tags(resp)["DS"] == "000000001000"
        assert outcomes(sw) == {"ok": 1, "error": 0, "timeout": 0}

    run(scenario)


@pytest.mark.parametrize("answer", [None, [1, 2], "garbage", 42])
def test_an_answer_that_is_not_an_object_is_an_error(answer):
    BEHAVIOUR["before"] = lambda p: answer

    async def scenario(sw):
        resp = await call(sw, coupon())
        assert resp[39] == "00" and resp[4] == "000000010000" and 48 not in resp
        assert outcomes(sw)["error"] == 1

    run(scenario)


# -- 6. card data never goes out, nor comes back unmasked ---------------------------


def test_a_card_number_in_a_services_answer_reaches_no_log_journal_or_terminal(caplog):
    BEHAVIOUR["before"] = {"amount": f"{CARD}", "line": f"CARD {CARD} OK"}
    BEHAVIOUR["after"] = {"line": f"PTS FOR {CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]}", "pan": CARD}

    async def scenario(sw):
        with caplog.at_level(logging.DEBUG):
            resp = await call(sw, coupon())
        assert resp[39] == "00"
        rec = await record(sw, "000001")
        for text in (caplog.text, resp[48], rec.response.decode("latin-1")):
            assert CARD not in text and CARD[:4] + " " + CARD[4:8] + " " + CARD[8:12] not in text

    run(scenario)


@pytest.mark.parametrize("code", [CARD, f"{CARD}=29121010000", f"B{CARD}^DOE/J^2912", "4111-1111-1111-1111"])
def test_a_coupon_code_holding_card_or_track_data_goes_as_null(code):
    body = payload("before", ref="000000000001", token=None, merchant="M", terminal="T", amount=1,
                   currency="978", kind="card", coupon=code)
    assert body["coupon"] is None


# -- 4. the terminal's budget ----------------------------------------------------------


class SlowBank(FakeAcquirer):
    async def authorize(self, request, timeout):
        self.authorized.append((request, timeout))
        await asyncio.sleep(0.9)
        return Result(response_code="00", auth_code="A00001", acquirer_ref="slow-1")


def test_the_services_time_comes_out_of_the_terminals_budget_never_the_acquirers():
    """response_timeout 2 s, the acquirer's timeout 1 s and it answers in 0.9 s, both
    services hang past their 1 s deadline: the acquirer still gets its 1 s, the payment is
    approved, and the terminal hears within its response_timeout."""

    async def hang(p):
        await asyncio.sleep(5)

    BEHAVIOUR.update(before=hang, after=hang)

    async def scenario(sw):
        t0 = time.monotonic()
        resp = await call(sw, coupon())
        took = time.monotonic() - t0
        assert resp[39] == "00" and resp[4] == "000000010000"
        assert sw.acquirers["bank-a"].authorized[0][1] >= 0.99
        assert took < 2.0, took
        assert outcomes(sw, "before")["timeout"] == 1 and outcomes(sw, "after")["timeout"] == 1

    run(scenario, acquirers=fakes(**{"bank-a": SlowBank("bank-a")}), deadline=1.0, timeout=1.0,
        response_timeout=2.0)


def test_an_answer_after_the_deadline_changes_nothing():
    async def late(p):
        await asyncio.sleep(0.15)
        return {"amount": 1, "line": "TOO LATE"}

    BEHAVIOUR["before"] = late

    async def scenario(sw):
        resp = await call(sw, coupon())
        assert resp[4] == "000000010000" and 48 not in resp
        await asyncio.sleep(0.2)
        assert (await record(sw, "000001")).amount == 10000

    run(scenario, deadline=0.05)


# -- 5. repeats: joined while asked, answered from the journal after ----------------


def test_a_retransmission_while_the_coupon_is_asked_joins_it_and_later_ones_never_ask_again():
    async def slow_coupon(p):
        await asyncio.sleep(0.05)
        return {"amount": p["amount"] * 9 // 10, "line": "COUPON -10%"}

    BEHAVIOUR.update(before=slow_coupon, after={"line": "+90 PTS"})

    async def scenario(sw):
        body = coupon()
        first = asyncio.ensure_future(sw.handle(body))
        await asyncio.sleep(0.01)  # the service is being asked
        second = await sw.handle(body)
        assert await first == second
        third = await sw.handle(body)
        assert third == second
        assert [m for m, _ in SEEN] == ["before", "after"]
        assert len({p["ref"] for _, p in SEEN}) == 1
        assert ts.TERM.decode(third)[4] == "000000009000"
        assert len(sw.acquirers["bank-a"].authorized) == 1

    run(scenario, deadline=0.3)


# -- 1, 2. a discounted, pointed payment reversed ------------------------------------


def test_a_reversed_discounted_payment_undoes_the_lowered_amount_and_tells_partners_once():
    BEHAVIOUR.update(before={"amount": 9000, "line": "COUPON -10%"}, after={"line": "+90 PTS"})

    async def scenario(sw):
        original = await call(sw, coupon())
        assert original[4] == "000000009000"
        undo = reversal("000002", "000001", amount="000000010000")
        assert (await call(sw, undo))[39] == "00"
        assert (await call(sw, undo))[39] == "00"  # the terminal's 0400 again
        assert (await call(sw, reversal("000003", "000001")))[39] == "00"  # and under a new STAN
        await ts.wait_state(sw, "000001", "reversed")
        assert [r.original.amount for r, _ in sw.acquirers["bank-a"].reversed] == [9000]
        again = await call(sw, coupon())  # the original's retransmission: its journaled answer
        assert again[4] == "000000009000" and again[39] == original[39] and tags(again) == tags(original)
        events = [(e["event"], e["rrn"], e["amount"]) for e in await outbox(sw)]
        assert events == [("approved", original[37], 9000), ("reversed", original[37], 9000)]
        assert [m for m, _ in SEEN] == ["before", "after"]  # no service is asked for a reversal

    run(scenario)


def test_a_request_handled_again_keeps_the_discount_journaled_and_never_asks_again():
    """Journaled with its discount, never sent (the switch died in between), then repeated
    by the terminal: handled again, at the journaled amount, the coupon not redeemed twice;
    without asking, the service cannot answer otherwise and leave the acquirer asked for
    the full amount while the journal, the 0500 totals and a reversal say the lowered one."""
    from types import SimpleNamespace

    from switch.core.engine import Engine

    text = ts.CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV) + SERVICE.format(deadline=0.05)
    engine = Engine(config_mod.loads(text, "test_vas_strict.toml"), key=bytes(32))
    msg = ts.TERM.decode(coupon())
    rec = SimpleNamespace(id=7, rrn="000000000007", amount=9000, customer_token=None, acquirer="bank-a",
                          created_at=engine.clock())
    flight = SimpleNamespace(budget_from=0.0, vas_tlv=None)
    gen = engine.vas.before(msg, rec, ts.MERCHANT, "card", {"CP": "SPRING10"}, flight)
    with pytest.raises(StopIteration):
        command = next(gen)
        pytest.fail(f"asked again: {command!r}")
    assert msg[4] == "000000009000" and flight.vas_tlv == {"DS": "000000001000"}


def test_a_services_failure_naming_a_card_number_is_logged_masked(caplog):
    def fail(p):
        raise ValueError(f"no member for card {CARD}")

    BEHAVIOUR.update(before=fail, after=fail)

    async def scenario(sw):
        with caplog.at_level(logging.DEBUG):
            resp = await call(sw, coupon())
        assert resp[39] == "00" and resp[4] == "000000010000"
        assert "no member for card" in caplog.text and CARD not in caplog.text
        assert outcomes(sw)["error"] == 1

    run(scenario)


def test_with_two_services_only_the_discount_taken_is_on_the_receipt():
    """The first service in configuration order that lowers the amount wins; a second one's
    discount is not given, so its "-20%" must not be printed as if it were."""
    BEHAVIOUR[("shop", "before")] = {"amount": 9000, "line": "COUPON -10%"}
    BEHAVIOUR[("deals", "before")] = {"amount": 8000, "line": "DEAL -20%"}
    BEHAVIOUR[("stamps", "before")] = {"line": "STAMP 3/10"}
    more = "".join(f'\n[[vas]]\nname = "{n}"\ntype = "strictplugin"\nmerchants = ["SHOP00000000001"]\n'
                   f'moments = ["before"]\n' for n in ("deals", "stamps"))

    async def scenario(sw):
        resp = await call(sw, coupon())
        assert resp[4] == "000000009000" and tags(resp)["DS"] == "000000001000"
        assert tags(resp)["LY"] == "COUPON -10% / STAMP 3/10"

    run(scenario, extra=more)


def test_a_discount_the_journal_refused_is_neither_given_nor_printed():
    from types import SimpleNamespace

    from switch.core.engine import Engine

    text = ts.CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV) + SERVICE.format(deadline=0.05)
    engine = Engine(config_mod.loads(text, "test_vas_strict.toml"), key=bytes(32))
    msg = ts.TERM.decode(coupon())
    rec = SimpleNamespace(id=7, rrn="000000000007", amount=10000, customer_token=None, acquirer="bank-a",
                          created_at=engine.clock())
    flight = SimpleNamespace(budget_from=0.0, vas_tlv=None)
    gen = engine.vas.before(msg, rec, ts.MERCHANT, "card", {"CP": "SPRING10"}, flight)
    assert type(next(gen)).__name__ == "Vas"
    op = gen.send({"shop": {"amount": 9000, "line": "COUPON -10%"}})
    assert type(op).__name__ == "Op"
    with pytest.raises(StopIteration):
        gen.throw(OSError("disk full"))
    assert msg[4] == "000000010000" and flight.vas_tlv == {}


# -- the loyalty sandbox, as a partner probes it ---------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b'{"coupon": 1077, "amount": 100}',
                                  b'{"coupon": "X10", "amount": "100"}', b'{"token": ["t"], "amount": 100}'])
def test_the_loyalty_sandbox_answers_400_to_a_body_it_cannot_read(body):
    from adapters.loyalty.sim import Loyalty, hangs
    from switch.core.vas import sign

    secret = bytes(32)
    service = Loyalty(secret)
    assert hangs(body) is False
    for target in ("/vas/before", "/vas/after"):
        headers = {b"x-payswitch-signature": sign(secret, body, int(time.time())).encode()}
        status, answer = service.handle("POST", target, headers, body)
        assert status == 400 and "error" in answer
    assert service.members == {}


# -- a token key with nowhere to be created ------------------------------------------------


def test_a_token_key_is_never_created_in_the_working_directory(tmp_path, monkeypatch):
    """With the journal key in an environment variable there is no key folder: a merchant
    group with services and no token key is a configuration error naming it, at check-config
    and at start, and no key file appears wherever the switch was started."""
    from switch import preflight

    (tmp_path / "journal").mkdir()
    (tmp_path / "started-here").mkdir()
    monkeypatch.chdir(tmp_path / "started-here")
    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    text = ts.CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV)
    text = text.replace('url = "sqlite://:memory:"', f'url = "sqlite://{tmp_path / "journal" / "j.sqlite"}"')
    cfg = config_mod.loads(text + tv.SERVICE.format(deadline=0.05), "shop.toml")
    for check in (lambda: preflight._vas(cfg, False), lambda: vas_io.load_token_keys(cfg)):
        with pytest.raises(config_mod.ConfigError) as caught:
            check()
        assert str(caught.value).startswith("shop.toml: `$.token_keys`: merchant group 'SHOP00000000001' has value-"
                                            "added services and no token key file or variable")
        assert "[[token_keys]] group = 'SHOP00000000001' with key_file or key_env" in str(caught.value)
    assert list((tmp_path / "started-here").iterdir()) == [] and list((tmp_path / "journal").iterdir()) == []
    monkeypatch.setenv("PAYSWITCH_TEST_TOKEN_KEY", "66" * 32)
    given = text + tv.SERVICE.format(deadline=0.05) + (
        '\n[[token_keys]]\ngroup = "SHOP00000000001"\nkey_env = "PAYSWITCH_TEST_TOKEN_KEY"\n')
    cfg = config_mod.loads(given, "shop.toml")
    vas_io.check_token_key_folders(cfg)  # raises nothing
    assert vas_io.load_token_keys(cfg) == {"SHOP00000000001": (1, bytes.fromhex("66" * 32))}
