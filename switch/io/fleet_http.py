"""The supervisor's HTTP with ``serve --workers N``: one address for the whole switch.

On ``[http] port`` (worker ``i`` serves its own admin HTTP on ``port + 1 + i``):

- ``GET /metrics``: every worker's metrics, scraped from its own port at
  this moment, each sample labelled ``worker="i"`` (sum over ``worker`` in
  PromQL for the switch's totals), plus the supervisor's own:
  ``payswitch_workers`` (configured), ``payswitch_worker_up{worker}`` (1 when
  that worker answered this scrape), ``payswitch_worker_restarts_total{worker}``
  and its own admin refusals, ``payswitch_admin_auth_failures_total{worker="supervisor"}``.
  One scrape target for Prometheus, whatever N is;
- ``GET /healthz``: 200 while at least one worker answers (the switch serves
  terminals), with ``"status": "alive"`` when all do and ``"degraded"``
  otherwise, and each worker's pid, state and restarts; 503 when none does;
- ``GET /readyz``: 200 when every worker is ready (its own ``/readyz``), 503
  otherwise; each worker's ``state`` (ready, starting, exited, restarting)
  and answer either way;
- while worker 0 (the reversal sender, which reports the journal's reversal
  backlog) does not answer, the supervisor reads that backlog from the
  journal itself: ``payswitch_reversal_queue`` and
  ``payswitch_reversal_oldest_age_seconds`` with ``worker="supervisor"`` in
  ``/metrics``, and ``reversal_sender`` in ``/readyz`` (reversals wait in the
  journal, and are sent once worker 0 is back);
- ``GET /status``: the status page, polling ``/status.json``: the workers'
  own snapshots added up (:func:`switch.io.status.merge`), with each
  worker's state;
- ``POST /admin/reload``: the file is checked here, then every worker takes
  it (SIGHUP); the same bearer token and checks as a worker's admin API;
- ``POST /admin/reversals/<rrn>/close``: checked here as any admin request,
  then forwarded to worker 0 (the reversal sender, which keeps
  ``payswitch_reversals_refused``) on its own port, whose answer is passed
  on; 503 when worker 0 is not ready or does not answer.  The supervisor has
  no journal of its own.
"""
from __future__ import annotations

import asyncio
import json
import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from switch.io import status as status_page
from switch.io.http import _JSON, CLOSE_ROUTE, AdminHttp, auth_failures_family, bad_rrn, route_of, rrn_of
from switch.io.loopwatch import cpu_seconds, process_stat

SCRAPE_TIMEOUT = 2.0  # seconds for one worker to answer the supervisor
CLOSE_TIMEOUT = 5.0  # seconds for worker 0 to close a refused reversal (two journal writes)


async def http_get(host: str, port: int, path: str, timeout: float = SCRAPE_TIMEOUT) -> tuple[int, bytes] | None:
    """One GET to a worker's admin HTTP: (status, body), or None when it does not answer."""
    return await _exchange(host, port, f"GET {path} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n",
                           timeout)


async def http_post(host: str, port: int, path: str, token: bytes,
                    timeout: float = SCRAPE_TIMEOUT) -> tuple[int, bytes] | None:
    """One admin POST without a body to a worker's admin HTTP, with the bearer
    token: (status, body), or None when it does not answer."""
    return await _exchange(host, port, f"POST {path} HTTP/1.1\r\nHost: worker\r\nContent-Length: 0\r\n"
                                       f"Authorization: Bearer {token.decode()}\r\nConnection: close\r\n\r\n",
                           timeout)


async def _exchange(host: str, port: int, request: str, timeout: float) -> tuple[int, bytes] | None:
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request.encode())
                data = await reader.read()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        return int(head.split()[1]), body
    except (IndexError, ValueError):
        return None


def merge_metrics(texts: dict[int, str]) -> dict[str, Metric]:
    """Metric families of several workers, each sample labelled with its worker index."""
    merged: dict[str, Metric] = {}
    for index, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for s in family.samples:
                into.add_sample(s.name, {**s.labels, "worker": str(index)}, s.value, s.timestamp, s.exemplar)
    return merged


# What the supervisor serves itself (a worker also serves /status on its own port).
_FLEET_ROUTES = {b"/healthz": b"GET", b"/readyz": b"GET", b"/metrics": b"GET", b"/status": b"GET",
                 b"/status.json": b"GET", b"/admin/reload": b"POST", CLOSE_ROUTE: b"POST"}


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self):
        return self.families


