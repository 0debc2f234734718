"""Value-added services at payment (issue 11) on the service harness.

The services are in-process plugins (entry point group ``payswitch.vas``,
found through :func:`switch.io.vas.vas_types`, patched here) or a real HTTP
server in the test; acquirers are the harness's fakes.  Every payload a
service receives and every outbox event is scanned for card data.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Generator
from importlib.metadata import EntryPoint

import pytest

from native.iso8583 import build_tlv48, parse_tlv48
from switch import config as config_mod
from switch.core.acquirer import Result
from switch.core.vas import customer_token, sign, verify
from switch.io import vas as vas_io
from switch.io.service import Switch
from switch.journal import TxnRecord
from tests import test_service as ts
from tests.test_service import MERCHANT, TID, VISA, FakeAcquirer, call, fakes, record, request, reversal

SERVICE = """
[[vas]]
name = "shop"
type = "testplugin"
merchants = ["SHOP00000000001"]
deadline = {deadline}
"""

TOKEN_KEY_ENV = "PAYSWITCH_TEST_TOKEN_KEY"

# Every payload a plugin saw (the artefact scan reads them).
SEEN: list[tuple[str, dict]] = []


class Plugin:
    """A scripted in-process service: ``BEHAVIOUR`` decides each answer."""

    behaviour: dict = {}

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    async def call(self, moment: str, payload: dict) -> dict:
        SEEN.append((moment, payload))
        what = Plugin.behaviour.get(moment, {})
        if what == "hang":
            await asyncio.sleep(5)
        if what == "fail":
            raise RuntimeError("service down")
        if callable(what):
            return what(payload)
        return dict(what)


def plugin(cfg):
    return Plugin(cfg)


@pytest.fixture(autouse=True)
def plugin_registered(monkeypatch):
    SEEN.clear()
    Plugin.behaviour = {}
    monkeypatch.setenv(TOKEN_KEY_ENV, "77" * 32)
    monkeypatch.setenv(ts.KEY_ENV, ts.KEY_HEX)
    registered = vas_io.vas_types()
    monkeypatch.setattr(vas_io, "vas_types", lambda: {
        **registered, "testplugin": EntryPoint("testplugin", "tests.test_vas:plugin", vas_io.GROUP)})


def vas_config(deadline=0.05, extra=""):
    def make(**kw):
        text = ts.CONFIG.format(timeout=kw.get("timeout", 0.3), response_timeout=kw.get("response_timeout", 2.0),
                                key_env=ts.KEY_ENV)
        text += SERVICE.format(deadline=deadline) + extra
        text += f'\n[[token_keys]]\ngroup = "SHOP00000000001"\nversion = 2\nkey_env = "{TOKEN_KEY_ENV}"\n'
        if ts.JOURNAL_WRITER == "process":  # another process's memory: the outbox is read from a file, as the relay does
            path = os.path.join(tempfile.mkdtemp(prefix="payswitch-vas-"), "journal.sqlite")
            text = text.replace('url = "sqlite://:memory:"', f'url = "sqlite://{path}"')
        return config_mod.loads(text, "test_vas.toml")
    return make


def run(scenario, *, acquirers=None, deadline=0.05, extra=""):
    acquirers = acquirers if acquirers is not None else fakes()

    async def main():
        sw = Switch(vas_config(deadline, extra)(), acquirers=acquirers)
        try:
            await sw.start()
            return await scenario(sw)
        finally:
            await sw.close()

    return asyncio.run(main())


def tags(msg) -> dict:
    return parse_tlv48(msg[48]) if 48 in msg else {}


async def outbox(sw) -> list[dict]:
    """The outbox as the relay reads it (on the journal's writer thread: the journal is in memory)."""
    from switch.journal.outbox import read_after

    url = sw.cfg.journal.url
    if url.endswith(":memory:"):
        rows = await asyncio.wrap_future(sw.journal._submit(lambda: read_after(sw.journal._conn, 0), (), False))
    else:
        with contextlib.closing(sqlite3.connect(f"file:{url.removeprefix('sqlite://')}?mode=ro", uri=True)) as conn:
            rows = read_after(conn, 0)
    return [{"id": r.id, "merchant": r.merchant_id, "event": r.event, **json.loads(r.body)} for r in rows]


def ten_percent(p):
    return {"amount": p["amount"] * 9 // 10, "line": f"COUPON {p['coupon']} -10%"} if p["coupon"] else {}


# -- before authorization: coupons ---------------------------------------------------


def test_before_authorization_runs_nothing_for_a_merchant_without_a_service_then():
    """VasHook.before returns what the engine runs: nothing (no generator) for a merchant
    without a service at that moment, the services' calls for one with."""

    from switch.core.engine import Engine

    engine = Engine(vas_config()(), key=bytes(32))
    msg = ts.TERM.decode(request())
    assert engine.vas.before(msg, None, "OTHER0000000001", "card", {}, None) == ()
    assert isinstance(engine.vas.before(msg, None, MERCHANT, "card", {}, None), Generator)


def test_after_approval_runs_nothing_without_a_service_then_and_follows_a_reload():
    """VasHook.after answers at once (no generator) while no merchant has a service after
    approval, whatever it was before a reload; a reload that adds one, or takes it away,
    switches the call on and off for the next payment."""
    from types import SimpleNamespace

    from switch.core.engine import Engine

    def approved(flight, kind="card", tlv=None):
        rec = SimpleNamespace(merchant_id=MERCHANT, rrn="000000000001", customer_token=None)
        req = SimpleNamespace(kind=kind, merchant_id=MERCHANT, mti="0200", processing_code="000000",
                              terminal_id=TID, amount=2500, currency="978", tlv={})
        result = SimpleNamespace(tlv=tlv or {}, response_code="00", uncertain=False, buyer_id=None)
        return engine.vas.after(rec, req, result, "00", False, flight)

    plain = config_mod.loads(ts.CONFIG.format(timeout=0.3, response_timeout=2.0, key_env=ts.KEY_ENV), "plain.toml")
    engine = Engine(plain, key=bytes(32))
    acquirer_tags = {"XY": "1"}
    out = approved(SimpleNamespace(vas_tlv={}), tlv=acquirer_tags)
    assert out == ({"XY": "1"}, None) and out[0] is not acquirer_tags
    engine.apply(vas_config()())
    assert isinstance(approved(SimpleNamespace(vas_tlv={})), Generator)
    engine.apply(plain)
    assert approved(SimpleNamespace(vas_tlv={})) == ({}, None)
    # A payment whose coupon was taken before the reload still prints its lines.
    assert approved(SimpleNamespace(vas_tlv={"DS": "000000000250", "LY": "COUPON -10%"})) == (
        {"DS": "000000000250", "LY": "COUPON -10%"}, None)
    assert approved(None) == ({}, None)


def test_coupon_lowers_what_the_acquirer_sees_the_journal_holds_the_terminal_hears_and_the_0500_counts():
    Plugin.behaviour = {"before": ten_percent}

    async def scenario(sw):
        resp = await call(sw, request(amount="000000010000", f48=build_tlv48({"CP": "SPRING10"})))
        assert resp[39] == "00"
        assert resp[4] == "000000009000"  # field 4: the amount actually authorized
        assert tags(resp)["DS"] == "000000001000"
        assert "COUPON SPRING10 -10%" in tags(resp)["LY"]
        sent = sw.acquirers["bank-a"].authorized[0][0]
        assert sent.amount == 9000
        rec = await record(sw, "000001")
        assert rec.amount == 9000
        # Section 3 0500: the totals are the authorized amounts.
        settled = await call(sw, ts.settlement("000002", debits=1, debit_amount=9000))
        assert settled[39] == "00"

    run(scenario)


def test_a_retransmission_gets_the_same_discounted_answer_and_the_service_is_asked_once():
    Plugin.behaviour = {"before": ten_percent}

    async def scenario(sw):
        body = request(amount="000000010000", f48=build_tlv48({"CP": "SPRING10"}))
        first = await sw.handle(body)
        again = await sw.handle(body)
        assert first == again
        assert sum(1 for moment, _ in SEEN if moment == "before") == 1
        assert len(sw.acquirers["bank-a"].authorized) == 1

    run(scenario)


def test_a_reversal_reverses_what_was_authorized():
    Plugin.behaviour = {"before": ten_percent}

    async def scenario(sw):
        await call(sw, request(amount="000000010000", f48=build_tlv48({"CP": "SPRING10"})))
        assert (await call(sw, reversal("000002", "000001")))[39] == "00"
        await ts.wait_state(sw, "000001", "reversed")
        original = sw.acquirers["bank-a"].reversed[0][0].original
        assert original.amount == 9000
        events = [e["event"] for e in await outbox(sw)]
        assert events == ["approved", "reversed"]

    run(scenario)


def test_a_refused_coupon_changes_only_the_receipt_line():
    Plugin.behaviour = {"before": lambda p: {"line": "COUPON EXPIRED"}}

    async def scenario(sw):
        resp = await call(sw, request(amount="000000010000", f48=build_tlv48({"CP": "OLD99"})))
        assert resp[39] == "00" and resp[4] == "000000010000"
        assert "DS" not in tags(resp) and tags(resp)["LY"] == "COUPON EXPIRED"
        assert sw.acquirers["bank-a"].authorized[0][0].amount == 10000

    run(scenario)


@pytest.mark.parametrize("bad", [{"amount": 0}, {"amount": 20000}, {"amount": "5"}, {"amount": -1}])
def test_a_nonsensical_amount_is_ignored(bad):
    Plugin.behaviour = {"before": bad}

    async def scenario(sw):
        resp = await call(sw, request(amount="000000010000"))
        assert resp[39] == "00" and resp[4] == "000000010000"
        assert sw.acquirers["bank-a"].authorized[0][0].amount == 10000

    run(scenario)


# -- deadlines and failures ----------------------------------------------------------


@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_hanging_service_never_delays_the_payment_beyond_its_deadline(moment):
    Plugin.behaviour = {moment: "hang"}

    async def scenario(sw):
        t0 = time.perf_counter()
        resp = await call(sw, request(amount="000000010000", f48=build_tlv48({"CP": "X10"})))
        took = time.perf_counter() - t0
        assert resp[39] == "00" and resp[4] == "000000010000"
        assert took < 0.05 + 0.1, took
        assert ts.sample(sw, "payswitch_vas_calls_total", service="shop", moment=moment, outcome="timeout") == 1

    run(scenario)


def test_a_service_that_is_down_changes_nothing_for_the_payment():
    Plugin.behaviour = {"before": "fail", "after": "fail"}

    async def scenario(sw):
        resp = await call(sw, request(amount="000000010000"))
        assert resp[39] == "00" and resp[4] == "000000010000" and 48 not in resp
        assert ts.sample(sw, "payswitch_vas_calls_total", service="shop", moment="before", outcome="error") == 1
        assert ts.sample(sw, "payswitch_vas_calls_total", service="shop", moment="after", outcome="error") == 1

    run(scenario)


# -- after approval: points ----------------------------------------------------------


def test_points_line_after_approval_never_for_declines_refunds_or_reversals():
    Plugin.behaviour = {"after": lambda p: {"line": f"+{p['amount'] // 100} PTS"}}
    bank_a = FakeAcquirer("bank-a", answers=[None, Result(response_code="51")])

    async def scenario(sw):
        ok = await call(sw, request(stan="000001", amount="000000002500"))
        assert tags(ok)["LY"] == "+25 PTS"
        declined = await call(sw, request(stan="000002", amount="000000002500"))
        assert declined[39] == "51" and 48 not in declined
        refund = await call(sw, request(stan="000003", pcode="200000", amount="000000001000"))
        assert refund[39] == "00" and "LY" not in tags(refund)
        await call(sw, reversal("000004", "000001"))
        assert [p["ref"] for moment, p in SEEN if moment == "after"] == [ok[37]]

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


# -- customer tokens -----------------------------------------------------------------


def test_customer_token_same_card_same_group_unrelated_elsewhere_and_journaled():
    async def scenario(sw):
        await call(sw, request(stan="000001"))
        await call(sw, request(stan="000002"))
        await call(sw, request(stan="000003", tid="OTHR0001", mid="SHOP00000000002"))
        a, b = await record(sw, "000001"), await record(sw, "000002")
        other = await record(sw, "000003", tid="OTHR0001")
        assert a.customer_token and a.customer_token == b.customer_token
        assert a.customer_token.startswith("t2")  # the group's key version
        assert other.customer_token is None  # no services there, no key configured for its group
        assert a.customer_token == customer_token(bytes.fromhex("77" * 32), 2, "card", VISA)
        assert customer_token(bytes.fromhex("78" * 32), 2, "card", VISA) != a.customer_token
        assert not re.search(r"\d{6}", a.customer_token)
        assert [p["token"] for _, p in SEEN][:1] == [a.customer_token]

    run(scenario)


def test_wallet_token_from_the_buyer_id():
    wallet = FakeAcquirer("wallet-a", answer=Result(response_code="00", auth_code="W00001", acquirer_ref="w-1",
                                                    buyer_id="o1234abcd"))

    async def scenario(sw):
        resp = await call(sw, request(pan=None, f22="031", f49="156",
                                      f48=build_tlv48({"BC": "281234567890123456"})))
        assert resp[39] == "00"
        rec = await record(sw, "000001")
        assert rec.customer_token == customer_token(bytes.fromhex("77" * 32), 2, "wallet", "o1234abcd")
        assert [e["customer_token"] for e in await outbox(sw)] == [rec.customer_token]

    run(scenario, acquirers=fakes(**{"wallet-a": wallet}))


# -- HTTP services: signed JSON on a keep-alive connection -----------------------------


def test_http_service_signed_requests_on_one_kept_alive_connection(tmp_path):
    secret = bytes(range(32))
    (tmp_path / "secret").write_text(secret.hex())
    seen = {"connections": 0, "bodies": []}

    async def handler(reader, writer):
        seen["connections"] += 1
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line)
            body = await reader.readexactly(int(headers["Content-Length"]))
            assert verify(secret, body, headers["X-Payswitch-Signature"], time.time())
            seen["bodies"].append(json.loads(body))
            answer = json.dumps({"line": "HELLO"} if seen["bodies"][-1]["moment"] == "after" else {}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(answer), answer))
            await writer.drain()

    async def scenario_with_server():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        extra = (f'\n[[vas]]\nname = "web"\ntype = "http"\nurl = "http://127.0.0.1:{port}"\n'
                 f'secret_file = "{tmp_path / "secret"}"\nmerchants = ["SHOP00000000001"]\ndeadline = 0.5\n')
        sw = Switch(vas_config(0.05, extra)(), acquirers=fakes())
        try:
            await sw.start()
            for stan in ("000001", "000002"):
                resp = await call(sw, request(stan=stan))
                assert tags(resp)["LY"] == "HELLO"
        finally:
            await sw.close()
            server.close()

    asyncio.run(scenario_with_server())
    assert seen["connections"] == 1
    assert [b["moment"] for b in seen["bodies"]] == ["before", "after", "before", "after"]
    assert set(seen["bodies"][0]) == {"moment", "ref", "token", "merchant", "terminal", "amount", "currency",
                                      "kind", "coupon"}


