"""Process logging: plain text for a terminal, one JSON object per line for a log shipper.

``payswitch serve --log-format json`` writes each event as
``{"ts": "2026-01-31T12:00:00.123Z", "level": "INFO", "logger": "payswitch",
"msg": "..."}`` plus ``rrn``, ``terminal`` (and ``stan``, ``acquirer``,
``txn``) when the call passes them with ``extra=``, so one payment can be
followed through the switch.  The level comes from ``PAYSWITCH_LOG``
(DEBUG, INFO, WARNING, ERROR; default INFO).  Card data never goes into a log
record in the first place: there is no field here for it.
"""
from __future__ import annotations

import json
import logging
import time

__all__ = ["LEVELS", "FORMATS", "JsonFormatter", "level_from_env", "setup"]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Record attributes (given with extra=) that go into a JSON event when present.
CONTEXT = ("rrn", "terminal", "stan", "acquirer", "txn")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (with ``worker``: its worker process's index)."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + ".%03dZ" % record.msecs
        event = {"ts": ts, "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if self.worker is not None:
            event["worker"] = self.worker
        for key in CONTEXT:
            value = record.__dict__.get(key)
            if value is not None:
                event[key] = value
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False, default=str)


def level_from_env(value: str | None) -> str:
    """``PAYSWITCH_LOG``'s value as a level name; ValueError naming the allowed ones."""
    if value is None or value.strip() == "":
        return "INFO"
    name = value.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise ValueError(f"PAYSWITCH_LOG must be one of {', '.join(LEVELS)}, got {value!r}")
    return name


def setup(fmt: str = "text", level: str = "INFO", worker: int | None = None) -> None:
    """Configure the root logger once for the process (stderr); ``worker``: the
    index of this worker process (``serve --workers``), on every line."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler()
    text = TEXT_FORMAT if worker is None else TEXT_FORMAT.replace("%(name)s", f"%(name)s[worker {worker}]")
    handler.setFormatter(JsonFormatter(worker) if fmt == "json" else logging.Formatter(text))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)


class Throttled:
    """At most one log line per ``every`` seconds for a recurring event, with the
    number of those not logged in between: a flood (a client opening thousands
    of connections over a cap) costs a line per interval, not a line per event,
    and the metrics keep the exact counts."""

    def __init__(self, logger: logging.Logger, every: float = 10.0, clock=None) -> None:
        self._log = logger
        self._every = every
        self._clock = clock or time.monotonic
        self._next = 0.0
        self._skipped = 0

    def warning(self, msg: str, *args) -> None:
        now = self._clock()
        if now < self._next:
            self._skipped += 1
            return
        if self._skipped:
            msg += f" (and {self._skipped} more like it in the last {self._every:.0f} s, not logged)"
        self._skipped = 0
        self._next = now + self._every
        self._log.warning(msg, *args)
