"""Locust: a shop day at the sandbox's demo merchant (spec section 7).

    .venv/bin/pip install -e '.[load]'
    .venv/bin/payswitch serve          # the sandbox, in another terminal
    .venv/bin/locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 60s \
        --host tcp://127.0.0.1:8583

Each simulated till keeps one TCP connection and sends the weighted mix of
``shopday.py``: card purchases (approved and declined), refunds (one above
the merchant's limit), reversals of its own earlier purchases, wallet
payments (answered at once, or by a customer who confirms or declines on the
phone after some seconds), city-card debits, overdraws and top-ups, and
echoes.  Every request expects the response code the sandbox's rules promise;
any other answer is a failure.  Each request is recorded under its latency
class (locust's request type: ``card``, ``citycard``, ``wallet``,
``wallet-wait``, ``network``) so that wallet customers' seconds never enter
the card percentiles.

The run fails (exit code 1) when any request failed or a class's p99 is over
its target: the targets below are the ones of the alert rules, the runbook
and the README (tests/test_latency_targets.py keeps them equal).  More tills
than the sandbox's 999 terminals share terminal IDs (their STANs differ).
"""
from __future__ import annotations

import itertools
import time
from urllib.parse import urlparse

from locust import User, between, events, task
from locust.stats import StatsEntry

import shopday
from switch.client import TERMINAL, Terminal

# Latency targets (p99, milliseconds), the same as the PayswitchLatencyP99 alert's.
CARD_P99_MS = 1000  # cards and city cards (and echoes): anything that waits for no customer
WALLET_P99_MS = 50_000  # wallets: the customer may confirm on the phone
TARGET_MS = {
    shopday.CARD: CARD_P99_MS,
    shopday.CITYCARD: CARD_P99_MS,
    shopday.NETWORK: CARD_P99_MS,
    shopday.WALLET: WALLET_P99_MS,
    shopday.WALLET_WAIT: WALLET_P99_MS,
}


class TillUser(User):
    wait_time = between(0.01, 0.1)
    _ids = itertools.count()

    def on_start(self):
        self.link = None
        self.shop = shopday.Shopper(next(self._ids))

    def _connect(self) -> Terminal:
        if self.link is None:
            url = urlparse(self.host or "tcp://127.0.0.1:8583")
            self.link = Terminal(url.hostname, url.port or 8583, timeout=65)
        return self.link

    def on_stop(self):
        if self.link is not None:
            self.link.close()

    def _send(self, step: shopday.Step) -> None:
        body = TERMINAL.encode(step.request)
        start = time.perf_counter()
        error = None
        answer = b""
        try:
            link = self._connect()
            link.send(body)
            answer = link.receive()
            decoded = TERMINAL.decode(answer)
            problem = step.check(decoded)
            if problem:
                error = AssertionError(problem)
            self.shop.answered(step, decoded)
        except OSError as e:  # the connection is gone (a restart, a timeout): a new one next time
            error = e
            self.shop.lost(step)
            if self.link is not None:
                self.link.close()
                self.link = None
        except Exception as e:  # reported to locust as a failure
            error = e
            self.shop.lost(step)
        events.request.fire(
            request_type=step.kind,
            name=step.name,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=len(answer),
            exception=error,
        )

    @task(40)
    def purchase(self):
        self._send(self.shop.purchase())

    @task(4)
    def declined_purchase(self):
        self._send(self.shop.declined_purchase())

    @task(3)
    def refund(self):
        self._send(self.shop.refund())

    @task(2)
    def refund_over_limit(self):
        self._send(self.shop.refund_over_limit())

    @task(3)
    def reversal(self):
        step = self.shop.reversal()
        if step is None:  # nothing to reverse yet: sell something first
            self._send(self.shop.purchase())
            step = self.shop.reversal()
        if step is not None:
            self._send(step)

    @task(15)
    def wallet(self):
        self._send(self.shop.wallet())

    @task(4)
    def wallet_on_phone(self):
        self._send(self.shop.wallet_on_phone())

    @task(15)
    def city_debit(self):
        self._send(self.shop.city_debit())

    @task(2)
    def city_overdraw(self):
        self._send(self.shop.city_overdraw())

    @task(3)
    def city_topup(self):
        self._send(self.shop.city_topup())

    @task(2)
    def echo(self):
        self._send(self.shop.echo())


def p99_by_class(stats) -> dict[str, int]:
    """Each request type's p99 (ms) over all its request names."""
    merged: dict[str, StatsEntry] = {}
    for (_name, kind), entry in stats.entries.items():
        merged.setdefault(kind, StatsEntry(stats, kind, kind)).extend(entry)
    return {kind: e.get_response_time_percentile(0.99) for kind, e in merged.items() if e.num_requests}


def slo_misses(stats) -> list[str]:
    """Why the run misses its targets (empty when it meets them)."""
    if stats.total.num_requests == 0:
        return ["no request was answered"]
    misses = [f"{stats.total.num_failures} request(s) not answered as the sandbox promises"] if stats.total.num_failures else []
    for kind, p99 in sorted(p99_by_class(stats).items()):
        limit = TARGET_MS.get(kind)
        if limit is not None and p99 > limit:
            misses.append(f"{kind} p99 {p99} ms over its target {limit} ms")
    return misses


@events.quitting.add_listener
def _check_slo(environment, **_kw):
    misses = slo_misses(environment.stats)
    for miss in misses:
        print(f"SLO missed: {miss}")
    if misses:
        environment.process_exit_code = 1