class FleetHttp(AdminHttp):
    """The supervisor's endpoints; the connection handling and admin checks are :class:`AdminHttp`'s."""

    def __init__(self, fleet, token: bytes | None = None) -> None:  # no switch of its own here
        self.fleet = fleet
        self.token = token
        self.idle: dict = {}

    def _worker_address(self, index: int) -> tuple[str, int]:
        from switch.io.workers import worker_http_port

        host = self.fleet.cfg.http.host
        return ("127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host,
                worker_http_port(self.fleet.cfg, index))

    async def _ask_all(self, path: str) -> list[tuple[int, bytes] | None]:
        return list(await asyncio.gather(*(
            http_get(*self._worker_address(w.index), path) if w.alive and w.ready.is_set() else _none()
            for w in self.fleet.workers
        )))

    async def metrics(self) -> bytes:
        answers = await self._ask_all("/metrics")
        texts = {i: a[1].decode("utf-8", "replace") for i, a in enumerate(answers) if a and a[0] == 200}
        families = merge_metrics(texts)
        configured = Metric("payswitch_workers", "Worker processes configured (serve --workers)", "gauge")
        configured.add_sample("payswitch_workers", {}, len(self.fleet.workers))
        up = Metric("payswitch_worker_up", "1 when the worker answered this scrape", "gauge")
        restarts = Metric("payswitch_worker_restarts", "Times the supervisor restarted the worker", "counter")
        for w in self.fleet.workers:
            up.add_sample("payswitch_worker_up", {"worker": str(w.index)}, 1 if w.index in texts else 0)
            restarts.add_sample("payswitch_worker_restarts_total", {"worker": str(w.index)}, w.restarts)
        writer = self.fleet.writer
        seconds = cpu_seconds(process_stat(writer.pid)) if writer is not None else None
        if seconds is not None:
            # The one journal writer all workers share: labelled as the supervisor's, not a worker's.
            cpu = families.get("payswitch_cpu_seconds")
            if cpu is None:
                cpu = families["payswitch_cpu_seconds"] = Metric(
                    "payswitch_cpu_seconds", "CPU time by part of the switch", "counter")
            cpu.add_sample("payswitch_cpu_seconds_total", {"part": "journal_writer", "worker": "supervisor"}, seconds)
        self._supervisor_reloads(families)
        if 0 not in texts:
            backlog = await self.sender_backlog()
            if backlog is not None:
                self._sender_down(families, *backlog)
        # the supervisor's own admin refusals, beside the workers' (a worker's port takes them too)
        supervisor = {"worker": "supervisor"}
        if "payswitch_admin_auth_failures" in families:
            families["payswitch_admin_auth_failures"].add_sample(
                "payswitch_admin_auth_failures_total", supervisor, self.auth_failures)
        else:
            families["payswitch_admin_auth_failures"] = auth_failures_family(self.auth_failures, supervisor)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families([configured, up, restarts, *families.values()]))
        return generate_latest(registry)

    def _supervisor_reloads(self, families: dict[str, Metric]) -> None:
        """The reloads the supervisor checked (a file it rejects reaches no worker), beside the workers' own."""
        supervisor = {"worker": "supervisor"}
        reloads = families.setdefault("payswitch_config_reloads", Metric(
            "payswitch_config_reloads", "Configuration reloads by result", "counter"))
        for result, count in self.fleet.reloads.items():
            reloads.add_sample("payswitch_config_reloads_total", {"result": result, **supervisor}, count)
        last = families.setdefault("payswitch_config_last_reload_successful", Metric(
            "payswitch_config_last_reload_successful", "0 when the last reload was rejected", "gauge"))
        last.add_sample("payswitch_config_last_reload_successful", supervisor, 1 if self.fleet.last_reload_ok else 0)

    async def sender_backlog(self) -> tuple[int, float | None] | None:
        """(reversals waiting, when the oldest was queued) as the journal says, read by the
        supervisor: worker 0, which reports them, is down.  None if the journal does not say."""
        journal = getattr(self.fleet, "journal", None)
        if journal is None:
            return None
        try:
            count, oldest, _refused = await asyncio.wait_for(asyncio.wrap_future(journal.reversal_backlog()),
                                                             SCRAPE_TIMEOUT)
        except Exception:  # the journal is failing too: the workers' own metrics say so
            return None
        return count, oldest

    @staticmethod
    def _sender_down(families: dict[str, Metric], count: int, oldest: float | None) -> None:
        supervisor = {"worker": "supervisor"}
        queue = families.setdefault("payswitch_reversal_queue", Metric(
            "payswitch_reversal_queue", "Transactions waiting for a reversal acknowledgement (uncapped)", "gauge"))
        queue.add_sample("payswitch_reversal_queue", supervisor, count)
        age = families.setdefault("payswitch_reversal_oldest_age_seconds", Metric(
            "payswitch_reversal_oldest_age_seconds",
            "Age of the oldest transaction waiting for a reversal acknowledgement (0 when none)", "gauge"))
        age.add_sample("payswitch_reversal_oldest_age_seconds", supervisor,
                       max(0.0, time.time() - oldest) if count and oldest else 0.0)

    def _workers(self, answers) -> list[dict]:
        out = []
        for w, a in zip(self.fleet.workers, answers):
            out.append({"worker": w.index, "pid": w.proc.pid if w.alive else None, "alive": w.alive, "state": w.state,
                        "answers": a is not None and a[0] == 200, "restarts": w.restarts,
                        "http_port": self._worker_address(w.index)[1]})
        return out

    async def _route(self, method: bytes, target: bytes, headers=()) -> tuple[int, str, bytes]:
        path = target.split(b"?", 1)[0]
        stop = self.guard(method, path, headers, _FLEET_ROUTES)
        if stop is not None:
            return stop
        if path == b"/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", await self.metrics()
        if path == b"/healthz":
            workers = self._workers(await self._ask_all("/healthz"))
            answering = sum(w["answers"] for w in workers)
            status = "alive" if answering == len(workers) else "degraded" if answering else "down"
            body = {"status": status, "workers": workers}
            return (200 if answering else 503), _JSON, json.dumps(body).encode()
        if path == b"/readyz":
            answers = await self._ask_all("/readyz")
            workers = self._workers(answers)
            for entry, a in zip(workers, answers):
                entry["ready"] = entry["state"] == "ready" and a is not None and a[0] == 200
                if a is not None:
                    try:
                        entry["detail"] = json.loads(a[1])
                    except ValueError:
                        pass
            ok = all(entry["ready"] for entry in workers)
            body = {"ready": ok, "workers": workers}
            if workers and not workers[0]["ready"]:
                backlog = await self.sender_backlog()
                body["reversal_sender"] = {
                    "worker": 0, "ready": False, "reversal_queue": None if backlog is None else backlog[0],
                    "detail": "reversals wait in the journal until worker 0 is back"}
            return (200 if ok else 503), _JSON, json.dumps(body).encode()
        if path == b"/status":
            return 200, "text/html; charset=utf-8", status_page.PAGE
        if path == b"/status.json":
            answers = await self._ask_all("/status.json")
            docs = {}
            for w, a in zip(self.fleet.workers, answers):
                if a is not None and a[0] == 200:
                    try:
                        docs[w.index] = json.loads(a[1])
                    except ValueError:
                        pass
            doc = status_page.merge(docs, self._workers(answers))
            return 200, _JSON, json.dumps(doc).encode()
        if path == b"/admin/reload":
            ok, message = self.fleet.reload()
            return (200 if ok else 400), _JSON, json.dumps({"reloaded": ok, "message": message}).encode()
        if route_of(path) == CLOSE_ROUTE:
            return await self.close_reversal(rrn_of(path))
        return 404, "text/plain", b"not found\n"

    async def close_reversal(self, rrn: str) -> tuple[int, str, bytes]:
        """Worker 0 closes it, in the journal all workers share; its answer is passed on."""
        stop = bad_rrn(rrn)
        if stop is not None:
            return stop
        first = self.fleet.workers[0]
        if not (first.alive and first.ready.is_set()):
            body = {"rrn": rrn, "error": "worker 0 (the reversal sender) is not ready; nothing changed, ask again"}
            return 503, _JSON, json.dumps(body).encode()
        answer = await http_post(*self._worker_address(0), f"/admin/reversals/{rrn}/close", self.token,
                                 timeout=CLOSE_TIMEOUT)
        if answer is None:
            body = {"rrn": rrn, "error": "worker 0 did not answer; ask again (a reversal already closed answers 409)"}
            return 503, _JSON, json.dumps(body).encode()
        return answer[0], _JSON, answer[1]


async def _none() -> None:
    return None
