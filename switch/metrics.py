"""Prometheus metrics of the switch (served on /metrics).

Names follow Prometheus conventions: ``payswitch_`` prefix, ``_total`` for
counters, ``_seconds`` for durations.  Labels are low-cardinality by design:
payment kind, message class, response code, acquirer, endpoint — never a
terminal ID, STAN or PAN.

Who feeds what (the runbook's metrics table says what each one means):

- the request path: :meth:`Metrics.answered`, :meth:`Metrics.acquirer_answered`,
  :meth:`Metrics.in_flight` (``child = metrics.in_flight(kind); child.inc()``
  when a request is decoded, ``child.dec()`` once it is answered);
- wallet flows: ``metrics.wallet_held.labels(acquirer).inc()`` while a
  payment waits for the customer, ``.dec()`` when it ends;
- the reversal worker: :meth:`Metrics.reversal_backlog` with the uncapped
  count of reversal-pending transactions and the creation time of the oldest,
  and :meth:`Metrics.reversals_refused` with the count of refused reversals;
- a circuit breaker: :meth:`Metrics.circuit` on every transition;
- the journal: :meth:`Metrics.watch_journal` (the group committer's batch hook);
- acquirer links: :meth:`Metrics.link_listener` is the adapters'
  ``metrics_listener(name, labels, amount)``; :meth:`Metrics.attach_links`
  hooks it into acquirers built without one;
- scrape time: :meth:`Metrics.refresh` reads acquirer health and connection
  states (the HTTP server calls it before rendering).
"""
from __future__ import annotations

import platform
import time
from typing import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from switch.plain_metrics import PlainCounter, PlainGauge, PlainHistogram

# Payment latencies: most card answers come in tens of ms, wallets may hold for
# up to the terminal budget (60 s), so the buckets span both.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60)
# Event-loop lag: under a millisecond with room to spare, tens of ms saturated.
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
# A group commit is one fsync (WAL, synchronous=FULL): tenths of a ms to tens of ms.
_COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

KINDS = ("card", "wallet", "citycard")
# payswitch_reversals_total{trigger="queue"}: the results of a reversal's try
# at its acquirer (switch.core.reversal; acquirer.REVERSED, NOT_FOUND, RETRY, REFUSED).
REVERSAL_RESULTS = ("reversed", "not_found", "retry", "refused")
#: Results of a configuration reload (payswitch_config_reloads_total).
RELOAD_RESULTS = ("ok", "rejected")
#: Why a terminal's request was answered A0 (payswitch_terminal_mac_failures_total, spec section 8):
#: no MAC, a MAC that does not verify, a MAC field out of place (or both 64 and 128), no key to
#: verify it with (not signed on, none configured), a KSN that cannot be used, a KSN already used.
TERMINAL_MAC_FAILURES = ("missing", "wrong", "malformed", "no_key", "ksn", "replay")

CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2}

# Card host-link counter names (switch.core.link_metrics.LinkMetrics) and the
# labels each carries besides the acquirer.
CARD_LINK_COUNTERS: dict[str, tuple[tuple[str, ...], str]] = {
    "requests": (("mti", "response_code"), "Requests answered by the host link, by MTI and response code"),
    "host_codes": (("mti", "response_code", "answered"),
                   "Answers whose response code the terminal got as another (section 5), by the acquirer's code"),
    "timeouts": (("mti",), "Requests the acquirer did not answer in time"),
    "late_answers": (("mti",), "Answers that arrived after their request had timed out"),
    "unmatched_answers": (("mti",), "Answers matching no request in flight"),
    "lost_in_flight": (("mti",), "Requests in flight on a connection that dropped"),
    "unavailable": (("mti",), "Requests refused because no connection was signed on"),
    "reconnects": (("endpoint",), "Connections re-established after a drop"),
    "sign_on_failures": (("endpoint",), "Sign-ons refused or unanswered"),
    "echoes": (("endpoint",), "Echo tests sent on idle connections"),
    "protocol_errors": (("endpoint",), "Connections closed for a framing or decoding error"),
    "mac_failures": (("mti",), "Messages of the acquirer with a missing or wrong MAC (by our request's MTI)"),
}

