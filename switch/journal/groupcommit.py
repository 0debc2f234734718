"""Group commit: one writer thread, many operations per database transaction.

The writer owns the connection.  It blocks for the first queued operation,
takes whatever else is queued (up to ``max_batch``) without waiting, runs the
lot in one transaction, commits once and only then resolves the futures.
While it waits for the disk, new operations pile up and make the next batch:
the batch grows with the load, and an idle journal adds no delay.

Within a batch:

- a failing write (a constraint, a KeyError for a missing id) is rolled back
  alone and fails only its own future; the others commit.  The batch first
  runs without savepoints; should a write fail, the whole transaction is
  rolled back and the batch runs again with a savepoint around each write
  (every statement costs a round trip through the GIL, so the common batch,
  where nothing fails, does not pay two more per write);
- a failure of the transaction itself (BEGIN, COMMIT, a savepoint that cannot
  be rolled back, an error that ended the transaction) fails every operation
  of the batch with :class:`JournalError` (an operation that had already
  failed keeps its own error): nothing of the batch was written;
- reads run in the same transaction and see the writes queued before them,
  so their result is released only after the commit too.

A backend subclasses :class:`GroupCommitter` and implements the hooks
(``_open``, ``_begin``, ``_savepoint``, ...); operations are callables run on
the writer thread, which may run one twice in a batch (when another write
fails), so they change nothing but the database.  This module knows no SQL dialect and no asyncio.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from switch.journal import JournalClosed, JournalError

log = logging.getLogger(__name__)

_STOP = object()

# An operation: (future, function, arguments, writes).
Op = tuple[Future, Callable[..., Any], tuple, bool]

# What a batch delivers: (future, ok, result or exception) per operation.
Outcome = tuple[Any, bool, Any]


def resolve(outcomes: list[Outcome]) -> None:
    """Set each future's result or exception (a future cancelled meanwhile keeps that)."""
    for fut, ok, value in outcomes:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _resolve_claimed(outcomes: list[Outcome]) -> None:
    # concurrent.futures: the writer claimed each one (set_running_or_notify_cancel),
    # so none can have been cancelled since.
    for fut, ok, value in outcomes:
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


def _not_cancelled(fut: Any) -> bool:
    return not fut.cancelled()


