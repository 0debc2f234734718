"""Prometheus metrics of the switch (served on /metrics).

Names follow Prometheus conventions: ``payswitch_`` prefix, ``_total`` for
counters, ``_seconds`` for histograms.  Labels are low-cardinality by design:
payment kind, message class, response code, acquirer name — never a terminal
ID, STAN or PAN.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Payment latencies: most card answers come in tens of ms, wallets may hold for
# up to the terminal budget (60 s), so the buckets span both.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "payswitch_requests",
            "Terminal requests answered, by payment kind, message class and response code",
            ["kind", "mclass", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "payswitch_request_seconds",
            "End-to-end time from a request's last byte to its response being written",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.acquirer_latency = Histogram(
            "payswitch_acquirer_seconds",
            "Time an acquirer took to answer, by acquirer and outcome",
            ["acquirer", "outcome"],
            buckets=_LATENCY_BUCKETS,
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
        self.format_errors = Counter(
            "payswitch_format_errors", "Requests that failed to decode (answered 30)", registry=r
        )
        self.retransmissions = Counter(
            "payswitch_retransmissions",
            "Retransmitted requests answered from the journal, by outcome (same, conflict)",
            ["outcome"],
            registry=r,
        )
        self.reversals = Counter(
            "payswitch_reversals",
            "Reversals: queued by trigger (terminal, uncertain, recovery, stranded), and each try at the "
            "acquirer (trigger=queue) by result (reversed, not_found, retry)",
            ["trigger", "result"],
            registry=r,
        )
        self.reversal_queue = Gauge(
            "payswitch_reversal_queue", "Transactions waiting for a reversal acknowledgement (uncapped)", registry=r
        )
        self.reversal_oldest = Gauge(
            "payswitch_reversal_oldest_seconds", "Age of the oldest reversal not yet acknowledged", registry=r
        )
        self.acquirer_up = Gauge(
            "payswitch_acquirer_up", "1 when the acquirer has a usable connection", ["acquirer"], registry=r
        )
        self.internal_errors = Counter(
            "payswitch_internal_errors", "Our own failures answered 96 (each is also logged)", registry=r
        )
        # label children by label values: labels() costs more than the update itself
        self._answered: dict[tuple[str, str, str], tuple] = {}
        self._acquirer: dict[tuple[str, str], object] = {}
        self.config_reloads = Counter(
            "payswitch_config_reloads", "Configuration reloads by result", ["result"], registry=r
        )

    def answered(self, kind: str, mclass: str, code: str, seconds: float) -> None:
        """Count one answer and its latency (hot path: label children are cached)."""
        key = (kind, mclass, code)
        pair = self._answered.get(key)
        if pair is None:
            pair = self._answered[key] = (self.requests.labels(kind, mclass, code), self.latency.labels(kind))
        pair[0].inc()
        pair[1].observe(seconds)

    def acquirer_answered(self, acquirer: str, outcome: str, seconds: float) -> None:
        key = (acquirer, outcome)
        child = self._acquirer.get(key)
        if child is None:
            child = self._acquirer[key] = self.acquirer_latency.labels(acquirer, outcome)
        child.observe(seconds)

    # What the transaction engine reports (switch.core.engine; NullMetrics there).

    def format_error(self) -> None:
        self.format_errors.inc()

    def internal_error(self) -> None:
        self.internal_errors.inc()

    def retransmission(self, outcome: str) -> None:
        self.retransmissions.labels(outcome).inc()

    def reversal(self, trigger: str, result: str) -> None:
        self.reversals.labels(trigger, result).inc()

    def reversal_backlog(self, count: int, oldest_seconds: float) -> None:
        self.reversal_queue.set(count)
        self.reversal_oldest.set(oldest_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
