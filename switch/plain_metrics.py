"""Counters, gauges and histograms kept as plain numbers, exported when scraped.

prometheus_client's own metrics take a lock on every update and check
whether the metric is observable: about 1.5 µs per ``inc()`` and more per
``observe()``, several times per payment.  The request path updates these
instead — an attribute add, or a bisect and two adds for a histogram — and
the registry reads them only when /metrics is scraped.

Same names, labels and exposition as the prometheus_client metric of the
same kind (``_total`` and ``_created`` for a counter; ``_bucket``, ``_count``
and ``_sum`` for a histogram), and the same ``labels(...)`` / ``inc()`` /
``dec()`` / ``set()`` / ``observe()`` calls, so callers need not know.

Threads: a child is meant to be updated from one thread (the event loop, or
the journal's writer thread for the journal histograms); a scrape from
another thread reads values that may be one update behind, never torn ones
(each is a Python number replaced whole).
"""
from __future__ import annotations

import time
from typing import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

__all__ = ["PlainCounter", "PlainGauge", "PlainHistogram"]


class _Value:
    """What ``metric._value.get()`` reads on prometheus_client's metrics (tests use it)."""

    __slots__ = ("child",)

    def __init__(self, child) -> None:
        self.child = child

    def get(self) -> float:
        return self.child.value


class _Child:
    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class _HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # The first bound >= value: Prometheus buckets are "less than or equal".  It is
        # bisect_left(self.bounds, value), written out: compiled, a C loop over C doubles.
        bounds = self.bounds
        lo, hi = 0, len(bounds)
        while lo < hi:
            mid = (lo + hi) // 2
            bound = bounds[mid]
            if bound < value:
                lo = mid + 1
            else:
                hi = mid
        self.counts[lo] += 1
        self.sum += value


class _Plain:
    """A metric family of labelled children, registered as a collector."""

    _suffix = ""

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = (), *,
                 registry: CollectorRegistry | None = None) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}
        if not self.labelnames:
            self._only = self._children[()] = self._new_child()
            self._value = _Value(self._only)
        if registry is not None:
            registry.register(self)

    def _new_child(self):
        return _Child()

    def labels(self, *values: str, **by_name: str):
        if by_name:
            if values:
                raise ValueError("labels(): positional or keyword label values, not both")
            values = tuple(by_name[n] for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected {len(self.labelnames)} label values, got {len(values)}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    # Unlabelled use: metric.inc() and the like.

    def inc(self, amount: float = 1) -> None:
        self._only.value += amount

    def dec(self, amount: float = 1) -> None:
        self._only.value -= amount

    def set(self, value: float) -> None:
        self._only.value = float(value)

    def describe(self):
        return [self._family()]

    def collect(self):
        family = self._family()
        for key, child in list(self._children.items()):
            self._add(family, list(key), child)
        return [family]


class PlainCounter(_Plain):
    def _family(self):
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family, labels, child) -> None:
        family.add_metric(labels, child.value, created=child.created)


class PlainGauge(_Plain):
    def _family(self):
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family, labels, child) -> None:
        family.add_metric(labels, child.value)


class PlainHistogram(_Plain):
    def __init__(self, name: str, documentation: str, labelnames: Iterable[str] = (), *,
                 buckets: Iterable[float], registry: CollectorRegistry | None = None) -> None:
        self.bounds = tuple(float(b) for b in buckets if b != float("inf"))
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError(f"{name}: buckets must be increasing")
        self._le = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new_child(self):
        return _HistogramChild(self.bounds)

    def observe(self, value: float) -> None:
        self._only.observe(value)

    def _family(self):
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _add(self, family, labels, child) -> None:
        counts, total, cumulative = list(child.counts), child.sum, []
        running = 0
        for le, n in zip(self._le, counts):
            running += n
            cumulative.append((le, running))
        family.add_metric(labels, cumulative, total)