def test_signatures_verify_and_refuse_tampering_and_old_timestamps():
    body = b'{"a":1}'
    header = sign(b"k" * 32, body, 1_800_000_000)
    assert verify(b"k" * 32, body, header, 1_800_000_010)
    assert not verify(b"k" * 32, body + b" ", header, 1_800_000_010)
    assert not verify(b"j" * 32, body, header, 1_800_000_010)
    assert not verify(b"k" * 32, body, header, 1_800_001_000)
    assert not verify(b"k" * 32, body, "garbage", 1_800_000_010)


# -- events and the artefact scan ----------------------------------------------------


PAN_LIKE = re.compile(r"\d{13,19}")


def test_outbox_has_every_outcome_and_no_card_data_anywhere_a_partner_or_service_sees():
    Plugin.behaviour = {"before": ten_percent, "after": {"line": "+1"}}
    bank_a = FakeAcquirer("bank-a", answers=[None, Result(response_code="05")])

    async def scenario(sw):
        await call(sw, request(stan="000001", amount="000000010000", f48=build_tlv48({"CP": "A10"}),
                               f35=VISA + "=30121010000000000000"))
        await call(sw, request(stan="000002"))
        await call(sw, reversal("000003", "000001"))
        await call(sw, ts.settlement("000004"))
        events = await outbox(sw)
        assert [e["event"] for e in events] == ["approved", "declined", "reversed", "settled"]
        assert events[0]["amount"] == 9000 and events[0]["pan_masked"] == "476173******0119"
        assert events[3]["totals"] is not None
        assert [e["id"] for e in events] == sorted(e["id"] for e in events)
        for text in [json.dumps(e) for e in events] + [json.dumps(p) for _, p in SEEN]:
            assert VISA not in text and "=3012" not in text
            assert not PAN_LIKE.search(text.replace(MERCHANT, "")), text

    run(scenario, acquirers=fakes(**{"bank-a": bank_a}))


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize("bad, where", [
    ('[[vas]]\nname = "x"\nmerchants = ["SHOP00000000001"]\nurl = "ftp://a"\nsecret_env = "S"\n', "vas[1].url"),
    ('[[vas]]\nname = "x"\nmerchants = ["SHOP00000000001"]\nurl = "http://a"\n', "vas[1]"),
    ('[[vas]]\nname = "x"\ntype = "p"\nmerchants = ["NOSUCHMERCHANT1"]\n', "vas[1].merchants[0]"),
    ('[[vas]]\nname = "x"\ntype = "p"\nmerchants = []\ndeadline = 2.0\n', "vas[1].deadline"),
    ('[[vas]]\nname = "x"\ntype = "p"\nmerchants = []\nmoments = ["during"]\n', "vas[1].moments[0]"),
    ('[[vas]]\nname = "shop"\ntype = "p"\nmerchants = []\n', "vas[1].name"),
])
def test_bad_service_configuration_is_named_by_key_path(bad, where):
    with pytest.raises(config_mod.ConfigError, match=re.escape(f"at `$.{where}`")):
        vas_config(extra="\n" + bad)()


