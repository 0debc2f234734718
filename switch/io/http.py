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
Each 401 is counted (``payswitch_admin_auth_failures_total``) and logged
with the caller's address, never the token.

The port stays up for others whatever one client sends: a request has
:data:`REQUEST_TIMEOUT` from its first byte to its last (408 after), an answer
the same to be taken by the client (else the connection is dropped), at most
:data:`MAX_CONNECTIONS` are open (one more closes the longest idle, else 503), and a request over
:data:`MAX_REQUEST` is refused (413 body, 431 headers) before it is read.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time

import h11
from prometheus_client.core import Metric

from switch.core import refused, states
from switch.io import status

log = logging.getLogger("payswitch.http")

MAX_REQUEST = 16 * 1024
JOURNAL_PING_TIMEOUT = 2.0  # seconds: a journal slower than this is not ready
IDLE_TIMEOUT = 30.0  # seconds a connection may wait for its next request's first byte
REQUEST_TIMEOUT = 10.0  # seconds for a whole request, head and body, from its first byte: else 408
MAX_CONNECTIONS = 64  # open at once; one more closes the longest idle, or is answered 503 and closed

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


class _AuthFailures:
    """``payswitch_admin_auth_failures_total`` on a registry, read from its :class:`AdminHttp`."""

    def __init__(self, server: AdminHttp) -> None:
        self.server = server

    def collect(self):
        yield auth_failures_family(self.server.auth_failures)


def auth_failures_family(count: int, labels: dict[str, str] | None = None) -> Metric:
    family = Metric("payswitch_admin_auth_failures",
                    "Admin API requests refused 401: no or a wrong bearer token", "counter")
    family.add_sample("payswitch_admin_auth_failures_total", labels or {}, count)
    return family


