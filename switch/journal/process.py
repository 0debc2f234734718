"""The journal in a writer process of its own: the event loop never waits for the database.

With the writer thread (:mod:`switch.journal.groupcommit`), every statement
the thread runs hands the GIL to the event loop and waits to get it back: a
batch takes about three times its CPU time in wall time, and each operation
waits in the queue for that.  Here the database belongs to another process
(:mod:`switch.journal.writer`, over a Unix socket pair), with its own GIL;
this side only frames operations and resolves futures.

Select it with ``[journal] writer = "process"`` (or ``open_journal(url,
writer="process")``).  The interface, durability and errors are the
:class:`switch.journal.Journal` ones, with the writer thread's group commit
running unchanged in the writer process:

- an operation's future resolves only after the batch that ran it has been
  committed (``synchronous=FULL``) in the writer process;
- a failing operation fails alone, a failed commit fails its batch with
  :class:`JournalError`, a bad argument fails with ``ValueError`` (checked in
  the writer process, so the event loop does not pay for the PAN guard);
- if the writer process dies, what it had fails with :class:`JournalUncertain`
  (maybe committed), what follows with :class:`JournalClosed`; ``on_died`` (if
  set) is told why (it is not started again: a single switch stops, exit 1).

Two ways to run this side:

- given ``loop`` (an asyncio event loop; this module does not import
  asyncio) with ``future=loop.create_future``: no thread at all.  Operations
  made during one pass of the loop go out as one frame (one ``send``), and the
  socket is read by the loop itself (``add_reader``): one ``recv`` and one
  unpickle per committed batch.  Methods must be called on the loop's thread;
- without it, a reader thread receives the results (and hands them to
  ``deliver`` if given, as the writer thread would) and each operation is
  sent when it is made (``hold()``/``release()``: sent as one frame, for tests).
"""
from __future__ import annotations

import itertools
import logging
import os
import pickle
import select
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import Any, Callable

from switch.journal import JournalClosed, JournalError, JournalUncertain
from switch.journal.groupcommit import tell_died
from switch.journal.writer import (  # noqa: F401 (WRITER_MAIN, writer_env: callers import them from here)
    _HEADER, WRITER_MAIN, Receiver, as_given, send_frame, split_frames, writer_env,
)

_BUFFER = 4 << 20
_EXIT_WAIT = 1.0  # seconds a writer process that closed its socket is given to have exited
_EXIT_POLL = 0.01  # seconds between two looks at its exit code, given a loop

log = logging.getLogger("payswitch")


