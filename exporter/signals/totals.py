"""Running totals of a stream's signals, the raw material of the signal metrics.

Token histograms use a 1-2-5 series from 1 to 50,000: fine enough that a
20-30% length shift moves a bucket boundary's share visibly, where the
power-of-4 buckets common in OTel SDKs would hide it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from exporter.signals.measure import Measurements

TOKEN_BUCKETS: tuple[float, ...] = tuple(float(m * 10**e) for e in range(5) for m in (1, 2, 5))


@dataclass
class Histogram:
    bounds: tuple[float, ...] = TOKEN_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(TOKEN_BUCKETS) + 1))
    total: float = 0.0
    observations: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.observations += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs ending with +Inf, as prometheus_client expects."""
        running = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else _le(bound), running))
        return buckets


def _le(bound: float) -> str:
    return str(int(bound)) if bound.is_integer() else str(bound)


@dataclass
class SignalTotals:
    output_tokens: Histogram = field(default_factory=Histogram)
    input_tokens: Histogram = field(default_factory=Histogram)
    reasoning_tokens: Histogram = field(default_factory=Histogram)
    token_methods: Counter[tuple[str, str]] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    format_checked: int = 0
    format_invalid: Counter[str] = field(default_factory=Counter)
    embeddings: Counter[str] = field(default_factory=Counter)

    def add(self, m: Measurements) -> None:
        self.output_tokens.observe(m.output_tokens)
        if m.input_tokens is not None:
            self.input_tokens.observe(m.input_tokens)
        if m.reasoning_tokens is not None:
            self.reasoning_tokens.observe(m.reasoning_tokens)
        self.token_methods[(m.token_method, m.encoding)] += 1
        if m.refusal is not None:
            self.refusals[m.refusal] += 1
        if m.format_checked:
            self.format_checked += 1
            if m.format_invalid is not None:
                self.format_invalid[m.format_invalid] += 1
        if m.embedding_source is not None:
            self.embeddings[m.embedding_source] += 1


def _counter_items(counter: Counter[Any]) -> list[list[Any]]:
    return [[*key, n] if isinstance(key, tuple) else [key, n] for key, n in counter.items()]


def _counter_of(items: list[list[Any]], pairs: bool = False) -> Counter[Any]:
    return Counter({(tuple(item[:-1]) if pairs else item[0]): int(item[-1]) for item in items})


def totals_snapshot(totals: SignalTotals) -> dict[str, Any]:
    """The totals as JSON-ready data: saved with the stream, so its counters resume where
    they were when the stream moves to another process or the process restarts."""
    return {
        "histograms": {name: [getattr(totals, name).counts, getattr(totals, name).total,
                              getattr(totals, name).observations] for name in _HISTOGRAMS},
        "token_methods": _counter_items(totals.token_methods),
        "refusals": _counter_items(totals.refusals),
        "format_checked": totals.format_checked,
        "format_invalid": _counter_items(totals.format_invalid),
        "embeddings": _counter_items(totals.embeddings),
    }


def totals_restored(saved: dict[str, Any]) -> SignalTotals:
    """`totals_snapshot` read back (ValueError, KeyError or TypeError if it is not one)."""
    totals = SignalTotals(
        token_methods=_counter_of(saved["token_methods"], pairs=True),
        refusals=_counter_of(saved["refusals"]),
        format_checked=int(saved["format_checked"]),
        format_invalid=_counter_of(saved["format_invalid"]),
        embeddings=_counter_of(saved["embeddings"]),
    )
    for name in _HISTOGRAMS:
        counts, total, observations = saved["histograms"][name]
        histogram = getattr(totals, name)
        if len(counts) != len(histogram.counts):
            raise ValueError(f"{name}: {len(counts)} buckets, not {len(histogram.counts)}")
        histogram.counts = [int(c) for c in counts]
        histogram.total, histogram.observations = float(total), int(observations)
    return totals


_HISTOGRAMS = ("output_tokens", "input_tokens", "reasoning_tokens")