class AdminHttp:
    auth_failures = 0  # admin requests answered 401 (payswitch_admin_auth_failures_total)
    connections = 0  # open now (MAX_CONNECTIONS)

    def __init__(self, switch, reload_callback, token: bytes | None = None):
        self.switch = switch
        self.reload_callback = reload_callback
        self.token = token
        self.idle: dict = {}  # writer → since when it waits for a request's first byte
        metrics = switch.metrics
        metrics.registry.register(_AuthFailures(self))
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

    def refused_admin(self, writer, method: bytes, path: bytes) -> None:
        """A 401: counted, and logged with the caller's address and the route, never the token."""
        self.auth_failures += 1
        log.warning("admin API: %s %s from %s refused 401 (no or a wrong bearer token; %d refused so far)",
                    method.decode("ascii", "replace")[:10], _shown(path), _peer(writer), self.auth_failures)

    def _make_room(self) -> bool:
        """At MAX_CONNECTIONS, the connection idle the longest (no request under way) is
        dropped for a new one, so clients that connect and send nothing hold no port."""
        if not self.idle:
            return False
        oldest = min(self.idle, key=self.idle.__getitem__)
        del self.idle[oldest]
        oldest.transport.abort()
        return True

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        if self.connections >= MAX_CONNECTIONS and not self._make_room():
            # A client holding many connections open takes no more: the port stays up for others.
            log.warning("admin HTTP: %d connections open, refusing one more from %s", MAX_CONNECTIONS, _peer(writer))
            try:
                await _refuse(reader, writer, h11.Connection(h11.SERVER), 503, "too many connections\n")
            except (asyncio.TimeoutError, ConnectionError):
                pass
            writer.close()
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()
            return
        self.connections += 1
        try:
            await self._serve_connection(reader, writer)
        except (asyncio.TimeoutError, ConnectionError):
            pass  # an answer (a refusal's included) the client did not read in time: see _send
        finally:
            self.connections -= 1
            self.idle.pop(writer, None)
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a close would wait for a client that does not read

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        clock = asyncio.get_running_loop().time
        # Until a request's first byte, the connection may idle; from it, the whole
        # request (head and body) has REQUEST_TIMEOUT: a client trickling bytes
        # (slowloris) is answered 408 and closed, whatever its pace.
        started: float | None = None
        idle_since = clock()

        async def receive() -> None:
            nonlocal started
            limit = (started + REQUEST_TIMEOUT) if started is not None else (idle_since + IDLE_TIMEOUT)
            if started is None:
                self.idle[writer] = idle_since
            data = await asyncio.wait_for(reader.read(4096), max(0.0, limit - clock()))
            self.idle.pop(writer, None)
            if data and started is None:
                started = clock()
            conn.receive_data(data)

        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    await receive()
                    continue
                if isinstance(event, h11.Request):
                    if event.http_version not in (b"1.0", b"1.1"):  # h11 takes any "HTTP/d.d"
                        await _refuse(reader, writer, conn, 505, "HTTP/1.1 or HTTP/1.0 only\n")
                        break
                    length = _content_length(event.headers)
                    if length is None or length > MAX_REQUEST:
                        # No admin call carries a body worth reading: a large (or chunked)
                        # one is refused before a byte of it is read.
                        await _refuse(reader, writer, conn, 413, "request body too large\n")
                        break
                    # read past the request body (admin calls carry none worth reading)
                    while True:
                        ev = conn.next_event()
                        if ev is h11.NEED_DATA:
                            await receive()
                        elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                            break
                    head = event.method == b"HEAD"  # GET without the body (RFC 9110 9.3.2): health checkers send it
                    try:
                        status_code, ctype, body = await self._route(b"GET" if head else event.method,
                                                                     event.target, event.headers)
                    except Exception:  # ours: answered, the reason in the log only (it may name files)
                        log.exception("admin HTTP: %s %s failed", event.method.decode("ascii", "replace")[:10],
                                      _shown(event.target.split(b"?", 1)[0]))
                        status_code, ctype, body = 500, "text/plain", b"internal error: see the switch's log\n"
                    if status_code == 401:
                        self.refused_admin(writer, event.method, event.target.split(b"?", 1)[0])
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
                    # a pipelined request already here has started; else the connection idles
                    started, idle_since = (clock() if conn.trailing_data[0] else None), clock()
                    continue
                break  # ConnectionClosed or anything unexpected
        except h11.RemoteProtocolError as e:
            # A request h11 cannot take (no Host on HTTP/1.1, headers over
            # MAX_REQUEST, not HTTP at all): answered with its status, not a silent close.
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                try:
                    await _refuse(reader, writer, conn, e.error_status_hint, "bad request\n")
                except (h11.LocalProtocolError, ConnectionError):
                    pass
        except asyncio.TimeoutError:
            if started is not None and conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                try:  # part of a request came, not all of it in time
                    await _refuse(reader, writer, conn, 408, "request timeout: send the whole request at once\n")
                except (h11.LocalProtocolError, ConnectionError):
                    pass
        except ConnectionError:
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


LINGER = 1.0  # seconds a refused client's further bytes are read and dropped before the close


async def _refuse(reader, writer, conn, status: int, text: str) -> None:
    """The refusal, then our side shut and what the client still sends dropped for a moment
    (at most :data:`LINGER`, ``MAX_REQUEST`` bytes): closing with its bytes unread would
    reset the connection, and the client would lose the answer that says why."""
    body = text.encode()
    headers = [("content-type", "text/plain"), ("content-length", str(len(body))), ("connection", "close")]
    await _send(writer, conn, status, headers, body)
    if writer.can_write_eof():
        writer.write_eof()
    loop = asyncio.get_running_loop()
    until, dropped = loop.time() + LINGER, 0
    try:
        while dropped <= MAX_REQUEST:
            chunk = await asyncio.wait_for(reader.read(4096), max(0.0, until - loop.time()))
            if not chunk:
                break
            dropped += len(chunk)
    except (asyncio.TimeoutError, ConnectionError):
        pass


async def _send(writer, conn, status: int, headers: list, body: bytes) -> None:
    """One answer; TimeoutError when the client has not taken it within REQUEST_TIMEOUT (a slow
    reader, its answers piling up in our buffers: the connection is dropped, not kept at its pace)."""
    writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
    if body:
        writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)


def _shown(path: bytes) -> str:
    """A path as the log may show it: its route, never what was sent (it may be anything pasted, a PAN)."""
    route = route_of(path)
    return route.decode() if route in _ROUTES else "a path of no route"


def _peer(writer) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "an unknown peer"


def _uptime(switch) -> float:
    started = getattr(switch, "started", None)
    return time.time() - started if started else 0.0