class GroupCommitter:
    """``future`` and ``deliver`` (both or neither) hand results over in bulk.

    By default every operation returns a :class:`concurrent.futures.Future`
    that the writer thread resolves itself.  With ``future`` (a factory, for
    example ``loop.create_future``) the operations return what it makes, and
    the writer calls ``deliver(resolve, outcomes)`` once per batch, which must
    run ``resolve(outcomes)`` on the thread that owns those futures (for
    example ``loop.call_soon_threadsafe``): one hand-over per batch instead of
    one per operation.  Operations must then be submitted from that thread.
    """

    def __init__(
        self,
        *,
        name: str,
        max_batch: int = 512,
        future: Callable[[], Any] | None = None,
        deliver: Callable[[Callable[[list[Outcome]], None], list[Outcome]], Any] | None = None,
        inline: bool = False,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if (future is None) != (deliver is None):
            raise ValueError("future and deliver go together")
        self._new_future: Callable[[], Any] = future or Future
        self._deliver = deliver
        # Skips (and, for concurrent futures, locks out) what the caller cancelled.
        self._claim: Callable[[Any], bool] = (
            Future.set_running_or_notify_cancel if future is None else _not_cancelled
        )
        self.max_batch = max_batch
        self.stats: dict[str, int] = {"commits": 0, "ops": 0, "max_batch": 0, "failed_commits": 0}
        # (time.monotonic(), exception) of the last batch of writes that could not be
        # committed (disk full, I/O error), set on the writer thread.
        self.write_failed: tuple[float, BaseException] | None = None
        # on_batch(size, seconds, committed), called on the writer thread after
        # each batch (metrics: commit latency and batch size).
        self.on_batch: Callable[[int, float, bool], None] | None = None
        # on_died(why): the writer thread ended without close() (a bug escaped its
        # loop), called once on the writer thread and said by it instead of this
        # module's log line: a single switch stops on it (switch.io.app).
        self.on_died: Callable[[str], None] | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # The queue's put, bound once (_submit runs on the caller's, the event
        # loop's, thread), while the writer thread takes operations; None
        # inline, and from when _closed is set: one look-up in _submit for both.
        self._put: Callable[[Any], None] | None = None if inline else self._queue.put
        self._lock = threading.Lock()
        self._closed: JournalClosed | None = None
        # Inline: no writer thread; every operation runs (and commits) in the
        # caller's thread before its future is returned.  For the deterministic
        # simulation, which must not depend on a thread's timing.
        self._inline = inline
        if inline:
            self._thread = None
            self._open()
            return
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, args=(started,), name=name, daemon=True)
        self._thread.start()
        # Blocks until the database is open (or raises why it could not be).
        started.result()

    def writer_identity(self) -> tuple[str, int] | None:
        """("thread", its native id) of the writer thread; None inline (for CPU metrics)."""
        thread = self._thread
        return None if thread is None or thread.native_id is None else ("thread", thread.native_id)

    # -- hooks for a backend, all called on the writer thread ----------------

    def _open(self) -> None:
        raise NotImplementedError

    def _close_db(self) -> None:
        raise NotImplementedError

    def _begin(self, writes: bool) -> None:
        raise NotImplementedError

    def _savepoint(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _rollback_to_savepoint(self) -> None:
        raise NotImplementedError

    def _in_transaction(self) -> bool:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    # -- the caller's side ---------------------------------------------------

    def _submit(self, fn: Callable[..., Any], args: tuple, writes: bool) -> Future:
        fut = self._new_future()
        op = (fut, fn, args, writes)
        # "Not closed, so queue it" is atomic with close() without taking the
        # lock (its acquire and release were a third of this call): this module
        # is compiled (switch.compiled), so nothing between reading _put (None
        # once _closed is set) and the put (C code that keeps the GIL) runs
        # bytecode, and no other thread runs in between; op is built before,
        # as an allocation may run the garbage collector.  So an operation is
        # either queued before the stop mark (or before a dying writer drains
        # the queue: _died sets _closed first) or refused.
        put = self._put
        if put is not None:
            put(op)
            return fut
        if self._inline:
            return self._submit_inline(fut, fn, args, writes)
        fut.set_exception(JournalClosed(*self._closed.args))
        return fut

    def _submit_inline(self, fut: Any, fn: Callable[..., Any], args: tuple, writes: bool) -> Any:
        with self._lock:
            if self._closed is None:
                if self._claim(fut):
                    self._run_batch([(fut, fn, args, writes)])
                return fut
            closed = self._closed
        fut.set_exception(JournalClosed(*closed.args))
        return fut

    def _failed(self, exc: BaseException) -> Future:
        fut = self._new_future()
        fut.set_exception(exc)
        return fut

    def close(self) -> None:
        """Run everything queued so far, then stop the writer and close the database."""
        if self._inline:
            with self._lock:
                if self._closed is None:
                    self._closed = JournalClosed("journal is closed")
                    self._close_db()
            return
        if threading.current_thread() is self._thread:
            raise RuntimeError("journal.close() called from the journal's own writer thread")
        with self._lock:
            if self._closed is None:
                self._closed = JournalClosed("journal is closed")
                self._put = None
                self._queue.put(_STOP)
        self._thread.join()

    # -- the writer thread ---------------------------------------------------

    def _main(self, started: Future[None]) -> None:
        try:
            self._open()
        except BaseException as exc:
            with self._lock:
                self._closed = JournalClosed(f"journal could not be opened: {exc!r}")
                self._put = None
            started.set_exception(exc)
            return
        started.set_result(None)
        try:
            self._loop()
        except BaseException as exc:  # a bug here must not leave futures hanging
            self._died(exc)
        finally:
            self._drain()
            try:
                self._close_db()
            except Exception:
                log.exception("closing the journal database failed")

    def _died(self, exc: BaseException) -> None:
        """The writer thread's loop raised ``exc``: nothing is journaled from now on
        (the thread is not started again); told to on_died, if set, unless closing."""
        with self._lock:
            unexpected = self._closed is None  # not closed by us
            if unexpected:
                self._closed = JournalClosed(f"journal writer thread died: {exc!r}")
                self._put = None
            why = self._closed.args[0]
        hook = self.on_died if unexpected else None
        if hook is None:
            log.exception("journal writer thread died: nothing can be journaled (every payment is answered 96)"
                          " until the switch is restarted (runbook: \"Journal failing\")")
            return
        # The hook's owner says what follows in one ERROR line; the traceback is for the bug report.
        log.warning("%s: the traceback, for the bug report", why, exc_info=exc)
        tell_died(hook, why)

    def _drain(self) -> None:
        assert self._closed is not None
        outcomes: list[Outcome] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and self._claim(item[0]):
                outcomes.append((item[0], False, JournalClosed(*self._closed.args)))
        if outcomes:
            self._hand_over(outcomes)

    def _hand_over(self, outcomes: list[Outcome]) -> None:
        if self._deliver is None:
            _resolve_claimed(outcomes)
            return
        try:
            self._deliver(resolve, outcomes)
        except Exception:  # e.g. the caller's event loop is closed: nobody is waiting
            log.exception("journal could not deliver %d results", len(outcomes))

    def _loop(self) -> None:
        get, get_nowait, max_batch, claim = self._queue.get, self._queue.get_nowait, self.max_batch, self._claim
        while True:
            item = get()
            batch: list[Op] = []
            stop = False
            while True:
                if item is _STOP:
                    stop = True
                    break
                if claim(item[0]):  # skip what the caller cancelled
                    batch.append(item)
                    if len(batch) >= max_batch:
                        break
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[Op]) -> None:
        stats = self.stats
        stats["ops"] += len(batch)
        if len(batch) > stats["max_batch"]:
            stats["max_batch"] = len(batch)
        writes = any(op[3] for op in batch)
        t0 = time.perf_counter()
        # (future, ok, result or exception), in batch order
        outcomes: list[tuple[Future, bool, Any]] = []
        try:
            self._begin(writes)
            if not self._run_ops(batch, outcomes, guarded=False):
                # A write failed: undo the batch and run it again with a
                # savepoint around each write, so that one fails alone.
                self._rollback()
                outcomes.clear()
                self._begin(writes)
                self._run_ops(batch, outcomes, guarded=True)
            self._commit()
        except BaseException as exc:
            stats["failed_commits"] += 1
            if writes:
                self.write_failed = (time.monotonic(), exc)  # the journal's ping reports it for a while
            self._report(len(batch), t0, False)
            try:
                self._rollback()
            except Exception:
                log.exception("journal rollback failed")
            done = {id(o[0]): o for o in outcomes}
            failed: list[Outcome] = []
            for fut, _fn, _args, _writes in batch:
                o = done.get(id(fut))
                if o is not None and not o[1]:
                    failed.append(o)  # its own error
                else:
                    err = JournalError(f"journal batch of {len(batch)} not written: {exc!r}")
                    err.__cause__ = exc
                    failed.append((fut, False, err))
            self._hand_over(failed)
            if not isinstance(exc, Exception):
                raise
            return
        stats["commits"] += 1
        self._report(len(batch), t0, True)
        self._hand_over(outcomes)

    def _report(self, size: int, t0: float, committed: bool) -> None:
        hook = self.on_batch
        if hook is not None:
            try:
                hook(size, time.perf_counter() - t0, committed)
            except Exception:  # metrics must not fail a batch
                log.exception("journal on_batch hook failed")

    def _run_ops(self, batch: list[Op], outcomes: list, *, guarded: bool) -> bool:
        """Run the batch's operations, appending their outcomes.

        Unguarded, the first failing write stops the run (False): the caller
        rolls back and runs the batch again guarded.  Each savepoint costs two
        statements, and each statement hands the GIL to the event loop and
        waits to get it back, so the common batch where nothing fails runs
        without them.  A backend with a faster way to run some operations
        overrides this and hands the others to :meth:`_run_op`.
        """
        run_op = self._run_op
        for op in batch:
            if not run_op(op, outcomes, guarded):
                return False
        return True

    def _run_op(self, op: Op, outcomes: list, guarded: bool) -> bool:
        """Run one operation, append its outcome; False if it was an unguarded write that failed."""
        fut, fn, args, writes = op
        if guarded and writes:
            self._savepoint()
        try:
            result = fn(*args)
        except Exception as exc:
            outcomes.append((fut, False, self._failed_op(exc)))
            if guarded and writes:
                self._rollback_to_savepoint()
            self._check_transaction(exc)
            return not (writes and not guarded)
        if guarded and writes:
            self._release()
        outcomes.append((fut, True, result))
        return True

    def _failed_op(self, exc: BaseException) -> BaseException:
        """What an operation that raised ``exc`` fails with: a backend turns "the
        database cannot write" (disk full, I/O error) into JournalError and notes it
        in ``write_failed``, as a failed commit is."""
        return exc

    def _check_transaction(self, exc: BaseException) -> None:
        """After ``exc`` failed an operation: raise if the database ended the transaction."""
        if not self._in_transaction():
            # The database ended the transaction (I/O error, disk full, ...).
            raise JournalError(f"the journal transaction was rolled back: {exc}") from exc


def tell_died(hook: Callable[[str], None], why: str) -> None:
    """Tell a journal's ``on_died`` hook why its writer (thread or process) died; a hook
    that fails is logged, never raised into the writer's own failure path."""
    try:
        hook(why)
    except Exception:
        log.exception("%s; the journal's on_died hook failed", why)
