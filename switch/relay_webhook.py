"""One partner's webhook sink of the relay (:mod:`switch.events`): each event POSTed, signed, until the
partner takes it, and what its refusals mean.

A partner's answer other than 2xx says one of three things:

- *not now* (5xx, 408, 425, 429, no answer): the same event is tried again, with doubling waits
  (:func:`switch.relay_backoff.retried`), and the partner's later events wait behind it;
- *this partner's endpoint or our credentials for it are wrong* (:data:`REFUSING`: 401, 403, 404,
  405, 407, 410, 421, 426): the answer would be the same for every event, so parking would only
  park them all.  The partner's queue is *held*: the same event is tried again like a 5xx, one error
  line says so for the episode (not one per try), ``payswitch_events_partner_refusing{partner}`` is 1,
  and delivery goes on by itself, in order, once the partner takes an event;
- *this event is refused for good* (any other 4xx: 400, 409, 413, 415, 422, ...): the event is
  parked (the state file's ``parked`` table, ``payswitch_events_undeliverable_total``), not tried
  again, and the partner gets the next one (``payswitch relay redeliver`` sends it again).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from switch.core.vas import sign
from switch.journal.outbox import Event
from switch.relay_backoff import retried
from switch.relay_state import State

log = logging.getLogger("payswitch.relay")

SIGNATURE_HEADER = "X-Payswitch-Signature"
STOPPED = "stopped"  # what a delivery returns when the relay stopped before it got through

# Client errors that say "not now" rather than "never": tried again like a 5xx.
PASSING_4XX = frozenset({408, 425, 429})
# Client errors about the request's target or its credentials, the same for every event (RFC 9110):
# 401/407 credentials missing or wrong (ours, or a proxy's on the way), 403 the partner's access rules,
# 404/410 no such endpoint (a wrong or moved URL), 405 an endpoint that takes no POST, 421 a URL whose
# host that server does not serve, 426 a URL of the wrong protocol (http:// for https://).
REFUSING = frozenset({401, 403, 404, 405, 407, 410, 421, 426})


def refused_for_good(status: int) -> bool:
    """An answer about the event itself that no retry will change: a client error neither passing nor
    about the partner's endpoint or credentials (400, 409, 413, 415, 422, ...)."""
    return 400 <= status < 500 and status not in PASSING_4XX and status not in REFUSING


def body_of(event: Event) -> bytes:
    """The event as partners get it: the outbox body with its ``id``."""
    return json.dumps({"id": event.id, **json.loads(event.body)}, separators=(",", ":")).encode()


async def post(pool, secret: bytes, event: Event, body: bytes) -> int:
    """POST ``event`` to a partner's webhook once, signed; its HTTP status (a TransportError if none)."""
    headers = [(SIGNATURE_HEADER, sign(secret, body, int(time.time()))), ("X-Payswitch-Event-Id", str(event.id))]
    resp = await pool.request("POST", "" if pool.base_path else "/", body, timeout=10.0, headers=headers)
    return resp.status


class Hold:
    """Whether a partner refuses every event (its queue held), and since when.

    The relay keeps one per partner for its whole run: a sink that fails and
    starts again (:func:`switch.relay_backoff.supervised`) gets a new
    :class:`Webhook` but the same hold, so the answer that ends the hold
    still sets ``payswitch_events_partner_refusing`` back to 0 and says so.
    """

    __slots__ = ("refusing", "since")

    def __init__(self) -> None:
        self.refusing: str | None = None  # the refusal of the hold under way ("HTTP 404"), None: not held
        self.since = 0.0  # time.monotonic() of the hold's first refusal


class Webhook:
    """The partner's connection, and its :class:`Hold`."""

    def __init__(self, partner, secret: bytes, state: State, metrics, retry_max: float, stop: asyncio.Event,
                 hold: Hold | None = None) -> None:
        from adapters.wallet.http import ConnectionPool

        self.partner = partner.name
        self.sink = f"webhook:{partner.name}"
        self.granted = set(partner.merchants)
        self.secret = secret
        self.state = state
        self.metrics = metrics
        self.retry_max = retry_max
        self.stop = stop
        self.pool = ConnectionPool(partner.webhook, size=1)
        self.hold = Hold() if hold is None else hold

    async def deliver(self, event: Event) -> str | None:
        """``"sent"``, ``"parked"``, None when the event is not the partner's, or :data:`STOPPED`."""
        from adapters.wallet.http import TransportError

        if event.merchant_id not in self.granted:
            return None  # not this partner's: never sent, never logged as sent
        body = body_of(event)
        done: list[str] = []

        async def attempt() -> str | None:
            try:
                status = await post(self.pool, self.secret, event, body)
            except TransportError as e:
                failure = f"failed: {e}"
            else:
                failure = f"HTTP {status}"
                if 200 <= status < 300:
                    self._accepted(event, failure)
                    done.append("sent")
                    return None
                if refused_for_good(status):  # an answer about the event: the endpoint and credentials work
                    self._accepted(event, failure)
                    self._park(event, failure)
                    done.append("parked")
                    return None
                if status in REFUSING:
                    self._held(event, failure)
            self.state.note(self.sink, event, failure)
            return failure

        def retrying(failure: str, wait: float) -> None:
            # The partner's later events wait for this one (in order); other sinks go on.  A held queue
            # said so once for the episode: its tries are in the audit log.
            log.log(logging.DEBUG if failure == self.hold.refusing else logging.WARNING,
                    "%s: event %d %s; trying again in %.1f s", self.sink, event.id, failure, wait)

        if await retried(attempt, retrying, self.retry_max, self.stop):
            return done[0]
        return STOPPED  # not delivered: the next start sends it

    def _held(self, event: Event, failure: str) -> None:
        hold = self.hold
        if failure == hold.refusing:
            return
        if hold.refusing is None:
            hold.since = time.monotonic()
            self.metrics.refusing.labels(partner=self.partner).set(1)
        hold.refusing = failure
        log.error("%s: refused with %s (event %d): the partner's URL or our credentials for it are wrong, not "
                  "the event; its events are held, in order, and tried again until it accepts them "
                  "(runbook: a partner refuses every event)", self.sink, failure, event.id)

    def _accepted(self, event: Event, answer: str) -> None:
        hold = self.hold
        if hold.refusing is None:
            return
        log.warning("%s: %s to event %d after %.0f s refusing with %s: delivering its held events",
                    self.sink, answer, event.id, time.monotonic() - hold.since, hold.refusing)
        hold.refusing = None
        self.metrics.refusing.labels(partner=self.partner).set(0)

    def _park(self, event: Event, status: str) -> None:
        self.state.park(self.sink, event, status)
        self.metrics.undeliverable.labels(partner=self.partner).inc()
        # The event's id, merchant and kind only: what the operator needs to find it, no card data.
        log.error("%s: event %d (merchant %s, %s) refused with %s: parked as undeliverable, not tried again "
                  "(payswitch relay parked lists them; runbook: events parked as undeliverable)",
                  self.sink, event.id, event.merchant_id, event.event, status)

    async def close(self) -> None:
        await self.pool.close()
