"""The journal writer process: ``main([_, FD])`` (:data:`WRITER_MAIN`).

(``--listen FD``: one writer for several switch processes, :mod:`switch.journal.shared`.)

Started by :class:`switch.journal.process.ProcessJournal`, which holds the
other end of the Unix socket ``FD``.  The process owns the database; the
switch's event loop never runs a statement, so it never waits for this
process's GIL, nor this process for its.

Frames both ways are a 4-byte big-endian length and a pickle (the two ends
are one program, started together; nothing else can reach the socket):

- first, parent to writer: ``{"url": ..., "hmac_key": ..., "options": {...}}``;
  the writer answers ``("ready", None)`` or ``("error", exception)``;
- then, parent to writer: a list of operations ``(request id, method name,
  args, kwargs)``, ``method name`` one of the :class:`switch.journal.Journal`
  methods, or ``"close"`` (run what came before it, answer, exit);
- writer to parent: ``(outcomes, batches)``: ``outcomes`` a list of
  ``(request id, ok, result or exception)``, ``batches`` a list of
  ``(size, seconds, committed)``, one per database transaction.

The writer reads whatever frames have arrived (at least one), runs their
operations as one batch (split at ``max_batch``) through the backend's own
group commit, so a batch is one database transaction with one fsync and a
failing operation fails alone, exactly as on the writer thread, and answers
only after the commit.  Operations that arrive while it waits for the disk
make the next batch.

The backend is anything :func:`switch.journal.open_journal` opens whose class
is a :class:`switch.journal.groupcommit.GroupCommitter` (its ``_run_batch``
is the batch interface): SQLite now; a PostgreSQL committer plugs in here
unchanged.
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import sys
from typing import Any

from msgspec.structs import astuple, replace

_HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 30


class _Slot:
    """The future a backend method returns inside the writer: it only records the outcome."""

    __slots__ = ("rid", "outcome", "quiet", "sent")

    def __init__(self, rid: int) -> None:
        self.rid = rid
        self.outcome: tuple | None = None
        self.quiet = False  # Journal.store(): its caller is answered None, not the record
        self.sent: Any = None  # an insert's record as it came: see ASSIGNED

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return self.outcome is not None

    def set_result(self, value: Any) -> None:
        self.outcome = (self.rid, True, value)

    def set_exception(self, exc: BaseException) -> None:
        self.outcome = (self.rid, False, exc)


# The writer process's command: ``python -m switch.journal.writer`` cannot run a
# compiled module (switch/compiled.py) as __main__, so its main() is called.
WRITER_MAIN = ("-c", "import sys; from switch.journal.writer import main; sys.exit(main(sys.argv))")


def writer_env() -> dict[str, str]:
    """The environment of a writer process: ours, importing this very copy of payswitch."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


# An insert's outcome when the record stored is the one its caller sent with only what
# the journal assigns (id, rrn from it, created_at, updated_at): the caller kept that
# record and rebuilds the stored one (:func:`as_given`, in switch.journal.process) from
# (id, created_at, updated_at), instead of the 41 fields being pickled, sent and
# unpickled back.  A record stored otherwise (a value SQLite converted, the key taken
# by another) comes back whole.
ASSIGNED = 2


def _outcome(fut: _Slot, ok: bool, value: Any) -> tuple:
    """``(key, ok, what goes back)`` of one operation (Batches.deliver)."""
    if not ok:  # an exception travels with its cause (pickle keeps neither __cause__ nor the traceback)
        return fut.rid, False, (value, value.__cause__)
    if fut.quiet:
        return fut.rid, True, None
    sent = fut.sent
    if sent is not None and type(value) is tuple and value[1] is True:
        rec = value[0]
        txn_id = rec.id
        stored = astuple(rec)
        given = astuple(_assigned(sent, txn_id, rec.created_at, rec.updated_at))
        # Types too: 500.0 == 500 and bytearray(b"x") == b"x", but the record holds what was stored.
        if stored == given and tuple(map(type, stored)) == tuple(map(type, given)):
            return fut.rid, ASSIGNED, (txn_id, rec.created_at, rec.updated_at)
    return fut.rid, True, value


