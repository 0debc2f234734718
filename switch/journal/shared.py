"""One journal writer process serving several switch processes (``serve --workers N``).

The writer process started with ``--listen FD`` runs this: ``FD`` is a listening
Unix socket (in a directory only the switch's user can enter) that the
supervisor made; each worker connects to it with
:class:`switch.journal.process.ProcessJournal` (``connect=PATH``).  The frames
are those of :mod:`switch.journal.writer`; what differs:

- the first client to connect sends the opening frame ``{"url", "hmac_key",
  "options", "control": True}``: that is the supervisor, and the process ends
  when the supervisor's connection does (it closes the journal, or it died).
  A worker's opening frame names the same URL and is answered ``ready``;
- operations from all clients that have arrived are run as one batch, one
  SQLite transaction with one fsync, exactly as for one client; each client
  gets its own outcomes, and the batch statistics go to one of the clients
  that took part (so the workers' commit counters add up to the truth);
- a worker's ``close`` ends that client only.

The journal is the arbiter between the workers, and it also knows which
worker has which transaction in flight: :class:`Ownership` remembers, per
client, the records it last left in state ``sent``.  When a client's
connection ends (its worker died, or stopped), its records still ``sent``
become *orphans*; the worker that runs the reversal sender asks for them
(operation ``orphans``) and reverses them as start-up recovery would, without
touching another live worker's transactions in flight.
"""
from __future__ import annotations

import selectors
import socket
from typing import Any

from switch.journal.writer import Batches, Receiver, _open, send_frame, split_frames

SENT = "sent"  # switch.core.states.SENT (the journal does not import the core)


class Ownership:
    """Which client left which record in state ``sent``; the orphans of clients gone."""

    def __init__(self) -> None:
        self.owner: dict[int, int] = {}  # record id -> client id
        self.orphans: set[int] = set()
        self.gone: set[int] = set()

    def saw(self, client: int, name: str, value: Any) -> None:
        """The result of one successful operation of ``client``."""
        if name == "insert" or name == "insert_refund":
            rec, created = value
            if not created:
                return  # someone else's record (a retransmission, a duplicate), or a refund over its limit
        elif name in ("update", "update_if", "store", "end_reversal"):
            rec = value
        else:
            return
        if rec.state == SENT:
            self.owner[rec.id] = client
            self.orphans.discard(rec.id)
            if client in self.gone:  # its last words, read after it went
                self.orphans.add(rec.id)
        else:
            self.owner.pop(rec.id, None)
            self.orphans.discard(rec.id)

    def left(self, client: int) -> list[int]:
        """``client`` is gone: its records in flight are orphans now (their ids)."""
        self.gone.add(client)
        ids = [i for i, c in self.owner.items() if c == client]
        self.orphans.update(ids)
        return ids


class _SharedBatches(Batches):
    """:class:`Batches` keyed ``(client id, request id, method)``, telling :class:`Ownership` what each left."""

    __slots__ = ("owners",)

    def __init__(self, journal: Any, owners: Ownership) -> None:
        super().__init__(journal)
        self.owners = owners

    def deliver(self, resolve: Any, batch_outcomes: list) -> None:
        for fut, ok, value in batch_outcomes:
            if ok:
                cid, _, name = fut.rid
                try:
                    self.owners.saw(cid, name, value)
                except Exception:  # an unexpected result shape never fails the operation
                    pass
        super().deliver(resolve, batch_outcomes)


class _Client:
    __slots__ = ("cid", "sock", "receiver", "buf", "ready", "control")

    def __init__(self, cid: int, sock: socket.socket) -> None:
        self.cid = cid
        self.sock = sock
        self.receiver = Receiver(sock)
        self.buf = bytearray()
        self.ready = False
        self.control = False


def serve_many(listener: socket.socket) -> None:
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    clients: dict[int, _Client] = {}
    next_cid = 1
    journal = None
    batches: _SharedBatches | None = None
    url = None
    owners = Ownership()

    def drop(client: _Client) -> None:
        sel.unregister(client.sock)
        client.sock.close()
        del clients[client.cid]
        owners.left(client.cid)

    try:
        while True:
            arrived: list[tuple[_Client, Any]] = []
            ended: list[_Client] = []
            for key, _ in sel.select():
                if key.data is None:
                    conn, _ = listener.accept()
                    conn.setblocking(True)
                    client = clients[next_cid] = _Client(next_cid, conn)
                    next_cid += 1
                    sel.register(conn, selectors.EVENT_READ, client)
                    continue
                client = key.data
                while True:
                    try:
                        got = client.receiver.into(client.buf, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    except OSError:
                        got = 0
                    if not got:
                        ended.append(client)
                        break
                arrived += [(client, f) for f in split_frames(client.buf)]
            stop = False
            closing: list[_Client] = []
            for client, frame in arrived:
                if not client.ready:
                    if journal is None:
                        try:
                            journal = _open(frame)
                        except BaseException as exc:
                            send_frame(client.sock, ("error", exc))
                            return
                        batches = _SharedBatches(journal, owners)
                        url = frame["url"]
                        client.control = bool(frame.get("control"))
                    elif frame.get("url") != url:
                        from switch.journal import JournalError

                        send_frame(client.sock, ("error", JournalError("this journal writer serves another journal")))
                        ended.append(client)
                        continue
                    client.ready = True
                    send_frame(client.sock, ("ready", None))
                    continue
                for rid, name, args, kwargs in frame:
                    if name == "close":
                        closing.append(client)
                        stop = stop or client.control
                        continue
                    if name == "orphans":
                        batches.outcomes.append(((client.cid, rid, name), True, sorted(owners.orphans)))
                        continue
                    batches.call((client.cid, rid, name), name, args, kwargs)
            if batches is not None:
                batches.run()
                _answer(clients, batches)
            for client in closing + ended:
                if client.cid in clients:
                    if client.control:
                        stop = True
                    drop(client)
            if stop:
                return
    finally:
        for client in list(clients.values()):
            client.sock.close()
        if journal is not None:
            journal._close_db()


def _answer(clients: dict[int, _Client], batches: _SharedBatches) -> None:
    """Each client its own outcomes; the round's batch statistics to the first of them."""
    outcomes = batches.outcomes
    if not outcomes and not batches.stats:
        return
    per: dict[int, list] = {}
    for (cid, rid, _), ok, value in outcomes:
        per.setdefault(cid, []).append((rid, ok, value))
    outcomes.clear()
    stats = batches.stats[:]
    batches.stats.clear()
    for cid in sorted(per):
        client = clients.get(cid)
        if client is None:
            continue
        try:
            send_frame(client.sock, (per[cid], stats))
        except OSError:
            continue  # it is gone: its end of the socket tells the loop
        except Exception as exc:  # a result that does not pickle
            from switch.journal import JournalError

            error = JournalError(f"journal result not sendable: {exc!r}")
            send_frame(client.sock, ([(o[0], False, (error, None)) for o in per[cid]], stats))
        stats = []