# -- buyer ids from the wallet simulators --------------------------------------------


def test_both_wallet_simulators_answer_a_buyer_id_that_the_adapters_read():
    from adapters.wallet import messages, sandbox, signing

    def ledger():
        return sandbox.Ledger(confirm_delay=6.0, cancel_retries=0)

    merchant_private, merchant_public = signing.generate_rsa_pem(1024)
    wallet_private, wallet_public = signing.generate_rsa_pem(1024)
    tp = sandbox.TradePayWallet(ledger(), signing.RsaSigner(wallet_private), signing.RsaVerifier(merchant_public))
    tp_codec = messages.TradePayCodec("2021", signing.RsaSigner(merchant_private), signing.RsaVerifier(wallet_public))

    def tp_pay(order_no, code, now=0.0, call="pay"):
        biz = {"out_trade_no": order_no, **({"auth_code": code, "total_amount": "1.00"} if call == "pay" else {})}
        _, answer = tp.handle("POST", messages.TRADEPAY_PATH, tp_codec.request(call, biz, "t"), now)
        return tp_codec.reply(call, answer, order_no)

    first, again, other = tp_pay("A1", "281234567890120006"), tp_pay("A2", "281234567890129906"), \
        tp_pay("A3", "289999999999990006")
    assert first.buyer_id and first.buyer_id == again.buyer_id != other.buyer_id
    tp_pay("A4", "281234567890120001")  # confirmed later: the query carries the buyer
    assert tp_pay("A4", None, 6.0, call="query").buyer_id == first.buyer_id

    secret = b"0123456789abcdef0123456789abcdef"
    mp = sandbox.MicroPayWallet(ledger(), secret)
    mp_codec = messages.MicroPayCodec("wx1", "1900", secret)
    body = mp_codec.request({"out_trade_no": "M1", "auth_code": "131234567890120006", "total_fee": "100"}, "n")
    _, answer = mp.handle("POST", messages.MICROPAY_PATHS["pay"], body, 0.0)
    reply = mp_codec.reply("pay", answer, "M1")
    assert reply.buyer_id and reply.buyer_id.startswith("o")


def test_bundled_service_types_are_the_ones_pyproject_registers():
    import tomllib
    from pathlib import Path

    with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
        registered = tomllib.load(f)["project"]["entry-points"]["payswitch.vas"]
    assert registered == vas_io.BUNDLED


def test_an_unknown_service_type_is_named_by_key_path():
    cfg = vas_config(extra='\n[[vas]]\nname = "x"\ntype = "nosuchtype"\nmerchants = []\n')()
    with pytest.raises(config_mod.ConfigError, match=re.escape("unknown value-added service type 'nosuchtype'")):
        vas_io.Services(cfg)
