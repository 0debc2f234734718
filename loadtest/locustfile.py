"""Locust scenarios against a running switch (sandbox defaults or your own config).

    .venv/bin/pip install -e '.[load]'
    .venv/bin/locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 60s \
        --host tcp://127.0.0.1:8583

Each simulated terminal keeps one TCP connection and sends sandbox card
purchases (approved, declined) and the occasional echo, recording latency per
response code.  An answer other than the one the sandbox rules promise (a 96
or 68 where 00 was due) counts as a failure.  Locust fails the run (exit code
1) when the latency SLOs below are missed, so the scenario can guard latency
in a pipeline.  More users than the sandbox's 999 terminals share terminal IDs
(their STANs differ).
"""
from __future__ import annotations

import itertools
import random
import time
from urllib.parse import urlparse

from locust import User, between, events, task

from switch.client import TERMINAL, Terminal, build

SLO_P95_MS = 250  # card purchases against the local simulators
SLO_FAIL_RATIO = 0.01


class TerminalUser(User):
    wait_time = between(0.01, 0.1)
    _ids = itertools.count()

    def on_start(self):
        url = urlparse(self.host or "tcp://127.0.0.1:8583")
        self.link = Terminal(url.hostname, url.port or 8583, timeout=65)
        self.terminal = "DEMO%04d" % (next(self._ids) % 999 + 1)

    def on_stop(self):
        self.link.close()

    def _transact(self, name: str, request: dict, expected: str):
        body = TERMINAL.encode(request)
        start = time.perf_counter()
        exc = None
        code = "??"
        answer = b""
        try:
            self.link.send(body)
            answer = self.link.receive()
            code = TERMINAL.decode(answer).get(39)
            if code != expected:
                exc = AssertionError(f"{name}: answered {code}, the sandbox promises {expected}")
        except Exception as e:  # reported to locust as a failure
            exc = e
        events.request.fire(
            request_type="iso8583",
            name=f"{name} {code}",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=len(answer),
            exception=exc,
        )

    @task(20)
    def purchase_approved(self):
        amount = random.randint(1, 500) * 100 + random.choice((0, 1, 10, 99))
        self._transact("purchase", build("purchase", terminal=self.terminal, pan="4761739001010119", amount=amount), "00")

    @task(2)
    def purchase_declined(self):
        self._transact("purchase", build("purchase", terminal=self.terminal, pan="5413330089010434", amount=1051), "51")

    @task(1)
    def echo(self):
        self._transact("echo", build("echo", terminal=self.terminal), "00")


@events.quitting.add_listener
def _check_slo(environment, **_kw):
    stats = environment.stats.total
    if stats.num_requests == 0:
        environment.process_exit_code = 1
        return
    p95 = stats.get_response_time_percentile(0.95)
    if stats.fail_ratio > SLO_FAIL_RATIO or p95 > SLO_P95_MS:
        print(f"SLO missed: p95 {p95:.0f} ms (limit {SLO_P95_MS}), failures {stats.fail_ratio:.2%}")
        environment.process_exit_code = 1
