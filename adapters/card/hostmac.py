"""The MAC of a card host link: every message to the acquirer MACed, every message from it checked.

An acquirer configured with ``mac`` (``tdes-retail``: ISO 9797-1 algorithm
3, padding 1; ``aes-cmac``: CMAC truncated to 8 bytes) and ``mac_key`` (the
name of its zone MAC key, kind ``zak``, in the switch's security module)
gets a :class:`HostMac`.  Field 64 (128 when the message has fields above
64) carries the MAC of the encoded message from the MTI up to the MAC field:
the framing rules of terminal messages (:mod:`switch.core.macwire`), with the
acquirer's key instead of a terminal's.

The key never leaves the security module: :meth:`HostMac.encode` and
:meth:`HostMac.verify` hand it the bytes and get back a MAC or a verdict.
The switch passes its module in after opening it
(``HostLinkAcquirer.use_security_module``); a link that MACs and has no
module, or whose key is missing or of the wrong kind or algorithm, refuses to
start rather than send unMACed messages (an HSM that cannot be reached at
start-up is logged and the link tries: its sign-on fails until the HSM
answers).  The software module answers synchronously (``*_now``: no await,
no task), so a MAC adds the cost of the cipher and nothing else; an HSM adds
its round trip, and the link then checks what it receives one message at a
time, in order, in a task per connection.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from switch.core.macwire import covered, signed_wire, unsigned_wire
from switch.security.mac import HOST_MAC_KEY_ALGORITHM, host_mac_key_problem
from switch.security.module import ModuleUnavailable, SecurityModuleError, SessionKey

__all__ = ["HostMac", "HostMacError"]

log = logging.getLogger("payswitch.card")


class HostMacError(RuntimeError):
    """The link cannot MAC: no security module, or its key does not fit."""


class HostMac:
    """The MAC of one acquirer's host-link messages, through the security module."""

    __slots__ = ("acquirer", "algorithm", "key", "codec", "module", "_generate_now", "_verify_now")

    def __init__(self, acquirer: str, algorithm: str, key_name: str, codec: Any) -> None:
        if algorithm not in HOST_MAC_KEY_ALGORITHM:
            raise ValueError(f"acquirer {acquirer!r}: mac must be one of "
                             f"{', '.join(HOST_MAC_KEY_ALGORITHM)}, got {algorithm!r}")
        if not key_name:
            raise ValueError(f"acquirer {acquirer!r}: mac {algorithm!r} needs mac_key")
        self.acquirer = acquirer
        self.algorithm = algorithm
        self.key = SessionKey(key_name)
        self.codec = codec
        self.module: Any = None
        self._generate_now = self._verify_now = None

    def use(self, module: Any) -> None:
        """The switch's security module (None: none configured; :meth:`check` then refuses to start)."""
        self.module = module
        # The software module also answers synchronously: no await, no task, on every message.
        self._generate_now = getattr(module, "generate_mac_now", None)
        self._verify_now = getattr(module, "verify_mac_now", None)

    @property
    def immediate(self) -> bool:
        """Whether :meth:`encode_now` and :meth:`verify_now` may be used (an in-process module)."""
        return self._generate_now is not None and self._verify_now is not None

    def __repr__(self) -> str:
        return f"HostMac({self.acquirer!r}, {self.algorithm}, key {self.key.name!r})"

    async def check(self) -> None:
        """Before the first connection: the module holds the key, a zone MAC key of the right algorithm."""
        if self.module is None:
            raise HostMacError(f"acquirer {self.acquirer!r}: mac {self.algorithm!r} is configured but the "
                               "switch has no security module (security.module)")
        try:
            info = await self.module.key_info(self.key.name)
        except ModuleUnavailable as e:  # an HSM down now may be up for the sign-on: the link retries
            log.error("acquirer %s: mac_key %r not checked: %s", self.acquirer, self.key.name, e)
            return
        except SecurityModuleError as e:
            raise HostMacError(f"acquirer {self.acquirer!r}: mac_key {self.key.name!r}: {e}") from None
        problem = host_mac_key_problem(self.algorithm, info)
        if problem:
            raise HostMacError(f"acquirer {self.acquirer!r}: mac_key {self.key.name!r}: {problem}")

    async def encode(self, fields: Mapping[Any, Any]) -> bytes:
        """``fields`` (with ``"mti"``) encoded with its MAC.  Raises what the codec or the module raises."""
        data, field = unsigned_wire(self.codec, fields)
        mac = await self.module.generate_mac(self.key, data)
        return signed_wire(self.codec, data, field, mac)

    def encode_now(self, fields: Mapping[Any, Any]) -> bytes:
        """:meth:`encode` without awaiting (only when :attr:`immediate`)."""
        data, field = unsigned_wire(self.codec, fields)
        return signed_wire(self.codec, data, field, self._generate_now(self.key, data))

    async def verify(self, msg: Any, payload: bytes) -> str:
        """"" when ``msg`` (decoded from ``payload``) carries the right MAC; else why not.

        A module that cannot answer makes the message unauthenticated too: an
        answer nobody could check is never taken as an approval.
        """
        part = covered(self.codec, msg, payload)
        if isinstance(part, str):
            return part
        try:
            ok = await self.module.verify_mac(self.key, *part)
        except SecurityModuleError as e:
            return f"not checked: {type(e).__name__}: {e}"
        return "" if ok else "wrong MAC"

    def verify_now(self, msg: Any, payload: bytes) -> str:
        """:meth:`verify` without awaiting (only when :attr:`immediate`)."""
        part = covered(self.codec, msg, payload)
        if isinstance(part, str):
            return part
        try:
            ok = self._verify_now(self.key, *part)
        except SecurityModuleError as e:
            return f"not checked: {type(e).__name__}: {e}"
        return "" if ok else "wrong MAC"
