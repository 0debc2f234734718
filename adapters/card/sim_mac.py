"""The simulated acquirer's side of host-link MACs (the simulator's ``--mac``)."""
from __future__ import annotations

from typing import Any


class HostMacCheck:
    """The acquirer's side of host-link MACs, with the clear key a simulator holds.

    The framing is the switch's own (:mod:`switch.core.macwire`), the MAC
    the primitive of :mod:`switch.security.mac`: what the switch computes in
    its security module, computed here independently.
    """

    def __init__(self, algorithm: str, key: bytes, codec: Any) -> None:
        from switch.security.mac import HOST_MAC_KEY_ALGORITHM, TerminalMac

        if algorithm not in HOST_MAC_KEY_ALGORITHM:
            raise ValueError(f"MAC algorithm must be one of {', '.join(HOST_MAC_KEY_ALGORITHM)}, got {algorithm!r}")
        self.algorithm = algorithm
        self._mac = TerminalMac(key, HOST_MAC_KEY_ALGORITHM[algorithm])
        self.codec = codec

    def verify(self, msg: Any, payload: bytes) -> str:
        """"" when the MAC of ``msg`` (decoded from ``payload``) is right, else why not."""
        from switch.core.macwire import covered
        from switch.security.mac import same_mac

        part = covered(self.codec, msg, payload)
        if isinstance(part, str):
            return part
        return "" if same_mac(self._mac(part[0]), part[1]) else "wrong MAC"

    def encode(self, fields: dict) -> bytes:
        from switch.core.macwire import signed_wire, unsigned_wire

        data, field = unsigned_wire(self.codec, fields)
        return signed_wire(self.codec, data, field, self._mac(data))