def as_given(sent: dict, rid: int, ok: Any, value: Any) -> tuple[bool, Any]:
    """``(ok, value)`` of request ``rid`` as the journal's client gives it to its caller: an
    insert answered ASSIGNED is the record the client sent (``sent``: request id -> record,
    kept until its answer) with the journal's id, rrn and times."""
    rec = sent.pop(rid, None)
    if ok != ASSIGNED:
        return ok, value
    return True, (_assigned(rec, *value), True)


def _assigned(rec: Any, txn_id: int, created_at: float, updated_at: float) -> Any:
    """``rec`` with what the journal assigns an insert: the one rebuilding both ends agree on."""
    return replace(rec, id=txn_id, rrn="%012d" % txn_id, created_at=created_at, updated_at=updated_at)


def send_frame(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


class Receiver:
    """Appends what arrives on a socket to a buffer, through one scratch area.

    ``sock.recv(n)`` allocates ``n`` bytes per call; at the sizes a batch can
    need, that is an mmap and munmap per call.
    """

    __slots__ = ("sock", "_scratch", "_view")

    def __init__(self, sock: socket.socket, size: int = 256 << 10) -> None:
        self.sock = sock
        self._scratch = bytearray(size)
        self._view = memoryview(self._scratch)

    def into(self, buf: bytearray, flags: int = 0) -> int:
        """Receive once into ``buf`` (raises BlockingIOError as recv does); 0 at the end of the stream."""
        n = self.sock.recv_into(self._scratch, 0, flags)
        if n:
            buf += self._view[:n]
        return n


def split_frames(buf: bytearray) -> list[Any]:
    """Take every complete frame off the front of ``buf``."""
    frames = []
    pos, size = 0, len(buf)
    while size - pos >= 4:
        (n,) = _HEADER.unpack_from(buf, pos)
        if n > MAX_FRAME:
            raise ValueError(f"journal frame of {n} bytes")
        if size - pos - 4 < n:
            break
        frames.append(pickle.loads(memoryview(buf)[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    if pos:
        del buf[:pos]
    return frames


def _open(init: dict) -> Any:
    from switch.journal import open_journal
    from switch.journal.groupcommit import GroupCommitter

    current = [0]

    def new_future() -> _Slot:
        return _Slot(current[0])

    options = dict(init.get("options") or {})
    # No thread in here: operations are collected and run as one batch below.
    journal = open_journal(
        init["url"], hmac_key=init.get("hmac_key"), inline=True, future=new_future, deliver=_no_deliver, **options
    )
    if not isinstance(journal, GroupCommitter):
        journal.close()
        raise TypeError(f"{type(journal).__name__} has no batch interface (GroupCommitter)")
    journal._current = current
    return journal


def _no_deliver(resolve, outcomes) -> None:  # replaced by Batches.deliver
    raise AssertionError("unreachable")


class Batches:
    """Operations run on a journal from :func:`_open` as batches, their outcomes and statistics kept.

    The writer loop of one switch (:func:`_run`) and that of several
    (:func:`switch.journal.shared.serve_many`) both use it: :meth:`call` runs
    a journal method (the backend queues the operation here), a batch runs
    at ``max_batch`` and at :meth:`run`, and the caller sends ``outcomes``,
    ``(key, ok, result or (exception, cause))`` with ``key`` what
    :meth:`call` was given, and ``stats``, ``(size, seconds, committed)``
    per transaction, then clears both.
    """

    __slots__ = ("journal", "max_batch", "current", "pending", "outcomes", "stats")

    def __init__(self, journal: Any) -> None:
        self.journal = journal
        self.max_batch = journal.max_batch
        self.current = journal._current  # what the journal's futures are named by
        self.pending: list = []
        self.outcomes: list = []
        self.stats: list = []
        journal._submit = self.submit
        journal._deliver = self.deliver
        journal.on_batch = self.on_batch

    def submit(self, fn: Any, args: tuple, writes: bool) -> _Slot:
        fut = self.journal._new_future()
        self.pending.append((fut, fn, args, writes))
        return fut

    def deliver(self, resolve: Any, batch_outcomes: list) -> None:
        self.outcomes.extend([_outcome(fut, ok, value) for fut, ok, value in batch_outcomes])

    def on_batch(self, size: int, seconds: float, committed: bool) -> None:
        self.stats.append((size, seconds, committed))

    def call(self, key: Any, name: str, args: tuple, kwargs: dict) -> None:
        """The journal's method ``name``; its outcome is kept under ``key``."""
        self.current[0] = key
        try:
            fut = getattr(self.journal, name)(*args, **kwargs)
        except Exception as exc:  # a bad call (wrong arguments): that operation alone
            self.outcomes.append((key, False, (exc, None)))
            return
        if fut.outcome is not None:  # refused before it was queued
            self.outcomes.append((key, False, (fut.outcome[2], None)))
        elif name == "store":
            fut.quiet = True  # a record nobody reads is not pickled, sent and unpickled
        elif name == "insert" and args:
            fut.sent = args[0]
        if len(self.pending) >= self.max_batch:
            self.run()

    def run(self) -> None:
        """What is queued, as one batch: one database transaction with one fsync."""
        if self.pending:
            batch, self.pending = self.pending, []
            self.journal._run_batch(batch)


def serve(sock: socket.socket) -> None:
    buf = bytearray()
    frames: list = []
    receiver = Receiver(sock)
    while not frames:
        if not receiver.into(buf):
            return
        frames = split_frames(buf)
    try:
        journal = _open(frames[0])
    except BaseException as exc:
        send_frame(sock, ("error", exc))
        return
    send_frame(sock, ("ready", None))
    try:
        _run(sock, receiver, journal, buf, frames[1:])
    finally:
        journal._close_db()


def _run(sock: socket.socket, receiver: Receiver, journal: Any, buf: bytearray, frames: list) -> None:
    batches = Batches(journal)
    outcomes, stats = batches.outcomes, batches.stats
    while True:
        # Wait for at least one frame, then take whatever else has arrived.
        while not frames:
            if not receiver.into(buf):
                return  # the switch is gone
            frames = split_frames(buf)
        while True:
            try:
                if not receiver.into(buf, socket.MSG_DONTWAIT):
                    break
            except BlockingIOError:
                break
            frames += split_frames(buf)
        stop = False
        for frame in frames:
            for rid, name, args, kwargs in frame:
                if name == "close":
                    stop = True
                    continue
                batches.call(rid, name, args, kwargs)
        frames = []
        batches.run()
        if outcomes or stats:
            try:
                send_frame(sock, (outcomes, stats))
            except Exception as exc:
                # A result that does not pickle: answer every operation of the lot with why.
                if isinstance(exc, OSError):
                    return
                error = JournalErrorLike(f"journal result not sendable: {exc!r}")
                send_frame(sock, ([(o[0], False, (error, None)) for o in outcomes], stats))
            outcomes.clear()
            stats.clear()
        if stop:
            return


def JournalErrorLike(message: str) -> Exception:
    from switch.journal import JournalError

    return JournalError(message)


def main(argv: list[str]) -> int:
    from switch.security import coredump

    coredump.no_core_dumps()  # it holds the journal key and sealed cards; PR_SET_DUMPABLE does not survive exec
    # Ctrl-C at a terminal, or a service manager signalling the whole group,
    # is for the switch: it drains, then closes this journal.  The writer
    # stops when its switch says so or is gone (end of the socket).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if argv[1] == "--listen":  # several switch processes (switch.journal.shared)
        from switch.journal.shared import serve_many

        listener = socket.socket(fileno=int(argv[2]))
        try:
            serve_many(listener)
        finally:
            listener.close()
        return 0
    sock = socket.socket(fileno=int(argv[1]))
    try:
        serve(sock)
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
