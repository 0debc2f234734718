"""What the transaction engine asks its driver to do, and what it tells it.

The engine (:mod:`switch.core.engine`) runs every request as a generator: it
yields one of these commands, and the driver sends back the command's result
(or throws its exception in).  The asyncio driver (``switch.io.service``)
executes them against the real journal and adapters; the deterministic
simulation (``tests/sim``) against simulated ones on a virtual clock.  The
engine itself never waits, sleeps or reads a socket.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from switch.core.acquirer import Request


class Op:
    """A journal operation: ``journal.<name>(*args, **kwargs)``; result: its value."""

    __slots__ = ("name", "args", "kwargs")

    def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.name = name
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"Op({self.name})"


def new_op(name: str, args: tuple, kwargs: dict) -> Op:
    """``Op(name, *args, **kwargs)`` from the tuple and the dict themselves, taken as they are
    (the caller's to give away): compiled, a C call that makes neither again (commands.pxd)."""
    op = Op.__new__(Op)
    op.name = name
    op.args = args
    op.kwargs = kwargs
    return op


class Call:
    """``acquirer.authorize(request, timeout)``; result: a Result.

    The driver enforces the deadline: an adapter that has not answered by
    ``timeout`` plus a grace period is abandoned with :class:`Overrun` thrown in.
    """

    __slots__ = ("acquirer", "request", "timeout")

    def __init__(self, acquirer: str, request: Request, timeout: float) -> None:
        self.acquirer = acquirer
        self.request = request
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Call({self.acquirer}, txn {self.request.txn_id})"


class Reverse(Call):
    """``acquirer.reverse(request, timeout)``; result: REVERSED, NOT_FOUND, RETRY (or a bool)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Reverse({self.acquirer}, txn {self.request.txn_id})"


class Sec:
    """``await module.<method>(*args)`` on the security module (spec 8); result: its value.

    Raises what the module raises (``switch.security.module``); with no module
    configured, :class:`~switch.security.module.ModuleUnavailable`.
    """

    __slots__ = ("method", "args")

    def __init__(self, method: str, *args: Any) -> None:
        self.method = method
        self.args = args

    def __repr__(self) -> str:  # never the arguments: they may hold a PIN block
        return f"Sec({self.method})"


class Pause:
    """Come back after ``seconds``; result: None.  Only for a request whose
    original is in flight in another worker process (:mod:`switch.core.elsewhere`)
    and a completion waiting for the reversal of an earlier one (:mod:`switch.core.completion`)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"Pause({self.seconds:.3f})"


class Wait:
    """Wait for the request in flight under the same key; result: its :class:`Answer`."""

    __slots__ = ("flight",)

    def __init__(self, flight: "Flight") -> None:
        self.flight = flight


class Vas:
    """Call value-added services (:mod:`switch.core.vas`) with ``payload``; result: name → answer.

    ``moment``: ``before`` (authorization) or ``after`` (approval).  The
    driver calls the named services at once and gives each its own deadline
    (at most ``deadline`` seconds in all); a service that failed or missed
    it maps to its exception (or None).  Never card data in ``payload``.
    """

    __slots__ = ("moment", "services", "payload", "deadline")

    def __init__(self, moment: str, services: tuple[str, ...], payload: dict, deadline: float) -> None:
        self.moment = moment
        self.services = services
        self.payload = payload
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"Vas({self.moment}, {', '.join(self.services)})"


class Overrun(Exception):
    """Thrown into the engine when an adapter broke its own deadline."""


class Stopping(Overrun):
    """Thrown into the engine for an acquirer call given up because the switch is stopping
    (its drain budget spent): an uncertain outcome like an overrun, but no fault of anyone's."""


# The code of an Answer deliberately left unwritten (its body empty): the journal writer
# died holding its outcome's write (switch.core.engine.Engine._unanswered).
UNANSWERED = "none"


class Answer(NamedTuple):
    """What a request ends with: the bytes for the terminal and how to count them."""

    kind: str  # payment kind: card, wallet, citycard, network, settlement, unknown
    mclass: str  # message class label: auth, financial, reversal, settlement, network, other
    code: str  # field 39
    body: bytes  # the encoded response


class Flight:
    """A request being handled, under its key (41, 11, 7).

    A retransmission or repeat that arrives meanwhile waits for its answer;
    a reversal that arrives meanwhile marks it (section 6.1: it is answered
    68 and reversed if approved).  ``waiters`` belongs to the driver: it
    wakes them when the engine reports the flight done.
    """

    __slots__ = ("key", "digest", "mti", "kind", "txn_id", "answer", "error", "done", "decided", "reverse_requested",
                 "reverse_honoured", "waiters", "vas_tlv", "budget_from", "codec")

    def __init__(self, key: tuple[str, str, str], digest: str, mti: str, codec: Any = None) -> None:
        self.key = key
        self.digest = digest
        self.mti = mti
        # The dialect its answer is encoded in (its listener's): a retransmission that
        # waits for it on another listener gets that answer in its own (spec 7).
        self.codec = codec
        self.kind: str | None = None  # payment kind once classified (the in-flight gauge's label)
        self.txn_id: int | None = None
        self.answer: Answer | None = None
        self.error: BaseException | None = None
        self.done = False
        self.decided = False  # its outcome is being journaled: a reversal now waits for it
        self.reverse_requested = False  # a terminal's 0400 named it meanwhile
        self.reverse_honoured = False  # ... and its authorization saw that before deciding
        self.waiters: list = []
        self.vas_tlv: dict[str, str] = {}  # field 48 tags from the value-added services (DS, LY)
        # When its time to be answered started, if not when its record was journaled: a request
        # journaled, never sent, and handled again on a retransmission (section 6).
        self.budget_from = 0.0
