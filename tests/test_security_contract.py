"""One contract, two modules: the software module and the HSM client against ``payswitch sim hsm``.

The simulator runs as its own process (trio), as in production an HSM is
another machine; the client is the switch's asyncio one.
"""
import asyncio
import os
import subprocess
import sys

import pytest

from switch.io.hsm import HsmModule, KeyRecord
from switch.security import keys, pinblock, sandbox, terminal
from switch.security.keystore import Entry
from switch.security.ciphers import tdes_decrypt, tdes_encrypt
from switch.security.mac import kcv, terminal_mac
from switch.security.module import (
    CheckValueMismatch,
    DukptKey,
    KsnError,
    ModuleUnavailable,
    SecurityModule,
    SessionKey,
    UnknownKey,
    WrongKeyKind,
)

PAN = "4761739001010010"
TMK = {"tdes": bytes.fromhex(sandbox.KEYS["demo-tmk-tdes"][2]), "aes": bytes.fromhex(sandbox.KEYS["demo-tmk-aes"][2])}
BDK = bytes.fromhex(sandbox.KEYS["demo-bdk-tdes"][2])
ZPK = {a: bytes.fromhex(k) for a, k in sandbox.ZPKS.items()}
KSN = "FFFF9876543210E0000A"
ZMK = bytes.fromhex("89E88CF7931444F334BD7547FC3F380C")
AES_BDK = bytes.fromhex("FEDCBA9876543210F1F1F1F1F1F1F1F1")  # X9.24-3 test BDK
AES_KSN = "123456789012345600000005"