def start_shared_writer(directory: str, python: str | None = None) -> tuple[subprocess.Popen, str]:
    """Start a writer process serving several switch processes (:mod:`switch.journal.shared`).

    Its socket is ``directory/journal.sock``; ``directory`` must be one only
    this user can enter (the socket is the journal's only door).  The first
    connection, the supervisor's (``ProcessJournal(url, connect=path,
    control=True)``), opens the journal; the process ends when it closes.
    """
    path = os.path.join(directory, "journal.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(64)
        proc = subprocess.Popen(
            [python or sys.executable, *WRITER_MAIN, "--listen", str(listener.fileno())],
            pass_fds=(listener.fileno(),),
            env=writer_env(),
            stdin=subprocess.DEVNULL,
        )
    finally:
        listener.close()
    return proc, path


def _resolve(fut: Any, ok: bool, value: Any) -> None:
    if fut.done():  # cancelled meanwhile
        return
    if ok:
        fut.set_result(value)
    else:
        exc, cause = value
        if cause is not None:
            exc.__cause__ = cause
        fut.set_exception(exc)


def _resolve_all(items: list[tuple[Any, bool, Any]]) -> None:
    for fut, ok, value in items:
        _resolve(fut, ok, value)


def _forward(name: str) -> Callable[..., Any]:
    def method(self, *args: Any, **kwargs: Any) -> Any:
        return self._submit(name, args, kwargs)

    method.__name__ = name
    method.__doc__ = f"See :meth:`switch.journal.Journal.{name}`."
    return method


class ProcessJournal:
    """A :class:`switch.journal.Journal` whose writer is a separate process."""

    def __init__(
        self,
        url: str,
        *,
        hmac_key: bytes | None = None,
        future: Callable[[], Any] | None = None,
        deliver: Callable[..., Any] | None = None,
        loop: Any = None,
        python: str | None = None,
        connect: str | None = None,
        control: bool = False,
        **options: Any,
    ) -> None:
        """``connect``: the path of a shared writer's socket (``serve --workers``)
        instead of a writer process of this one's own; ``control``: this is the
        supervisor's connection, whose end stops that writer."""
        if (future is None) != (deliver is None):
            raise ValueError("future and deliver go together")
        if "clock" in options or "inline" in options:
            raise ValueError("the journal writer process takes no clock or inline option")
        self.url = url
        self.stats: dict[str, int] = {"commits": 0, "ops": 0, "max_batch": 0, "failed_commits": 0}
        self.on_batch: Callable[[int, float, bool], None] | None = None
        # on_died(why): the writer process ended without close() (on the loop's thread
        # given ``loop``, else on the reader thread), said by it instead of this
        # module's log line: a single switch stops on it (switch.io.app).
        self.on_died: Callable[[str], None] | None = None
        self._new_future: Callable[[], Any] = future or Future
        self._concurrent = future is None
        self._deliver = deliver
        self._loop = loop
        self._ids = itertools.count(1)
        self._waiting: dict[int, Any] = {}  # request id -> future
        self._inserted: dict[int, Any] = {}  # request id -> the record an insert sent, until its answer
        self._outbox: list[tuple] = []  # (future, request id, name, args, kwargs), not sent yet
        self._held = False
        self._flush_scheduled = False
        self._lock = threading.Lock()
        self._closed: JournalClosed | None = None
        self._dying = False  # its end of the socket closed, its exit code not known yet (_died)
        self._rbuf = bytearray()
        self._wbuf = bytearray()
        hello = {"url": url, "hmac_key": hmac_key, "options": options}
        if connect is not None:
            # A writer process shared by several workers (switch.journal.shared).
            self._proc = None
            ours = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
            try:
                ours.connect(connect)
            except OSError as exc:
                ours.close()
                raise JournalError(f"cannot reach the shared journal writer: {exc.strerror or exc}") from None
            hello["control"] = control
        else:
            ours = self._spawn(python)
        self._sock = ours
        self._receiver = Receiver(ours)
        try:
            # The key goes over the socket, never on a command line.
            send_frame(ours, hello)
            status, error = self._read_one()
        except BaseException:
            self._abandon()
            raise
        if status != "ready":
            self._abandon()
            raise error
        if loop is not None:
            ours.setblocking(False)
            loop.add_reader(ours.fileno(), self._on_readable)
            self._reader = None
        else:
            self._reader = threading.Thread(target=self._read_thread, name=f"journal-reader:{url}", daemon=True)
            self._reader.start()

    def writer_identity(self) -> tuple[str, int] | None:
        """("process", its pid) of a writer process of our own; None for a shared one
        (the supervisor's, which reports it) (for CPU metrics)."""
        return None if self._proc is None else ("process", self._proc.pid)

    def _spawn(self, python: str | None) -> socket.socket:
        """Start a writer process of our own; our end of the socket pair to it."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        try:
            self._proc = subprocess.Popen(
                [python or sys.executable, *WRITER_MAIN, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=writer_env(),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return ours

    def _read_one(self) -> Any:
        while True:
            frames = split_frames(self._rbuf)
            if frames:
                return frames[0]
            if not self._receiver.into(self._rbuf):
                if self._proc is None:
                    raise JournalError("the shared journal writer closed the connection")
                raise JournalError(f"journal writer process exited (status {self._proc.wait()})")

    def _abandon(self) -> None:
        self._sock.close()
        if self._proc is None:
            return
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    # -- the Journal interface ------------------------------------------------

    insert = _forward("insert")
    insert_refund = _forward("insert_refund")
    update = _forward("update")
    update_if = _forward("update_if")
    store = _forward("store")
    get = _forward("get")
    find = _forward("find")
    find_original = _forward("find_original")
    find_by_order = _forward("find_by_order")
    in_states = _forward("in_states")
    totals = _forward("totals")
    settle = _forward("settle")
    settle_totals = _forward("settle_totals")
    find_completion = _forward("find_completion")
    claim_upload = _forward("claim_upload")
    reversing_completion = _forward("reversing_completion")
    pending_reversals = _forward("pending_reversals")
    reversal_backlog = _forward("reversal_backlog")
    retire = _forward("retire")
    reserve_stans = _forward("reserve_stans")
    stan_position = _forward("stan_position")
    store_terminal_keys = _forward("store_terminal_keys")
    terminal_keys = _forward("terminal_keys")
    all_terminal_keys = _forward("all_terminal_keys")
    promote_terminal_keys = _forward("promote_terminal_keys")
    advance_ksn = _forward("advance_ksn")
    keep_reversal_card = _forward("keep_reversal_card")
    reversal_card = _forward("reversal_card")
    end_reversal = _forward("end_reversal")
    purge_reversal_cards = _forward("purge_reversal_cards")
    forget_cards = _forward("forget_cards")
    ping = _forward("ping")
    # Shared writer only (switch.journal.shared): ids of records left "sent" by
    # workers whose connection ended.
    orphans = _forward("orphans")

    def _submit(self, name: str, args: tuple, kwargs: dict) -> Any:
        fut = self._new_future()
        if (name == "insert" or name == "insert_refund") and args:
            # A copy: the caller may change its record before the frame leaves.
            rec = args[0]
            copy = getattr(rec, "__copy__", None)
            if copy is not None:
                args = (copy(),) + args[1:]
        with self._lock:
            if self._closed is not None:
                fut.set_exception(JournalClosed(*self._closed.args))
                return fut
            rid = next(self._ids)
            self._outbox.append((fut, rid, name, args, kwargs))
            if self._held or self._dying:  # dying: failed once its exit code is known (_died)
                return fut
            if self._loop is None:
                self._flush_locked()
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        return fut

    # -- sending ------------------------------------------------------------------

    def _take_outbox(self) -> list[tuple]:
        """The outbox's operations that were not cancelled meanwhile, now waiting for answers."""
        ops = []
        waiting = self._waiting
        for fut, rid, name, args, kwargs in self._outbox:
            if self._concurrent:
                if not fut.set_running_or_notify_cancel():
                    continue
            elif fut.cancelled():
                continue
            waiting[rid] = fut
            if name == "insert":
                self._inserted[rid] = args[0]
            ops.append((rid, name, args, kwargs))
        self._outbox.clear()
        return ops

    def _encode(self, ops: list[tuple]) -> bytes:
        data = pickle.dumps(ops, protocol=pickle.HIGHEST_PROTOCOL)
        return _HEADER.pack(len(data)) + data

    def _flush_locked(self) -> None:
        # Thread mode: a blocking send (the reader thread keeps the other direction moving).
        if self._dying:
            return
        ops = self._take_outbox()
        if not ops:
            return
        try:
            self._sock.sendall(self._encode(ops))
        except OSError as exc:
            self._fail_waiting(JournalClosed(f"journal writer process is gone: {exc!r}"))

    def _flush(self) -> None:
        # Loop mode: one frame per pass of the loop, never blocking.
        self._flush_scheduled = False
        if self._held or self._closed is not None or self._dying:
            return
        ops = self._take_outbox()
        if not ops:
            return
        try:
            frame = self._encode(ops)
        except Exception as exc:  # an argument that does not pickle
            for rid, *_ in ops:
                self._resolve_rid(rid, False, (JournalError(f"journal operation not sendable: {exc!r}"), None))
            return
        if self._wbuf:
            self._wbuf += frame
            return
        try:
            sent = self._sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._died(exc)
            return
        if sent < len(frame):
            self._wbuf += memoryview(frame)[sent:]
            self._loop.add_writer(self._sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        try:
            sent = self._sock.send(self._wbuf)
        except BlockingIOError:
            return
        except OSError as exc:
            self._died(exc)
            return
        del self._wbuf[:sent]
        if not self._wbuf:
            self._loop.remove_writer(self._sock.fileno())

    def hold(self) -> None:
        """Keep operations here until :meth:`release` (for tests: a batch of known content)."""
        with self._lock:
            self._held = True

    def release(self) -> None:
        """Send everything held as one frame: the writer runs it as one batch."""
        with self._lock:
            self._held = False
            if self._loop is None:
                self._flush_locked()
                return
        self._flush()

    # -- receiving ------------------------------------------------------------------

    def _resolve_rid(self, rid: int, ok: bool, value: Any) -> None:
        self._inserted.pop(rid, None)
        fut = self._waiting.pop(rid, None)
        if fut is not None:
            _resolve(fut, ok, value)

    def _handle(self, frames: list) -> None:
        stats = self.stats
        for outcomes, batches in frames:
            for size, seconds, committed in batches:
                stats["ops"] += size
                if size > stats["max_batch"]:
                    stats["max_batch"] = size
                if committed:
                    stats["commits"] += 1
                else:
                    stats["failed_commits"] += 1
                hook = self.on_batch
                if hook is not None:
                    try:
                        hook(size, seconds, committed)
                    except Exception:  # metrics must not fail the journal
                        logging.getLogger(__name__).exception("journal on_batch hook failed")
            pop, sent = self._waiting.pop, self._inserted
            if self._deliver is not None and self._loop is None:
                items = [(pop(rid), *as_given(sent, rid, ok, value)) for rid, ok, value in outcomes
                         if rid in self._waiting]
                try:
                    self._deliver(_resolve_all, items)
                except Exception:
                    logging.getLogger(__name__).exception("journal could not deliver %d results", len(items))
                continue
            for rid, ok, value in outcomes:
                fut = pop(rid, None)
                if fut is not None:
                    _resolve(fut, *as_given(sent, rid, ok, value))

    def _on_readable(self) -> None:
        try:
            got = self._receiver.into(self._rbuf)
        except BlockingIOError:
            return
        except OSError as exc:
            self._died(exc)
            return
        if not got:
            self._died(None)
            return
        self._handle(split_frames(self._rbuf))

    def _read_thread(self) -> None:
        while True:
            try:
                got = self._receiver.into(self._rbuf)
            except OSError as exc:
                self._died(exc)
                return
            if not got:
                self._died(None)
                return
            frames = split_frames(self._rbuf)
            if frames:
                # Not under the lock: a caller blocked in sendall holds it, and
                # this thread reading is what unblocks the writer process.
                self._handle(frames)

    def _died(self, exc: BaseException | None) -> None:
        """The writer process closed its end: fail what waits, refuse what comes, once its exit
        code (said in every error) is known: waited for up to _EXIT_WAIT s never on the loop
        (polled by its timers; what comes meanwhile waits too) nor under the lock."""
        if self._loop is not None:
            try:
                self._loop.remove_reader(self._sock.fileno())
                if self._wbuf:
                    self._loop.remove_writer(self._sock.fileno())
            except Exception:
                pass
        with self._lock:
            reason, seen = self._closed, self._dying  # closed by us: no death
            self._dying = True
        if reason is not None:
            self._fail_waiting(reason)
        elif seen:
            return
        elif self._loop is not None and self._proc is not None:
            self._poll_exit(exc, _EXIT_WAIT)
        else:  # on the reader thread, which may wait
            self._dead(exc, self._exit_code())

    def _poll_exit(self, exc: BaseException | None, left: float) -> None:
        code = self._proc.poll()
        if code is None and left > 0:
            self._loop.call_later(_EXIT_POLL, self._poll_exit, exc, left - _EXIT_POLL)
        else:
            self._dead(exc, code)

    def _dead(self, exc: BaseException | None, code: int | None) -> None:
        with self._lock:
            unexpected = self._closed is None  # not closed by us meanwhile
            if unexpected:
                why = ("journal writer process died" + (f" (exit code {code})" if code is not None else "")
                       + (f": {exc!r}" if exc is not None else ""))
                self._closed = JournalClosed(why)
            reason = self._closed
            unsent = [self._waiting.pop(op[0]) for op in self._take_outbox()]  # came meanwhile: never sent
        for fut in unsent:
            _resolve(fut, False, (JournalClosed(*reason.args), None))
        if unexpected:
            hook = self.on_died
            if hook is None:
                # Once, when it happens (each request refused after it has its own line): the
                # writer is not started again, so this process journals nothing until restarted.
                log.error("%s: nothing can be journaled (every payment is answered 96) until the switch is"
                          " restarted (runbook: \"Journal failing\")", reason.args[0])
            else:
                tell_died(hook, reason.args[0])
        self._fail_waiting(reason)

    def _exit_code(self) -> int | None:
        """Our writer process's exit status (-9: killed), once its end of the socket closed:
        it is gone or about to be.  None for a shared writer, or one that lingers."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            return None

    def _fail_waiting(self, reason: JournalClosed) -> None:
        """Fail what was handed to the writer, unconfirmed: it may have been committed (JournalUncertain)."""
        items = list(self._waiting.values())
        self._waiting.clear()
        self._inserted.clear()
        for fut in items:
            _resolve(fut, False, (JournalUncertain(*reason.args), None))

    # -- closing ----------------------------------------------------------------------

    def close(self) -> None:
        """Run everything sent or queued so far, then stop the writer process."""
        with self._lock:
            if self._closed is not None or self._dying:  # dying: nothing left to run, nor to wait for
                already = True
            else:
                already = False
                self._closed = JournalClosed("journal is closed")
                self._held = False
                ops = self._take_outbox()
                ops.append((0, "close", (), {}))
                frame = self._encode(ops)
        if already:
            if self._reader is not None and self._reader is not threading.current_thread():
                self._reader.join()
            return
        if self._loop is None:
            try:
                self._sock.sendall(frame)
            except OSError:
                pass
            self._reader.join()
        else:
            self._pump(bytes(self._wbuf) + frame)
        self._sock.close()
        if self._proc is not None:
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._fail_waiting(self._closed)

    def _pump(self, out: bytes) -> None:
        """Loop mode, on close: send the rest and read answers until the writer exits (blocking)."""
        fd = self._sock.fileno()
        try:
            self._loop.remove_reader(fd)
            if self._wbuf:
                self._loop.remove_writer(fd)
        except Exception:
            pass
        self._wbuf.clear()
        view = memoryview(out)
        while True:
            readable, writable, _ = select.select([fd], [fd] if view else [], [], 30)
            if not readable and not writable:
                return  # the writer is stuck: close() still ends
            if writable:
                try:
                    view = view[self._sock.send(view) :]
                except BlockingIOError:
                    pass
                except OSError:
                    return
            if readable:
                try:
                    got = self._receiver.into(self._rbuf)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not got:
                    return
                self._handle(split_frames(self._rbuf))
