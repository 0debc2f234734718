"""HTTP for operators on 127.0.0.1:9583: health, metrics, status page, admin API.

Small on purpose (h11 over asyncio streams): a handful of GET/POST endpoints,
one request per connection turn, bodies of a few KiB at most.

- ``GET /healthz``: liveness. 200 ``{"status": "alive", ...}`` whenever the
  process answers at all; a load balancer or Kubernetes ``livenessProbe``
  restarts the process only when this fails.
- ``GET /readyz``: readiness. 200 ``{"ready": true, ...}`` when the journal
  is writable (a write transaction through the journal's writer: empty, or a
  probe write while the last batch of writes failed, files.writable) and
  every payment kind that has a route has at least one healthy acquirer on
  its routes; 503 with the same JSON naming what is wrong otherwise, and
  503 from SIGTERM on (``draining``: the listeners are closed while requests
  in flight finish; new ones on open connections are answered 91).  Take
  the switch out of a load balancer's pool (``readinessProbe``) on 503.
- ``GET /metrics``: Prometheus text format (the journal is pinged first:
  ``payswitch_journal_writable``).
- ``GET /status``: a self-contained HTML status page for operators, which
  polls ``GET /status.json`` (see :mod:`switch.io.status`).
- ``POST /admin/reload``: re-read the configuration file (like SIGHUP); 200 on
  success, 400 with the reason when the new file is bad (the old one stays).
- ``POST /admin/reversals/<rrn>/close``: a reversal the acquirer refused for
  good (state ``reversal_refused``), settled with the acquirer by hand, is
  closed (state ``reversal_closed``, :mod:`switch.core.refused`) and leaves
  ``payswitch_reversals_refused``.  200 ``{"rrn", "state"}``; 404 when no
  transaction has that RRN; 409 naming its state when it is not a refused
  reversal (a second close: already closed); 400 for an RRN that is not 12
  digits.

Every ``/admin/`` endpoint needs ``Authorization: Bearer <token>`` with the
token of ``[http] admin_token_file`` / ``admin_token_env``; without one
configured they are off (403).  A request without the right token gets 401
and changes nothing.  A web page in an operator's browser can't send that
header cross-origin without a CORS preflight, which is never granted, and
admin requests with a form content type or a cross-site ``Origin`` /
``Sec-Fetch-Site`` are refused besides, so no page can make the switch act.
The health, metrics and status endpoints stay open (they change nothing).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time

import h11

from switch.core import refused, states
from switch.io import status

log = logging.getLogger("payswitch.http")

MAX_REQUEST = 16 * 1024
JOURNAL_PING_TIMEOUT = 2.0  # seconds: a journal slower than this is not ready

_JSON = "application/json"
_ROUTES = {
    b"/healthz": b"GET",
    b"/readyz": b"GET",
    b"/metrics": b"GET",
    b"/status": b"GET",
    b"/status.json": b"GET",
    b"/admin/reload": b"POST",
}
# Routes with a variable part: a path is looked up by its pattern (route_of).
_CLOSE_PREFIX, _CLOSE_SUFFIX = b"/admin/reversals/", b"/close"
CLOSE_ROUTE = _CLOSE_PREFIX + b"<rrn>" + _CLOSE_SUFFIX
_ROUTES[CLOSE_ROUTE] = b"POST"


def route_of(path: bytes) -> bytes:
    """The route ``path`` is served by: the pattern of a route with a variable part, else itself."""
    if path.startswith(_CLOSE_PREFIX) and path.endswith(_CLOSE_SUFFIX) \
            and len(path) > len(_CLOSE_PREFIX) + len(_CLOSE_SUFFIX):
        return CLOSE_ROUTE
    return path


def rrn_of(path: bytes) -> str:
    """The variable part of a :data:`CLOSE_ROUTE` path (checked by the caller, never quoted back)."""
    return path[len(_CLOSE_PREFIX):-len(_CLOSE_SUFFIX)].decode("ascii", "replace")


def bad_rrn(rrn: str) -> tuple[int, str, bytes] | None:
    """The 400 for a path whose RRN is not 12 digits (it may be anything pasted: not quoted), or None."""
    if refused.is_rrn(rrn):
        return None
    body = {"error": f"an RRN is {refused.RRN_LENGTH} digits (field 37, as the log and the journal show it)"}
    return 400, _JSON, json.dumps(body).encode()


# Content types a browser sends cross-origin without a preflight (HTML forms, no-cors fetch).
_FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data", b"text/plain")


class AdminHttp:
    def __init__(self, switch, reload_callback, token: bytes | None = None):
        self.switch = switch
        self.reload_callback = reload_callback
        self.token = token
        metrics = switch.metrics
        # Journal commit latency and batch size; link counters of acquirers
        # built without a listener (both idempotent).
        metrics.watch_journal(switch.journal)
        metrics.attach_links(switch.acquirers)

    async def serve(self, host: str, port: int) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._connection, host, port, reuse_address=True)

    # -- checks ---------------------------------------------------------------------

    async def journal_check(self) -> tuple[bool, str]:
        """(writable, why not) and the ``payswitch_journal_writable`` gauge."""
        ping = getattr(self.switch.journal, "ping", None)
        if ping is None:
            ok, why = True, "journal backend has no ping; assumed writable"
        else:
            try:
                await asyncio.wait_for(asyncio.wrap_future(ping()), JOURNAL_PING_TIMEOUT)
                ok, why = True, "writable"
            except asyncio.TimeoutError:
                ok, why = False, f"no answer from the journal writer within {JOURNAL_PING_TIMEOUT:g}s"
            except Exception as exc:
                ok, why = False, f"{type(exc).__name__}: {exc}"
        self.switch.metrics.journal_writable.set(1 if ok else 0)
        return ok, why

    def kinds_check(self, health: dict[str, bool]) -> dict[str, dict]:
        """Per payment kind with a route: its acquirers' health and whether any is up."""
        kinds: dict[str, dict] = {}
        for route in self.switch.cfg.routes:
            entry = kinds.setdefault(route.kind, {"acquirers": {}})
            for name in route.acquirers:
                entry["acquirers"][name] = bool(health.get(name, False))
        for entry in kinds.values():
            entry["ok"] = any(entry["acquirers"].values())
        return kinds

    async def readiness(self) -> tuple[bool, dict]:
        health = self.switch.metrics.refresh(self.switch.acquirers)
        journal_ok, journal_why = await self.journal_check()
        kinds = self.kinds_check(health)
        reasons = [] if journal_ok else [f"journal: {journal_why}"]
        if self.switch.draining:  # SIGTERM: the listeners are closed; send no one here any more
            reasons.insert(0, "draining: stopping, new terminal connections are refused")
        reasons += [
            f"{kind}: no healthy acquirer among {', '.join(entry['acquirers'])}"
            for kind, entry in sorted(kinds.items())
            if not entry["ok"]
        ]
        body = {
            "ready": not reasons,
            "reasons": reasons,
            "journal": {"ok": journal_ok, "detail": journal_why},
            "kinds": kinds,
            "acquirers": health,
        }
        return not reasons, body

    # -- routing ----------------------------------------------------------------------

    def admin_refusal(self, headers) -> tuple[int, str, bytes] | None:
        """Why an admin request may not act (status, type, body), or None when it may."""
        h: dict[bytes, bytes] = {}
        for name, value in headers:
            h.setdefault(name.lower(), value)
        if self.token is None:
            return 403, _JSON, b'{"error": "admin API off: no admin_token_file or admin_token_env configured"}'
        scheme, _, given = h.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.token):
            return 401, _JSON, b'{"error": "missing or wrong bearer token"}'
        ctype = h.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if ctype in _FORM_TYPES:
            return 415, _JSON, b'{"error": "form content types are refused on the admin API"}'
        if h.get(b"sec-fetch-site", b"none") not in (b"none", b"same-origin") or b"origin" in h:
            return 403, _JSON, b'{"error": "cross-site requests are refused on the admin API"}'
        return None

    def guard(self, method: bytes, path: bytes, headers, routes: dict[bytes, bytes]) -> tuple[int, str, bytes] | None:
        """The answer that stops a request before its route (the admin checks, 405), or None."""
        if path.startswith(b"/admin/"):
            refusal = self.admin_refusal(headers)
            if refusal is not None:
                return refusal
        route = route_of(path)
        if route in routes and method != routes[route]:
            return 405, "text/plain", b"method not allowed\n"
        return None

    async def _route(self, method: bytes, target: bytes, headers=()) -> tuple[int, str, bytes]:
        path = target.split(b"?", 1)[0]
        stop = self.guard(method, path, headers, _ROUTES)
        if stop is not None:
            return stop
        if path == b"/healthz":
            body = {"status": "alive", "uptime_seconds": round(_uptime(self.switch), 3)}
            return 200, _JSON, json.dumps(body).encode()
        if path == b"/readyz":
            ok, body = await self.readiness()
            return (200 if ok else 503), _JSON, json.dumps(body).encode()
        if path == b"/metrics":
            self.switch.metrics.refresh(self.switch.acquirers)
            await self.journal_check()
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.switch.metrics.render()
        if path == b"/status":
            return 200, "text/html; charset=utf-8", status.PAGE
        if path == b"/status.json":
            ok, ready = await self.readiness()
            doc = status.snapshot(self.switch.metrics, ready)
            return 200, _JSON, json.dumps(doc).encode()
        if path == b"/admin/reload":
            ok, message = self.reload_callback()
            body = json.dumps({"reloaded": ok, "message": message}).encode()
            return (200 if ok else 400), _JSON, body
        if route_of(path) == CLOSE_ROUTE:
            return await self.close_reversal(rrn_of(path))
        return 404, "text/plain", b"not found\n"

    async def close_reversal(self, rrn: str) -> tuple[int, str, bytes]:
        """``POST /admin/reversals/<rrn>/close`` (:func:`switch.core.refused.close`)."""
        stop = bad_rrn(rrn)
        if stop is not None:
            return stop
        try:
            outcome = await self.switch.close_refused(rrn)
        except Exception as exc:
            log.exception("rrn %s: closing its refused reversal failed", rrn)
            # The journal did not answer: the close may or may not have gone through.
            body = {"rrn": rrn, "error": f"journal: {type(exc).__name__}; ask again (409 if it was closed)"}
            return 503, _JSON, json.dumps(body).encode()
        if outcome.result == refused.NO_SUCH:
            return 404, _JSON, json.dumps({"rrn": rrn, "error": "no transaction has this RRN"}).encode()
        if outcome.result == refused.NOT_REFUSED:
            why = ("already closed" if outcome.state == states.REVERSAL_CLOSED
                   else f"not a refused reversal: only one in state {states.REVERSAL_REFUSED} can be closed")
            body = {"rrn": rrn, "state": outcome.state, "error": why}
            return 409, _JSON, json.dumps(body).encode()
        return 200, _JSON, json.dumps({"rrn": rrn, "state": outcome.state}).encode()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(reader.read(4096), 30)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    length = _content_length(event.headers)
                    if length is None or length > MAX_REQUEST:
                        # No admin call carries a body worth reading: a large (or chunked)
                        # one is refused before a byte of it is read.
                        await _refuse(writer, conn, 413, "request body too large\n")
                        break
                    # read past the request body (admin calls carry none worth reading)
                    while True:
                        ev = conn.next_event()
                        if ev is h11.NEED_DATA:
                            conn.receive_data(await asyncio.wait_for(reader.read(4096), 30))
                        elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                            break
                    head = event.method == b"HEAD"  # GET without the body (RFC 9110 9.3.2): health checkers send it
                    status_code, ctype, body = await self._route(b"GET" if head else event.method, event.target,
                                                                 event.headers)
                    headers = [
                        *([("www-authenticate", "Bearer")] if status_code == 401 else []),
                        ("content-type", ctype),
                        ("content-length", str(len(body))),
                        ("cache-control", "no-store"),
                    ]
                    # A HEAD answer has the GET's headers, content-length included, and no body.
                    await _send(writer, conn, status_code, headers, b"" if head else body)
                    if conn.our_state is h11.MUST_CLOSE:
                        break
                    conn.start_next_cycle()
                    continue
                break  # ConnectionClosed or anything unexpected
        except h11.RemoteProtocolError as e:
            # A request h11 cannot take (no Host on HTTP/1.1, headers over
            # MAX_REQUEST, not HTTP at all): answered with its status, not a silent close.
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                try:
                    await _refuse(writer, conn, e.error_status_hint, "bad request\n")
                except (h11.LocalProtocolError, ConnectionError):
                    pass
        except (asyncio.TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("admin HTTP connection failed")
        finally:
            writer.close()


def _content_length(headers) -> int | None:
    """The request's declared body length (0 without one); None for a chunked body."""
    for name, value in headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            return int(value)  # h11 has checked it is digits
    return 0


async def _refuse(writer, conn, status: int, text: str) -> None:
    body = text.encode()
    headers = [("content-type", "text/plain"), ("content-length", str(len(body))), ("connection", "close")]
    await _send(writer, conn, status, headers, body)


async def _send(writer, conn, status: int, headers: list, body: bytes) -> None:
    writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
    if body:
        writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


def _uptime(switch) -> float:
    started = getattr(switch, "started", None)
    return time.time() - started if started else 0.0
