"""Streams with daily and weekly cycles, for the seasonal-baseline benchmark and its tests.

Each record has a time, an output length, a refusal flag and an embedding vector; what
they are drawn from depends on the time of day (and of the week): the topic mix, the
mean length and the refusal rate follow a cycle `Shape`. On top: noise, hours with no
traffic, timestamp jitter and a few records far out of order. A `Change` multiplies
the length, the refusal odds or moves the topic mix from some time on, on top of the
cycle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from exporter.signals.measure import Measurements

if TYPE_CHECKING:
    from exporter.streams.stream_detectors import StreamDetectors

DAY = 86400.0
DIMENSION = 32
TOPICS = 6
# answers on some topics run longer: a change of mix changes lengths too (as in the issue)
TOPIC_LENGTH = (-0.2, -0.1, 0.0, 0.0, 0.1, 0.2)


@dataclass(frozen=True)
class Shape:
    """How a stream cycles. `kind`: `halves` (12 h of night traffic, 12 h of day traffic:
    another topic mix, otherwise identical, as in the issue), `smooth` (length, refusal rate
    and topic mix follow a sine over the day), `weekly` (halves, and weekends differ from
    weekdays in mix and length), `office` (traffic only 07:00-21:00 with a midday peak,
    day and evening mixes)."""

    kind: str
    per_day: int = 10_000
    refusal: float = 0.02
    jitter: float = 120.0  # seconds (standard deviation) added to each timestamp
    late_share: float = 0.001  # records stamped an hour or more late


@dataclass(frozen=True)
class Change:
    at: float  # seconds from the start
    length: float = 1.0  # factor on lengths
    refusal_odds: float = 1.0  # factor on the refusal odds
    topic_shift: float = 0.0  # share of the mix moved to topic 0


def _mix(shape: Shape, t: float) -> tuple[np.ndarray, float, float]:
    """(topic weights, mean log length, refusal rate) at time t."""
    hour = (t % DAY) / 3600.0
    weekday = int(t // DAY) % 7
    day = 7.0 <= hour < 19.0
    weights = np.ones(TOPICS)
    length, rate = math.log(150.0), shape.refusal
    if shape.kind in ("halves", "weekly"):
        weights = np.array([4, 3, 1, 1, 0.5, 0.5]) if day else np.array([0.5, 0.5, 1, 1, 3, 4])
        if shape.kind == "weekly" and weekday >= 5:
            weights = np.array([1, 1, 4, 4, 1, 1.0])
            length += math.log(1.25)
            rate *= 1.5
    elif shape.kind == "smooth":
        s = math.sin(2 * math.pi * hour / 24.0)
        weights = np.array([1 + s, 1 + s, 1, 1, 1 - s, 1 - s]) + 0.2
        length += 0.25 * s
        rate *= 1.0 + 0.5 * s
    elif shape.kind == "office":
        evening = hour >= 17.0
        weights = np.array([1, 1, 3, 3, 0.5, 0.5]) if evening else np.array([3, 3, 1, 1, 1, 1.0])
        length += 0.2 if evening else 0.0
    return weights / weights.sum(), length, rate


def _traffic(shape: Shape, t: float) -> float:
    """Relative record rate at time t (1: flat)."""
    if shape.kind != "office":
        return 1.0
    hour = (t % DAY) / 3600.0
    if not 7.0 <= hour < 21.0:
        return 0.0
    return 0.6 + 1.4 * math.exp(-((hour - 13.0) / 3.0) ** 2)


def records(shape: Shape, days: float, seed: int, change: Change | None = None
            ) -> Iterator[tuple[float, Measurements, bool]]:
    """(timestamp, measurements, changed) for each record, in arrival order."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1000 + seed).normal(size=(TOPICS, DIMENSION)) * 1.2
    step = DAY / shape.per_day
    t = 0.0
    end = days * DAY
    while t < end:
        rate = _traffic(shape, t)
        if rate <= 0.0:
            t += step
            continue
        weights, length, refusal = _mix(shape, t)
        changed = change is not None and t >= change.at
        if changed:
            assert change is not None
            length += math.log(change.length)
            odds = refusal / (1 - refusal) * change.refusal_odds
            refusal = odds / (1 + odds)
            weights = (1 - change.topic_shift) * weights
            weights[0] += change.topic_shift
        topic = rng.choice(TOPICS, p=weights)
        vector = centres[topic] + rng.normal(size=DIMENSION)
        tokens = max(1, int(rng.lognormal(length + TOPIC_LENGTH[topic], 0.5)))
        stamp = t + rng.normal(0.0, shape.jitter)
        if rng.random() < shape.late_share:
            stamp -= 3600.0 * (1 + 3 * rng.random())
        yield stamp, _measured(tokens, rng.random() < refusal, vector), changed
        t += step / rate * rng.exponential()


def feed(detectors: StreamDetectors, stream: Iterable[tuple[float, Measurements, bool]],
         batch: int = 50) -> list[tuple[float, bool]]:
    """Feed a generated stream to a stream's detectors in batches, each record with its
    timestamp, as the pipeline does; (timestamp, changed) of each record, in order."""
    seen: list[tuple[float, bool]] = []
    measured: list[Measurements] = []
    times: list[float] = []
    for stamp, measurements, changed in stream:
        seen.append((stamp, changed))
        measured.append(measurements)
        times.append(stamp)
        if len(measured) == batch:
            detectors.update_many(measured, times)
            measured, times = [], []
    if measured:
        detectors.update_many(measured, times)
    return seen


def first_changed(seen: list[tuple[float, bool]]) -> int | None:
    """The index of the first changed record of a fed stream (None: no change)."""
    return next((index for index, (_, changed) in enumerate(seen) if changed), None)


def _measured(tokens: int, refused: bool, vector: np.ndarray) -> Measurements:
    return Measurements(
        output_tokens=tokens, token_method="usage", encoding="none", input_tokens=None,
        reasoning_tokens=None, refusal="phrase" if refused else None, format_checked=False,
        format_invalid=None, embedding=vector, embedding_source="user")