# City-card and wallet link counters (adapters.citycard.adapter,
# adapters.wallet.acquirer): link -> name -> (labels besides the acquirer, help).
# Declared here so that the alert rules and the dashboard name families the
# switch exports; each adapter counts every label value at 0 when it is built.
OTHER_LINK_COUNTERS: dict[str, dict[str, tuple[tuple[str, ...], str]]] = {
    "citycard": {
        "timeouts": (("op",), "City-card requests the centre did not answer in time, by operation"),
        "lost_in_flight": (("op",), "City-card requests sent on a connection that then dropped, by operation"),
        "unavailable": (("op",), "City-card requests not sent: no connection to the centre, by operation"),
        "late_answers": ((), "Answers of the centre after the switch had given up on their request"),
        "unmatched_answers": ((), "Answers of the centre to no request in flight or recently given up on"),
        "protocol_errors": (("endpoint",), "Connections to the centre closed for an answer that could not be read"),
        "uploads": (("result",), "Offline debit uploads by result (confirmed, refused, unconfirmed)"),
    },
    "wallet": {
        "calls": (("call", "outcome"), "Wallet API calls by call (pay, query, cancel) and outcome"),
        "orders": (("disposition",), "Wallet payments by the disposition they ended with"),
    },
}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("payswitch")
    except Exception:  # running from a checkout that was never installed
        return "0+unknown"