@pytest.fixture(scope="module")
def hsm_sim():
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [sys.executable, "-m", "switch.cli", "sim", "hsm", "--sandbox", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    line = proc.stdout.readline()
    assert line.startswith("listening on "), proc.stderr.read()
    host, port = line.split()[-1].rsplit(":", 1)
    yield host, int(port)
    proc.terminate()
    proc.wait(timeout=10)


def _hsm_table():
    table = {n: KeyRecord(**e) for n, e in sandbox.hsm_key_table().items()}
    from switch.security.thales_host import Lmk, key_table_entry

    table["zmk-x"] = KeyRecord(**key_table_entry(Lmk(sandbox.HSM_LMK_HEX), "zmk", "tdes", ZMK))
    table["bdk-aes"] = KeyRecord(**key_table_entry(Lmk(sandbox.HSM_LMK_HEX), "bdk", "aes", AES_BDK))
    return table


@pytest.fixture(params=["software", "hsm"])
def make_module(request):
    if request.param == "software":
        def make():
            mod = sandbox.module()
            mod._keys["zmk-x"] = Entry("zmk-x", "zmk", "tdes", kcv(ZMK, "tdes"), ZMK)
            mod._keys["bdk-aes"] = Entry("bdk-aes", "bdk", "aes", kcv(AES_BDK, "aes"), AES_BDK)
            return mod
        return make
    host, port = request.getfixturevalue("hsm_sim")
    return lambda: HsmModule([(host, port)], _hsm_table(), timeout=5.0)


def run(make, body):
    async def main():
        mod = make()
        try:
            return await body(mod)
        finally:
            if hasattr(mod, "close"):
                await mod.close()
    return asyncio.run(main())


async def sign_on(mod, terminal_id, algorithm):
    tak_name, tpk_name = keys.session_key_names(terminal_id)
    answer = await mod.generate_session_keys(f"demo-tmk-{algorithm}", tak_name, tpk_name)
    tak, tpk = terminal.session_keys(TMK[algorithm], algorithm, answer.field48())
    return SessionKey(tak_name), SessionKey(tpk_name), tak, tpk


@pytest.mark.parametrize("algorithm", ["tdes", "aes"])
def test_sign_on_mac_and_pin_purchase(make_module, algorithm):
    async def body(mod):
        assert isinstance(mod, SecurityModule)
        tak_ref, tpk_ref, tak, tpk = await sign_on(mod, "SEC00001", algorithm)
        data = b"0200 MTI to the byte before field 64"
        mac = terminal_mac(tak, data, algorithm)
        assert await mod.verify_mac(tak_ref, data, mac)
        assert not await mod.verify_mac(tak_ref, data + b"x", mac)
        assert not await mod.verify_mac(tak_ref, data, mac[:7])
        assert await mod.generate_mac(tak_ref, data) == mac
        block = terminal.pin_block("1234", PAN, tpk, algorithm)
        out = await mod.translate_pin(tpk_ref, block, PAN, "zpk-bank-a", 0)
        assert pinblock.decode(tdes_decrypt(ZPK["bank-a"], out), PAN) == (0, "1234")
        with pytest.raises(pinblock.PinBlockError):
            await mod.translate_pin(tpk_ref, block, PAN, "zpk-bank-a", 1)
    run(make_module, body)


def test_dukpt_mac_and_pin(make_module):
    async def body(mod):
        mac_key, pin_key, algorithm = terminal.dukpt_keys(BDK, KSN)
        ref = DukptKey("demo-bdk-tdes", KSN)
        data = b"0200 request bytes"
        assert await mod.verify_mac(ref, data, terminal_mac(mac_key, data, algorithm))
        assert not await mod.verify_mac(ref, data, terminal_mac(pin_key, data, algorithm))
        response_mac = await mod.generate_mac(ref, b"0210 answer")
        assert response_mac == terminal_mac(mac_key, b"0210 answer", "tdes")  # section 8: the same key
        for fmt in (0, 3):
            clear = pinblock.encode_format0("4321", PAN) if fmt == 0 else pinblock.encode_format3("4321", PAN)
            out = await mod.translate_pin(ref, tdes_encrypt(pin_key, clear), PAN, "zpk-bank-b", 0)
            assert pinblock.decode(tdes_decrypt(ZPK["bank-b"], out), PAN) == (0, "4321")
        with pytest.raises(KsnError):
            await mod.verify_mac(DukptKey("demo-bdk-tdes", "FFFF9876543210E007FF"), data, bytes(8))
    run(make_module, body)


def test_aes_dukpt_mac_and_format4_pin(make_module):
    async def body(mod):
        mac_key, pin_key, algorithm = terminal.dukpt_keys(AES_BDK, AES_KSN)
        assert algorithm == "aes"
        ref = DukptKey("bdk-aes", AES_KSN)
        assert await mod.verify_mac(ref, b"request", terminal_mac(mac_key, b"request", "aes"))
        assert not await mod.verify_mac(ref, b"request!", terminal_mac(mac_key, b"request", "aes"))
        block = terminal.pin_block("24680", PAN, pin_key, "aes")
        out = await mod.translate_pin(ref, block, PAN, "zpk-bank-a", 0)
        assert pinblock.decode(tdes_decrypt(ZPK["bank-a"], out), PAN) == (0, "24680")
        with pytest.raises(pinblock.PinBlockError):
            await mod.translate_pin(DukptKey("bdk-aes", "123456789012345600000006"), block, PAN, "zpk-bank-a", 0)
    run(make_module, body)


def test_format3_accepted_or_refused_by_policy(make_module):
    async def body(mod):
        _, tpk_ref, _, tpk = await sign_on(mod, "SEC00002", "tdes")
        block = tdes_encrypt(tpk, pinblock.encode_format3("55555", PAN))
        out = await mod.translate_pin(tpk_ref, block, PAN, "zpk-cup", 3)
        assert pinblock.decode(tdes_decrypt(ZPK["cup"], out), PAN) == (3, "55555")
        with pytest.raises(pinblock.PinBlockError):
            await mod.translate_pin(tpk_ref, block, PAN, "zpk-cup", 0, accept=(0,))
        with pytest.raises(pinblock.PinBlockError):  # garbage never decodes
            await mod.translate_pin(tpk_ref, bytes.fromhex("00" * 8), PAN, "zpk-cup", 0)
    run(make_module, body)


def test_import_zpk_under_zmk_with_check_value(make_module):
    new_zpk = bytes.fromhex("F039121BEC83D26B169BDCD5B22AAF8F")
    under = keys.wrap(ZMK, "tdes", new_zpk, "tdes")

    async def body(mod):
        with pytest.raises(CheckValueMismatch):
            await mod.import_key("zpk-new", "zpk", "tdes", "zmk-x", under, "ABCDEF")
        with pytest.raises(UnknownKey):
            await mod.key_info("zpk-new")
        info = await mod.import_key("zpk-new", "zpk", "tdes", "zmk-x", under, kcv(new_zpk, "tdes"))
        assert info.kcv == kcv(new_zpk, "tdes") == (await mod.key_info("zpk-new")).kcv
        # ZPK -> ZPK into the imported key
        block = tdes_encrypt(ZPK["bank-a"], pinblock.encode_format0("1234", PAN))
        out = await mod.translate_pin(SessionKey("zpk-bank-a"), block, PAN, "zpk-new", 0)
        assert pinblock.decode(tdes_decrypt(new_zpk, out), PAN) == (0, "1234")
    run(make_module, body)


def test_wrong_keys_and_diagnostics(make_module):
    async def body(mod):
        with pytest.raises(WrongKeyKind):
            await mod.verify_mac(SessionKey("zpk-bank-a"), b"x", bytes(8))
        with pytest.raises(WrongKeyKind):
            await mod.translate_pin(SessionKey("zpk-bank-a"), bytes(8), PAN, "demo-tmk-tdes", 0)
        with pytest.raises(UnknownKey):
            await mod.generate_session_keys("nope", "a", "b")
        diag = await mod.diagnostics()
        assert diag.ok and diag.keys >= len(sandbox.KEYS)
    run(make_module, body)


def test_hsm_diagnostics_name_the_simulator(hsm_sim):
    async def body(mod):
        diag = await mod.diagnostics()
        assert diag.module == "hsm" and "PS-SIM-01" in diag.detail
    run(lambda: HsmModule([hsm_sim], _hsm_table()), body)


def test_hsm_commands_in_flight_together(hsm_sim):
    async def body(mod):
        tak_ref, _, tak, _ = await sign_on(mod, "SEC00009", "tdes")
        datas = [b"message %d" % i for i in range(50)]
        results = await asyncio.gather(*(mod.verify_mac(tak_ref, d, terminal_mac(tak, d, "tdes")) for d in datas))
        assert all(results)
    run(lambda: HsmModule([hsm_sim], _hsm_table()), body)


def test_hsm_unreachable_falls_back_then_fails_clearly(hsm_sim):
    from tests.e2e import free_port

    dead = ("127.0.0.1", free_port())

    async def fallback(mod):
        return (await mod.diagnostics()).ok

    assert run(lambda: HsmModule([dead, hsm_sim], _hsm_table()), fallback)

    async def nothing(mod):
        with pytest.raises(ModuleUnavailable, match="HSM unreachable"):
            await mod.diagnostics()

    run(lambda: HsmModule([dead], _hsm_table(), timeout=1.0), nothing)


def test_hsm_silent_peer_times_out():
    async def body():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        mod = HsmModule([("127.0.0.1", port)], _hsm_table(), timeout=0.05)
        with pytest.raises(ModuleUnavailable, match="did not answer NC within 0.05 s"):
            await mod.diagnostics()
        await mod.close()
        server.close()
    asyncio.run(body())


def test_hsm_sim_log_never_quotes_pin_blocks_or_keys(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [sys.executable, "-m", "switch.cli", "sim", "hsm", "--sandbox", "--port", "0", "-v"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        host, port = proc.stdout.readline().split()[-1].rsplit(":", 1)
        seen = []

        async def body(mod):
            _, tpk_ref, _, tpk = await sign_on(mod, "SEC00003", "tdes")
            block = terminal.pin_block("1234", PAN, tpk, "tdes")
            out = await mod.translate_pin(tpk_ref, block, PAN, "zpk-bank-a", 0)
            seen.extend([block.hex(), out.hex(), tpk.hex(), PAN, PAN[:-1][-12:]])
            seen.extend(r.token[1:] for r in mod._keys.values())

        run(lambda: HsmModule([(host, int(port))], _hsm_table()), body)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "CA" in err  # the command was logged
    for s in seen:
        assert s.lower() not in err.lower()


def test_write_sandbox_key_table(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = tmp_path / "table.json"
    done = subprocess.run([sys.executable, "-m", "switch.cli", "sim", "hsm", "--sandbox", "--write-key-table", str(out)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    from switch.io.hsm import load_key_table

    table = load_key_table(out)
    assert table["demo-tmk-tdes"].kcv == "08D7B4" and table["zpk-bank-a"].token.startswith("U")
    assert sandbox.KEYS["zpk-bank-a"][2].lower() not in out.read_text().lower()


def test_open_module_is_a_configuration_choice(tmp_path, hsm_sim):
    import json

    from switch.io.hsm import open_module
    from switch.security.config import HsmModuleConfig, Security
    from switch.security.software import SoftwareModule

    assert isinstance(open_module(sandbox.security_config()), SoftwareModule)
    table = tmp_path / "table.json"
    table.write_text(json.dumps(sandbox.hsm_key_table()))
    cfg = Security(module=HsmModuleConfig(endpoints=[f"{hsm_sim[0]}:{hsm_sim[1]}"], key_table=str(table)))
    mod = open_module(cfg)
    assert isinstance(mod, HsmModule)
    assert run(lambda: mod, lambda m: m.diagnostics()).ok
    assert open_module(Security()) is None


def test_hsm_client_on_uvloop(hsm_sim):
    """The switch runs on uvloop: the same client, the same answers."""
    import uvloop

    async def body():
        mod = HsmModule([hsm_sim], _hsm_table())
        try:
            tak_ref, tpk_ref, tak, tpk = await sign_on(mod, "SEC00010", "aes")
            assert await mod.verify_mac(tak_ref, b"data", terminal_mac(tak, b"data", "aes"))
            out = await mod.translate_pin(tpk_ref, terminal.pin_block("1234", PAN, tpk, "aes"), PAN, "zpk-bank-a", 0)
            assert pinblock.decode(tdes_decrypt(ZPK["bank-a"], out), PAN) == (0, "1234")
        finally:
            await mod.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(body())


@pytest.mark.parametrize("algorithm", ["tdes", "aes"])
def test_session_keys_exported_and_installed_in_a_new_module_instance(make_module, algorithm):
    """What the journal keeps of a terminal's session keys opens in the next process's module (a restart)."""
    names = keys.pending_key_names("SEC00001")

    async def body(mod):
        answer = await mod.generate_session_keys(f"demo-tmk-{algorithm}", *names)
        tak, tpk = terminal.session_keys(TMK[algorithm], algorithm, answer.field48())
        stored = await mod.export_keys(names, "SEC00001")
        assert [(k.kind, k.algorithm, k.kcv) for k in stored] == [("tak", algorithm, answer.tak_kcv),
                                                                  ("tpk", algorithm, answer.tpk_kcv)]
        for k in stored:  # never the clear key, in the blob or the repr
            assert tak.hex().upper() not in k.blob.upper() and tpk.hex().upper() not in k.blob.upper()
            assert k.blob not in repr(k)
        return tak, tpk, stored

    tak, tpk, stored = run(make_module, body)

    async def later(mod):  # another instance: nothing in memory
        current = keys.session_key_names("SEC00001")
        with pytest.raises(UnknownKey):
            await mod.key_info(current[0])
        await mod.install_keys(tuple(zip(names, stored)), "SEC00001")
        await mod.rename_keys(tuple(zip(names, current)))
        with pytest.raises(UnknownKey):
            await mod.key_info(names[0])
        data = b"0200 after a restart"
        assert await mod.verify_mac(SessionKey(current[0]), data, terminal_mac(tak, data, algorithm))
        block = terminal.pin_block("1234", PAN, tpk, algorithm)
        out = await mod.translate_pin(SessionKey(current[1]), block, PAN, "zpk-bank-a", 0)
        assert pinblock.decode(tdes_decrypt(ZPK["bank-a"], out), PAN) == (0, "1234")
        await mod.drop_keys(current + ("never-there",))
        with pytest.raises(UnknownKey):
            await mod.key_info(current[1])
        with pytest.raises(UnknownKey):
            await mod.rename_keys(((names[0], current[0]),))

    run(make_module, later)


def test_sealed_session_keys_open_only_for_their_terminal_and_master_key():
    from switch.security.module import ModuleKeyError, StoredKey
    from switch.security.software import SoftwareModule

    names = keys.pending_key_names("SEC00001")

    async def body():
        mod = sandbox.module()
        await mod.generate_session_keys("demo-tmk-tdes", *names)
        stored = await mod.export_keys(names, "SEC00001")
        with pytest.raises(ModuleKeyError, match="SEC00002"):  # copied to another terminal's row
            await sandbox.module().install_keys(tuple(zip(names, stored)), "SEC00002")
        with pytest.raises(ModuleKeyError, match="another master key"):
            await SoftwareModule({}, bytes(32)).install_keys(tuple(zip(names, stored)), "SEC00001")
        tak = stored[0]
        relabelled = StoredKey("tpk", tak.algorithm, tak.kcv, tak.blob)  # a TAK passed off as a TPK
        with pytest.raises(ModuleKeyError):
            await sandbox.module().install_keys(((names[1], relabelled),), "SEC00001")
        fresh = sandbox.module()
        with pytest.raises(ModuleKeyError):  # one bad key: none is installed
            await fresh.install_keys(((names[0], stored[0]), (names[1], relabelled)), "SEC00001")
        with pytest.raises(UnknownKey):
            await fresh.key_info(names[0])

    asyncio.run(body())


def test_hsm_late_answer_is_dropped_quietly_and_a_stray_one_is_logged(caplog):
    """The client's response mux (switch.core.inflight): the answer to a command that timed
    out is late and dropped; one under a header never sent is logged; the link goes on."""
    from switch.security import thales

    async def body():
        gave_up = asyncio.Event()
        first: list[str] = []

        async def serve(reader, writer):
            framer = thales.Framer()
            while data := await reader.read(4096):
                for frame_body in framer.feed(data):
                    req = thales.decode_request(frame_body)
                    answer = thales.encode_response(req.header, thales.response_code(req.code), "15")
                    if not first:
                        first.append(req.header)
                        await gave_up.wait()  # answered only once the client stopped waiting
                        stray = thales.encode_response("9999", thales.response_code(req.code), "15")
                        writer.write(answer + stray)
                    else:
                        writer.write(answer)

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        mod = HsmModule([("127.0.0.1", port)], _hsm_table(), timeout=0.5)
        try:
            with pytest.raises(ModuleUnavailable, match="did not answer NC"):
                await mod.diagnostics()
            gave_up.set()
            # Answered after the late and the stray answer on the same connection.
            assert (await mod.diagnostics()).ok is False
        finally:
            await mod.close()
            server.close()
        return first[0]

    with caplog.at_level("DEBUG", logger="payswitch.hsm"):
        header = asyncio.run(body())
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["HSM answered a command it was never sent (header 9999): dropped"], warnings
    assert header != "9999"
