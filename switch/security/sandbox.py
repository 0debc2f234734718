"""The sandbox's keys (spec section 7): public values, for the sandbox ONLY.

Everything here is published on purpose so that integrators can compute
MACs and PIN blocks by hand. A deployment that loads this store, or uses
this master key, has no security at all; ``check-config`` outside the
sandbox must refuse it.

The bundled key store ``sandbox_keys.json`` (master key in
``sandbox_master.key``) holds the spec 7 demo keys and
a ZPK and a ZAK (zone MAC key, host-link MACs) per sandbox acquirer, sealed
under :data:`MASTER_KEY_HEX`.
Regenerate it with ``python -m switch.security.sandbox``.
"""
from __future__ import annotations

from pathlib import Path

from . import keystore
from .config import AcquirerKeys, MerchantSecurity, Security, SoftwareModuleConfig, TerminalKeys
from .mac import kcv

__all__ = ["MASTER_KEY_HEX", "STORE", "KEYS", "ZPKS", "ZAKS", "PIN", "module", "security_config"]

# The sandbox master key: public, sandbox only.
MASTER_KEY_HEX = "5341 4E44 424F 5820 4F4E 4C59 202D 206E 6F74 2061 2073 6563 7265 7421 2121 2121".replace(" ", "")
STORE = Path(__file__).with_name("sandbox_keys.json")
MASTER_KEY_FILE = Path(__file__).with_name("sandbox_master.key")  # holds MASTER_KEY_HEX

# name -> (kind, algorithm, clear key hex): spec 7 demo keys and the sandbox acquirers' ZPKs.
KEYS: dict[str, tuple[str, str, str]] = {
    "demo-tmk-tdes": ("tmk", "tdes", "0123456789ABCDEFFEDCBA9876543210"),
    "demo-tmk-aes": ("tmk", "aes", "2B7E151628AED2A6ABF7158809CF4F3C"),
    "demo-bdk-tdes": ("bdk", "tdes", "0123456789ABCDEFFEDCBA9876543210"),
    "zpk-bank-a": ("zpk", "tdes", "A1A2A3A4A5A6A7A8B1B2B3B4B5B6B7B8"),
    "zpk-bank-b": ("zpk", "tdes", "C1C2C3C4C5C6C7C8D1D2D3D4D5D6D7D8"),
    "zpk-cup": ("zpk", "tdes", "E1E2E3E4E5E6E7E8F1F2F3F4F5F6F7F8"),
    "zak-bank-a": ("zak", "tdes", "2A2B2C2D2E2F20212A2B2C2D2E2F2021"),
    "zak-bank-b": ("zak", "aes", "3A3B3C3D3E3F30313A3B3C3D3E3F3031"),
    "zak-cup": ("zak", "tdes", "4A4B4C4D4E4F40414A4B4C4D4E4F4041"),
}
# The clear ZPK each sandbox acquirer checks PIN blocks with (its simulator's view).
ZPKS = {"bank-a": KEYS["zpk-bank-a"][2], "bank-b": KEYS["zpk-bank-b"][2], "cup": KEYS["zpk-cup"][2]}
# The clear ZAK each sandbox acquirer MACs with, and its host MAC algorithm (the
# ``mac`` of its ``[[acquirers]]`` entry): the simulator's view, ``--mac``.
ZAKS = {"bank-a": ("tdes-retail", KEYS["zak-bank-a"][2]), "bank-b": ("aes-cmac", KEYS["zak-bank-b"][2]),
        "cup": ("tdes-retail", KEYS["zak-cup"][2])}
PIN = "1234"  # the right PIN for every sandbox card (spec 7)


def module():
    from .software import SoftwareModule

    return SoftwareModule.from_store(STORE, bytes.fromhex(MASTER_KEY_HEX))


def security_config() -> Security:
    """The sandbox's second demo merchant (spec 7) and the sandbox acquirers' ZPKs."""
    return Security(
        module=SoftwareModuleConfig(key_store=str(STORE), master_key_file=str(MASTER_KEY_FILE)),
        merchants=[
            MerchantSecurity(
                merchant="DEMOSEC00000001",
                policy="mac+pin",
                terminals=[
                    TerminalKeys(terminals="SEC00001-SEC00099", tmk="demo-tmk-tdes", pin_formats=[0, 3]),
                    TerminalKeys(terminals="SEC00100-SEC00199", tmk="demo-tmk-aes", pin_formats=[4]),
                    TerminalKeys(terminals="SEC00200-SEC00299", bdk="demo-bdk-tdes", pin_formats=[0, 3]),
                ],
            )
        ],
        acquirers=[AcquirerKeys(acquirer=a, zpk=f"zpk-{a}", pin_format=0) for a in ZPKS],
    )


def build_store(path: Path = STORE) -> None:
    path.unlink(missing_ok=True)
    MASTER_KEY_FILE.write_text(MASTER_KEY_HEX + "\n")
    master = bytes.fromhex(MASTER_KEY_HEX)
    keystore.create(path, master)
    for name, (kind, algorithm, clear) in KEYS.items():
        key = bytes.fromhex(clear)
        keystore.add(path, master, name, kind, algorithm, key, kcv(key, algorithm))


if __name__ == "__main__":
    build_store()
    print(f"wrote {STORE}")


# The HSM simulator's LMK in the sandbox: public, sandbox only (64 hex digits, see thales_host.Lmk).
HSM_LMK_HEX = "0123456789ABCDEFFEDCBA9876543210" + "000102030405060708090A0B0C0D0E0F"


def hsm_key_table(lmk_hex: str = HSM_LMK_HEX) -> dict[str, dict[str, str]]:
    """The sandbox keys as cryptograms under the simulator's LMK: the HSM client's key table."""
    from .thales_host import Lmk, key_table_entry

    lmk = Lmk(lmk_hex)
    return {name: key_table_entry(lmk, kind, alg, bytes.fromhex(clear)) for name, (kind, alg, clear) in KEYS.items()}