class _Scraped:
    """Values computed at scrape time: the reversal backlog's age keeps growing
    even when nothing updates the gauges (a stuck reversal worker)."""

    def __init__(self, metrics: "Metrics"):
        self.metrics = metrics

    def collect(self):
        g = GaugeMetricFamily(
            "payswitch_reversal_oldest_age_seconds",
            "Age of the oldest transaction waiting for a reversal acknowledgement (0 when none)",
        )
        g.add_metric([], self.metrics.reversal_oldest_age())
        yield g
        c = CounterMetricFamily(
            "payswitch_cpu_seconds",
            "CPU time of the event-loop thread (part=event_loop) and of the journal writer thread or process "
            "(part=journal_writer); a rate near 1 for event_loop is a saturated worker",
            labels=["part"],
        )
        source = self.metrics.cpu_source
        if source is not None:
            for part, seconds in source().items():
                c.add_metric([part], seconds)
        yield c

    def describe(self):
        return []


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        if process:
            # process_* (CPU, memory, file descriptors, start time) and python_*
            # (version, garbage collector) on our own registry.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.build_info = Gauge(
            "payswitch_build_info",
            "Always 1: the running payswitch version, Python version and implementation",
            ["version", "python", "implementation"],
            registry=r,
        )
        self.build_info.labels(_version(), platform.python_version(), platform.python_implementation()).set(1)
        # The request path's metrics are plain numbers read at scrape time
        # (switch.plain_metrics): no lock per update.
        self.requests = PlainCounter(
            "payswitch_requests",
            "Terminal requests answered, by payment kind, message class and response code",
            ["kind", "mclass", "code"],
            registry=r,
        )
        self.latency = PlainHistogram(
            "payswitch_request_seconds",
            "End-to-end time from a request's last byte to its response being written",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.acquirer_latency = PlainHistogram(
            "payswitch_acquirer_seconds",
            "Time an acquirer took to answer, by acquirer and outcome",
            ["acquirer", "outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight_requests = PlainGauge(
            "payswitch_requests_in_flight", "Terminal requests decoded and not yet answered, by kind", ["kind"], registry=r
        )
        self.wallet_held = Gauge(
            "payswitch_wallet_held",
            "Wallet payments waiting for the customer to confirm, by acquirer",
            ["acquirer"],
            registry=r,
        )
        self.connections = Gauge(
            "payswitch_terminal_connections", "Open terminal connections", registry=r
        )
        self.frame_errors = Counter(
            "payswitch_frame_errors",
            "Connections closed for a framing violation (oversized or malformed length)",
            registry=r,
        )
        # Issue 8 limits (spec section 1 v1.1).
        self.connections_refused = Counter(
            "payswitch_terminal_connections_refused",
            "Terminal connections closed at once for a cap, by reason (total, per_address)",
            ["reason"],
            registry=r,
        )
        self.connections_timed_out = Counter(
            "payswitch_terminal_connections_timed_out",
            "Terminal connections closed for a deadline, by reason (partial_frame, idle)",
            ["reason"],
            registry=r,
        )
        self.terminal_limited = Counter(
            "payswitch_terminal_in_flight_limited",
            "Requests answered 91 because their terminal had max_in_flight_per_terminal open",
            registry=r,
        )
        self.drain_refusals = Counter(
            "payswitch_requests_refused_draining",
            "Requests answered 91 without being started because the switch was draining (SIGTERM)",
            registry=r,
        )
        self.format_errors = Counter(
            "payswitch_format_errors", "Requests that failed to decode (answered 30)", registry=r
        )
        self.unsolicited_responses = Counter(
            "payswitch_unsolicited_responses",
            "Messages from terminals with a response MTI (third digit odd), not answered",
            registry=r,
        )
        self.retransmissions = Counter(
            "payswitch_retransmissions",
            "Retransmitted requests answered from the journal, by outcome (same, conflict)",
            ["outcome"],
            registry=r,
        )
        self.reversals = Counter(
            "payswitch_reversals",
            "Reversals: queued by trigger (terminal, uncertain, recovery, stranded, undelivered), and each try at the "
            "acquirer (trigger=queue) by result (reversed, not_found, retry, refused)",
            ["trigger", "result"],
            registry=r,
        )
        self.reversal_queue = Gauge(
            "payswitch_reversal_queue", "Transactions waiting for a reversal acknowledgement (uncapped)", registry=r
        )
        self.reversal_oldest = Gauge(
            "payswitch_reversal_oldest_timestamp_seconds",
            "Creation time (Unix seconds) of the oldest transaction waiting for a reversal, 0 when none",
            registry=r,
        )
        self.reversal_refused = Gauge(
            "payswitch_reversals_refused",
            "Reversals the acquirer refused for good (state reversal_refused): out of the queue, an operator's",
            registry=r,
        )
        self.reversal_unconfigured = Gauge(
            "payswitch_reversals_unconfigured",
            "Reversals pending for an acquirer the configuration no longer names: never sent until it is back",
            registry=r,
        )
        self._reversal_oldest = 0.0
        r.register(_Scraped(self))
        self.acquirer_up = Gauge(
            "payswitch_acquirer_up", "1 when the acquirer has a usable connection", ["acquirer"], registry=r
        )
        self.acquirer_connections = Gauge(
            "payswitch_acquirer_connections",
            "Connections to an acquirer endpoint by state (ready, connecting, disconnected, ...)",
            ["acquirer", "endpoint", "state"],
            registry=r,
        )
        self.circuit_state = Gauge(
            "payswitch_acquirer_circuit_state",
            "Circuit breaker per acquirer endpoint: 0 closed, 1 half-open, 2 open",
            ["acquirer", "endpoint"],
            registry=r,
        )
        self.internal_errors = Counter(
            "payswitch_internal_errors", "Our own failures answered 96, or not answered at all (each is also logged)", registry=r
        )
        self.journal_commit = PlainHistogram(
            "payswitch_journal_commit_seconds",
            "Time to run and commit one journal batch (group commit), failed ones included",
            buckets=_COMMIT_BUCKETS,
            registry=r,
        )
        self.journal_batch = PlainHistogram(
            "payswitch_journal_batch_size", "Operations per journal batch", buckets=_BATCH_BUCKETS, registry=r
        )
        # Fed by switch.io.loopwatch on the loop thread; cpu_source() gives
        # payswitch_cpu_seconds_total's values at scrape time (None: not exported).
        self.loop_lag = PlainHistogram(
            "payswitch_event_loop_lag_seconds",
            "How late the event loop ran a timer it set for itself: how long a ready callback waits for the loop",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.cpu_source: Callable[[], dict[str, float]] | None = None
        self.journal_writable = Gauge(
            "payswitch_journal_writable",
            "1 when the last journal ping (a write transaction, run at each scrape and readiness check; after a failed write, a 256 KiB probe write) succeeded",
            registry=r,
        )
        self.journal_writable.set(1)
        self.journal_failed = Counter(
            "payswitch_journal_failed_commits",
            "Journal batches whose transaction failed (nothing of the batch was written)",
            registry=r,
        )
        self.config_reloads = Counter(
            "payswitch_config_reloads", "Configuration reloads by result", ["result"], registry=r
        )
        # Both results at 0 from the start: the first rejected reload is then an
        # increase(), not a series born at 1.
        for result in RELOAD_RESULTS:
            self.config_reloads.labels(result)
        self.config_reload_ok = Gauge(
            "payswitch_config_last_reload_successful",
            "0 when the last reload (SIGHUP, /admin/reload) was rejected: the file on disk is not what runs, "
            "and a restart would refuse it",
            registry=r,
        )
        self.config_reload_ok.set(1)
        # Value-added services (switch.core.vas): outcome ok, timeout (past the deadline) or error.
        self.vas_calls = Counter(
            "payswitch_vas_calls", "Value-added service calls by service, moment and outcome",
            ["service", "moment", "outcome"], registry=r,
        )
        self.card_link = {
            name: PlainCounter(
                f"payswitch_hostlink_{name}", doc, ("acquirer",) + labels, registry=r
            )
            for name, (labels, doc) in CARD_LINK_COUNTERS.items()
        }
        # links of other adapters: the city card's and the wallets' declared, any other made on first use
        self._other_link: dict[str, tuple[Counter, tuple[str, ...]]] = {}
        for link, counters in OTHER_LINK_COUNTERS.items():
            for name, (labels, doc) in counters.items():
                metric = f"payswitch_{link}_{name}"
                counter = Counter(metric, doc, ("acquirer",) + labels, registry=r)
                self._other_link[metric] = (counter, labels)
        # Spec section 8: requests answered A0, by reason; each at 0 from the start (an increase() from the first).
        self.terminal_mac_failures = Counter(
            "payswitch_terminal_mac_failures",
            "Terminal requests answered A0 (spec section 8), by reason: " + ", ".join(TERMINAL_MAC_FAILURES),
            ["reason"], registry=r,
        )
        for reason in TERMINAL_MAC_FAILURES:
            self.terminal_mac_failures.labels(reason)
        # label children by label values: labels() costs more than the update itself
        self._answered: dict[tuple[str, str, str], tuple] = {}
        self._acquirer: dict[tuple[str, str], object] = {}
        self._in_flight: dict[str, object] = {}
        for kind in KINDS:
            self.in_flight(kind)
            self.latency.labels(kind)
        # Every try's result at 0 from the start: PayswitchReversalRefused takes the
        # increase() of result="refused", and a series born at 1 has no increase.
        for result in REVERSAL_RESULTS:
            self.reversals.labels("queue", result)

    # -- the request path ---------------------------------------------------

    def answered(self, kind: str, mclass: str, code: str, seconds: float) -> None:
        """Count one answer and its latency (hot path: label children are cached)."""
        key = (kind, mclass, code)
        pair = self._answered.get(key)
        if pair is None:
            pair = self._answered[key] = (self.requests.labels(kind, mclass, code), self.latency.labels(kind))
        count = pair[0]  # typed (metrics.pxd): both calls are C calls once compiled
        count.inc()
        timing = pair[1]
        timing.observe(seconds)

    def reloaded(self, ok: bool) -> None:
        """Count one configuration reload, taken (``ok``) or rejected."""
        self.config_reloads.labels(RELOAD_RESULTS[0] if ok else RELOAD_RESULTS[1]).inc()
        self.config_reload_ok.set(1 if ok else 0)

    def acquirer_answered(self, acquirer: str, outcome: str, seconds: float) -> None:
        key = (acquirer, outcome)
        found = self._acquirer.get(key)
        if found is None:
            found = self._acquirer[key] = self.acquirer_latency.labels(acquirer, outcome)
        child = found  # typed (metrics.pxd): a C call once compiled
        child.observe(seconds)

    # What the transaction engine reports (switch.core.engine; NullMetrics there).

    def format_error(self) -> None:
        self.format_errors.inc()

    def terminal_limit(self) -> None:
        self.terminal_limited.inc()

    def drain_refused(self) -> None:
        self.drain_refusals.inc()

    def internal_error(self) -> None:
        self.internal_errors.inc()

    def terminal_mac_failure(self, reason: str) -> None:
        """One request answered A0; ``reason``: one of :data:`TERMINAL_MAC_FAILURES`."""
        self.terminal_mac_failures.labels(reason).inc()

    def vas_call(self, service: str, moment: str, outcome: str) -> None:
        self.vas_calls.labels(service, moment, outcome).inc()

    def retransmission(self, outcome: str) -> None:
        self.retransmissions.labels(outcome).inc()

    def reversal(self, trigger: str, result: str) -> None:
        self.reversals.labels(trigger, result).inc()

    def request_started(self, kind: str) -> None:
        self.in_flight(kind).inc()

    def request_ended(self, kind: str) -> None:
        self.in_flight(kind).dec()

    def in_flight(self, kind: str):
        """The in-flight gauge of ``kind`` (cached child): ``inc()`` on arrival, ``dec()`` once answered."""
        child = self._in_flight.get(kind)
        if child is None:
            child = self._in_flight[kind] = self.in_flight_requests.labels(kind)
        return child

    # -- reversals, circuits ----------------------------------------------------

    def reversal_backlog(self, depth: int, oldest_created: float | None) -> None:
        """``depth``: every reversal-pending transaction (not a capped page of them);
        ``oldest_created``: Unix time the oldest was created, None when there is none."""
        self.reversal_queue.set(depth)
        self._reversal_oldest = float(oldest_created or 0.0) if depth else 0.0
        self.reversal_oldest.set(self._reversal_oldest)

    def reversals_refused(self, count: int) -> None:
        """Every transaction whose reversal the acquirer refused for good, from the journal."""
        self.reversal_refused.set(count)

    def reversals_unconfigured(self, count: int) -> None:
        """Reversals pending for an acquirer no longer configured (the sender's sweep)."""
        self.reversal_unconfigured.set(count)

    def reversal_oldest_age(self) -> float:
        """Seconds since the oldest waiting reversal was created (0 when none), as exported."""
        oldest = self._reversal_oldest
        return max(0.0, time.time() - oldest) if oldest else 0.0

    def circuit(self, acquirer: str, endpoint: str, state: str) -> None:
        """``state``: closed, half-open or open."""
        try:
            value = CIRCUIT_STATES[state]
        except KeyError:
            raise ValueError(f"circuit state {state!r}: expected one of {', '.join(CIRCUIT_STATES)}") from None
        self.circuit_state.labels(acquirer, endpoint).set(value)

    # -- the journal -----------------------------------------------------------

    def journal_batch_done(self, size: int, seconds: float, ok: bool) -> None:
        """One group commit (called on the journal's writer thread, the one thread that updates these histograms)."""
        self.journal_batch.observe(size)
        self.journal_commit.observe(seconds)
        if not ok:
            self.journal_failed.inc()

    def watch_journal(self, journal) -> None:
        """Feed the journal histograms from a group committer's ``on_batch`` hook."""
        if hasattr(journal, "on_batch"):
            journal.on_batch = self.journal_batch_done

    # -- acquirer links -----------------------------------------------------------

    def link_listener(self, acquirer: str, link: str = "hostlink") -> Callable[[str, dict[str, str], int], None]:
        """A ``metrics_listener(name, labels, amount)`` for an adapter's link counters.

        ``link="hostlink"`` (card acquirers): the names of
        :data:`CARD_LINK_COUNTERS` become ``payswitch_hostlink_<name>_total``
        labelled by acquirer and the counter's own labels; ``citycard`` and
        ``wallet``: those of :data:`OTHER_LINK_COUNTERS` become
        ``payswitch_<link>_<name>_total`` the same way.  Any other link or name
        makes its counter on first use, labelled by acquirer and the label names
        of that first increment.  Later increments must match the labels: a
        missing label is left empty, an extra one dropped.
        """
        return _LinkListener(self, link, acquirer)

    def _link_child(self, link: str, acquirer: str, name: str, labels: dict[str, str]):
        if link == "hostlink" and name in self.card_link:
            names = CARD_LINK_COUNTERS[name][0]
            return self.card_link[name].labels(acquirer, *(str(labels.get(n, "")) for n in names))
        metric = f"payswitch_{link}_{name}".replace("-", "_")
        entry = self._other_link.get(metric)
        if entry is None:
            names = tuple(sorted(labels))
            counter = Counter(metric, f"{link} link counter {name!r}, by acquirer", ("acquirer",) + names, registry=self.registry)
            entry = self._other_link[metric] = (counter, names)
        counter, names = entry
        return counter.labels(acquirer, *(str(labels.get(n, "")) for n in names))

    def attach_links(self, acquirers: dict) -> None:
        """Hook :meth:`link_listener` into acquirers whose link counters have no listener yet.

        What the counters already hold (the sign-on at start-up) is carried over,
        so the exported counters equal the adapter's own.
        """
        for name, acq in acquirers.items():
            counters = getattr(acq, "metrics", None)
            if counters is None or not hasattr(counters, "listener"):
                continue
            link = getattr(counters, "link", "hostlink")  # city-card and wallet links: their own families
            if link == "hostlink":
                states = getattr(acq, "connection_states", None)
                self.init_link_counters(name, list(states()) if states is not None else [])
            elif link == "wallet":
                self.wallet_held.labels(name)  # 0 held before the first hold: its series exists from the start
            if counters.listener is not None:
                continue
            listener = self.link_listener(name, link)
            for (cname, labels), value in list(counters.counters.items()):
                listener(cname, dict(labels), value)
            counters.listener = listener

    def init_link_counters(self, acquirer: str, endpoints: list[str], mtis=("0100", "0200", "0220", "0400")) -> None:
        """Export a card acquirer's trouble counters at 0 before the first trouble
        (a rate over a series that does not exist yet is no data, not zero)."""
        for name, (labels, _doc) in CARD_LINK_COUNTERS.items():
            if labels == ("mti",):
                for mti in mtis:
                    self.card_link[name].labels(acquirer, mti)
            elif labels == ("endpoint",):
                for endpoint in endpoints:
                    self.card_link[name].labels(acquirer, endpoint)

    # -- scrape time ----------------------------------------------------------------

    def refresh(self, acquirers: dict) -> dict[str, bool]:
        """Set the gauges read off the acquirers; returns each one's health."""
        health = {}
        for name, acq in acquirers.items():
            up = bool(acq.healthy())
            health[name] = up
            self.acquirer_up.labels(name).set(1 if up else 0)
            states = getattr(acq, "connection_states", None)
            if states is not None:
                for endpoint, counts in states().items():
                    for state in ("ready", "connecting", "signing-on", "disconnected"):
                        counts.setdefault(state, 0)
                    for state, n in counts.items():
                        self.acquirer_connections.labels(name, endpoint, state).set(n)
            breakers = getattr(acq, "breaker_states", None)
            if breakers is not None:
                for endpoint, state in breakers().items():
                    self.circuit(name, endpoint, state)
        return health

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LinkListener:
    """:meth:`Metrics.link_listener`: ``listener(name, labels, amount)`` for any caller, and
    ``child(name, labels)`` for a :class:`~switch.core.link_metrics.LinkMetrics`, which
    asks once per counter and label set and then increments the child itself."""

    __slots__ = ("metrics", "link", "acquirer", "children")

    def __init__(self, metrics: Metrics, link: str, acquirer: str) -> None:
        self.metrics = metrics
        self.link = link
        self.acquirer = acquirer
        self.children: dict[tuple, object] = {}

    def __call__(self, name: str, labels: dict[str, str], amount: int = 1) -> None:
        self.child(name, labels).inc(amount)

    def child(self, name: str, labels: dict[str, str]):
        key = (name, tuple(sorted(labels.items())))
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = self.metrics._link_child(self.link, self.acquirer, name, labels)
        return child
