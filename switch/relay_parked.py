"""Events the relay parked as undeliverable (a partner's permanent refusal): listed, and sent again.

    payswitch relay parked [--config FILE]
    payswitch relay redeliver PARTNER [--config FILE]

Both work on the relay's state file (:mod:`switch.events`).  ``redeliver``
moves the partner's position back to just before its oldest parked event
and marks its parked events as redelivered: started again, the relay sends
the partner every event from there on, in order, those it already had
included (partners de-duplicate by ``id``, as after a crash); one refused
again is parked again.  The relay must be stopped: a running relay would
save its own position over the one moved back, so ``redeliver`` refuses
(exit 2) while a relay holds the state file's lock (:func:`switch.relay_state.lock`).
"""
from __future__ import annotations

import time

from switch import config as config_mod
from switch.relay_state import State, lock


def listing(state: State) -> list[str]:
    """One line per event still parked, oldest first per sink: no body, no card data."""
    rows = state.conn.execute("SELECT sink, event_id, merchant_id, event, status, at FROM parked "
                              "WHERE redelivered IS NULL ORDER BY sink, event_id").fetchall()
    return [f"{sink} event {event_id} merchant {merchant} {event}: {status} at "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(at))}"
            for sink, event_id, merchant, event, status, at in rows]


def redeliver(cfg: config_mod.Config, state: State, partner: str) -> str:
    """Have the relay send ``partner``'s parked events again; what was done, in one line."""
    if not any(p.name == partner and p.webhook for p in cfg.events.partners):
        webhooks = [p.name for p in cfg.events.partners if p.webhook]
        raise config_mod.ConfigError(f"{cfg.source}: no webhook partner {partner!r} in [events] "
                                     f"(webhook partners: {', '.join(webhooks) or 'none'})")
    sink = f"webhook:{partner}"
    with state.conn:
        state.conn.execute("BEGIN IMMEDIATE")
        first, count = state.conn.execute("SELECT min(event_id), count(*) FROM parked "
                                          "WHERE sink = ? AND redelivered IS NULL", (sink,)).fetchone()
        if not count:
            return f"{sink}: no parked event"
        position = state.cursor(sink)
        state.conn.execute("INSERT INTO cursor (sink, last_id) VALUES (?, ?) "
                           "ON CONFLICT (sink) DO UPDATE SET last_id = min(last_id, excluded.last_id)",
                           (sink, first - 1))
        state.conn.execute("UPDATE parked SET redelivered = ? WHERE sink = ? AND redelivered IS NULL",
                           (time.time(), sink))
    return (f"{sink}: {count} parked event(s) to send again; position moved back from {position} to {first - 1}: "
            f"start the relay (it sends every later event again too, partners de-duplicate by id)")


def command(cfg: config_mod.Config, path: str, args) -> int:
    """``payswitch relay parked`` and ``payswitch relay redeliver PARTNER`` on the state file at ``path``."""
    # redeliver holds the lock while it moves the position back: a running relay (which holds it too) would
    # save its own position over it.  The listing only reads.
    held = lock(cfg, path) if args.command == "redeliver" else None
    try:
        state = State.open(cfg, path)
        try:
            if args.command == "parked":
                for line in listing(state):
                    print(line)
            else:
                print(redeliver(cfg, state, args.partner))
        finally:
            state.conn.close()
    finally:
        if held is not None:
            held.close()
    return 0
