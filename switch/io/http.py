"""HTTP for operators on 127.0.0.1:9583: /healthz, /metrics and the admin API.

Small on purpose (h11 over asyncio streams): a handful of GET/POST endpoints,
one request per connection turn, bodies of a few KiB at most.

- ``GET /healthz``: 200 with JSON when the journal is open and every acquirer
  has a usable connection, 503 (same JSON) otherwise.
- ``GET /metrics``: Prometheus text format.
- ``POST /admin/reload``: re-read the configuration file (like SIGHUP); 200 on
  success, 400 with the reason when the new file is bad (the old one stays).
"""
from __future__ import annotations

import asyncio
import json
import logging

import h11

log = logging.getLogger("payswitch.http")

MAX_REQUEST = 16 * 1024


class AdminHttp:
    def __init__(self, switch, reload_callback):
        self.switch = switch
        self.reload_callback = reload_callback

    async def serve(self, host: str, port: int) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._connection, host, port, reuse_address=True)

    def _route(self, method: bytes, target: bytes) -> tuple[int, str, bytes]:
        path = target.split(b"?", 1)[0]
        if path == b"/healthz" and method == b"GET":
            acquirers = {name: bool(a.healthy()) for name, a in self.switch.acquirers.items()}
            ok = all(acquirers.values())
            for name, up in acquirers.items():
                self.switch.metrics.acquirer_up.labels(name).set(1 if up else 0)
            body = json.dumps({"status": "ok" if ok else "degraded", "acquirers": acquirers}).encode()
            return (200 if ok else 503), "application/json", body
        if path == b"/metrics" and method == b"GET":
            for name, a in self.switch.acquirers.items():
                self.switch.metrics.acquirer_up.labels(name).set(1 if a.healthy() else 0)
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.switch.metrics.render()
        if path == b"/admin/reload" and method == b"POST":
            ok, message = self.reload_callback()
            body = json.dumps({"reloaded": ok, "message": message}).encode()
            return (200 if ok else 400), "application/json", body
        if path in (b"/healthz", b"/metrics", b"/admin/reload"):
            return 405, "text/plain", b"method not allowed\n"
        return 404, "text/plain", b"not found\n"

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
                    status, ctype, body = self._route(event.method, event.target)
                    # read past the request body (admin calls carry none worth reading)
                    while True:
                        ev = conn.next_event()
                        if ev is h11.NEED_DATA:
                            conn.receive_data(await asyncio.wait_for(reader.read(4096), 30))
                        elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                            break
                    headers = [("content-type", ctype), ("content-length", str(len(body)))]
                    writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
                    writer.write(conn.send(h11.Data(data=body)))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    if conn.our_state is h11.MUST_CLOSE:
                        break
                    conn.start_next_cycle()
                    continue
                break  # ConnectionClosed or anything unexpected
        except (h11.RemoteProtocolError, asyncio.TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("admin HTTP connection failed")
        finally:
            writer.close()
