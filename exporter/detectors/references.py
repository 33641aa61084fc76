"""Compact summaries of one phase of a stream, that a detector can compare a window with.

A seasonal baseline keeps one summary per phase (168 of them for a week of hours), so each
is a short float32 row `[n, ...]`, n being the (weighted) number of records behind it:

- `Rates` (refusal, format validity): `[n, rate]`;
- `Quantiles` (output tokens): `[n, q_1..q_48]`, the values at probabilities
  i / 49. Ranking a live value among *exact* quantiles at these levels, with ties and the
  position within a cell broken at random (what `RankCusum.normal_scores` does with any
  sorted sample), gives a uniform rank under no change, exactly as a sample would, so the
  rank CUSUM needs nothing else. The luck of the reference is that of its n records, not
  of 48 (a quantile of n values is as far off as that sample's);
- `FeatureMean` (embedding): `[n, mean of the random Fourier features]`, the MMD
  statistic's own reference point.

Each summary is made from one phase of one period (an accumulator), then merged into the
phase's row, the older periods weighted by `keep` (0: the newest period only).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

KNOTS = 48
LEVELS = (np.arange(KNOTS) + 1.0) / (KNOTS + 1.0)
# Values of one phase kept for its quantiles: beyond this, every other one is dropped and
# only every other one taken from then on (a deterministic, restorable thinning).
MAX_VALUES = 1024


def rungs(baseline_size: int, fine: bool = True) -> tuple[int, ...]:
    """The reference sizes thresholds are calibrated for: a reference of n records is
    judged as the largest rung <= n (fewer records than it has: conservative), so a few
    simulations serve every phase. Rungs are sqrt(2) apart (`fine`; the rank and rate
    thresholds, shared by every stream, or cached by count) or 2x apart (the embedding's,
    simulated per stream), up to `baseline_size`, a fixed baseline's size."""
    step = math.sqrt(2.0) if fine else 2.0
    ladder = [64]
    while ladder[-1] * step < baseline_size:
        ladder.append(round(ladder[-1] * step))
    return (*(r for r in ladder if r < baseline_size), baseline_size)


def rung(n: float, baseline_size: int, fine: bool = True) -> int | None:
    """The rung a reference of n records is calibrated as (None: fewer than the first)."""
    below = [r for r in rungs(baseline_size, fine) if r <= n]
    return below[-1] if below else None


class Summary(ABC):
    """An accumulator for one phase of one period; `row()` is its summary (None: empty)."""

    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        self.n = 0

    @abstractmethod
    def add(self, values: Sequence[Any]) -> None:
        """Take the values of records of the phase, in order."""

    @abstractmethod
    def row(self) -> np.ndarray | None:
        """The phase's reference row `[n, ...]` (float32), None if no record came."""

    @staticmethod
    def merge(older: np.ndarray | None, newer: np.ndarray | None, keep: float
              ) -> np.ndarray | None:
        """The phase's reference after a period: `newer` with `older` weighted by `keep`."""
        if newer is None:
            return older
        if older is None or keep <= 0.0 or older.shape != newer.shape:
            return newer
        n_old, n_new = keep * float(older[0]), float(newer[0])
        row = (older * n_old + newer * n_new) / (n_old + n_new)
        row[0] = n_old + n_new
        return row.astype(np.float32)

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """The accumulator as saved with the stream."""

    @abstractmethod
    def restore(self, saved: dict[str, Any]) -> None:
        """`snapshot`'s state again."""


class Rates(Summary):
    kind = "rates"

    def __init__(self) -> None:
        super().__init__()
        self.events = 0

    def add(self, values: Sequence[Any]) -> None:
        self.n += len(values)
        self.events += sum(map(bool, values))

    def row(self) -> np.ndarray | None:
        """`[n, rate]`: a rate, so that merging (a weighted mean) is right."""
        return np.array([self.n, self.events / self.n], dtype=np.float32) if self.n else None

    def snapshot(self) -> dict[str, Any]:
        return {"n": self.n, "events": self.events}

    def restore(self, saved: dict[str, Any]) -> None:
        self.n, self.events = int(saved["n"]), int(saved["events"])


class Quantiles(Summary):
    kind = "quantiles"

    def __init__(self) -> None:
        super().__init__()
        self.values = array("d")
        self.stride = 1  # take one value in `stride` (see MAX_VALUES)

    def add(self, values: Sequence[Any]) -> None:
        for value in values:
            if self.n % self.stride == 0:
                self.values.append(float(value))
                if len(self.values) >= MAX_VALUES:
                    self.values = self.values[::2]
                    self.stride *= 2
            self.n += 1

    def row(self) -> np.ndarray | None:
        if not self.n:
            return None
        # values seen, not interpolated between them: integer counts stay integers, so
        # a live count equal to a quantile is a tie, broken at random as it should be
        knots = np.quantile(np.frombuffer(self.values), LEVELS, method="inverted_cdf")
        # as many records as values kept: the quantiles are as far off as that sample's
        return np.concatenate(([len(self.values)], knots)).astype(np.float32)

    @staticmethod
    def merge(older: np.ndarray | None, newer: np.ndarray | None, keep: float
              ) -> np.ndarray | None:
        """The quantiles of the mixture of the two phases' distributions, the older
        weighted by `keep`. Each is read as its quantile function: linear between
        distinct values, a point mass where a value repeats (a count that many replies
        share), so merging a phase with itself gives it back, ties included. (Reading
        the quantiles as a sample of values instead shifts every level by up to half a
        step; smearing a repeated value into a ramp makes every live count rank high:
        both raised false events several times in the benchmark.)"""
        if newer is None:
            return older
        if older is None or keep <= 0.0 or older.shape != newer.shape:
            return newer
        n_old, n_new = keep * float(older[0]), float(newer[0])
        old, new = older[1:].astype(np.float64), newer[1:].astype(np.float64)
        points = np.union1d(old, new)
        below = (n_old * _cdf(points, old, "left") + n_new * _cdf(points, new, "left"))
        upto = (n_old * _cdf(points, old, "right") + n_new * _cdf(points, new, "right"))
        below, upto = below / (n_old + n_new), upto / (n_old + n_new)
        at = np.searchsorted(upto, LEVELS - 1e-12)  # the first point whose F reaches it
        at = np.minimum(at, len(points) - 1)
        inside = below[at] < LEVELS - 1e-12  # in the point's own mass: that value
        before = np.maximum(at - 1, 0)
        span = below[at] - upto[before]
        share = np.divide(LEVELS - upto[before], span, out=np.ones_like(span),
                          where=span > 0)
        knots = np.where(inside, points[at],
                         points[before] + share * (points[at] - points[before]))
        return np.concatenate(([n_old + n_new], knots)).astype(np.float32)

    def snapshot(self) -> dict[str, Any]:
        from exporter.detectors.parts import Growing  # (light: no numpy)

        return {"n": self.n, "stride": self.stride, "values": Growing(self.values)}

    def restore(self, saved: dict[str, Any]) -> None:
        from exporter.detectors.parts import values_of

        self.n, self.stride = int(saved["n"]), int(saved["stride"])
        self.values = values_of(saved["values"])


def _cdf(points: np.ndarray, knots: np.ndarray, side: str) -> np.ndarray:
    """A phase's distribution function just below (`left`) or at (`right`) each point:
    linear between distinct quantiles, jumping where a value repeats. The tails (below
    the first quantile, above the last) are not put on the end values: they arrive
    between the end value and the next point of the merge, as linear as the rest (on
    one end value they pull the outer quantiles of a merge in, and the outer cells of
    the reference then hold more than their share: lengths rank high)."""
    count = np.searchsorted(knots, points, side)  # quantiles below (left) or up to (right)
    lower = np.clip(count - 1, 0, KNOTS - 1)  # the segment from the last of them
    upper = np.clip(count, 0, KNOTS - 1)  # to the next (left: the first of a run)
    gap = knots[upper] - knots[lower]
    share = np.divide(points - knots[lower], gap, out=np.zeros_like(gap), where=gap > 0)
    level = LEVELS[lower] + np.clip(share, 0.0, 1.0) * (LEVELS[upper] - LEVELS[lower])
    if side == "left":
        return np.where(count == 0, np.where(points >= knots[0], LEVELS[0], 0.0),
                        np.where(count >= KNOTS, 1.0, level))
    return np.where(count == 0, 0.0, np.where(points > knots[-1], 1.0, level))


class FeatureMean(Summary):
    kind = "feature_mean"

    def __init__(self, features: Callable[[np.ndarray], np.ndarray], width: int,
                 dimension: int) -> None:
        super().__init__()
        self.features = features  # the detector's own feature map
        self.total = np.zeros(width)
        self.dimension = dimension

    def add(self, values: Sequence[Any]) -> None:
        """Vectors of the stream's dimension (the detector counts the others as errors)."""
        rows = [v for v in values if isinstance(v, np.ndarray) and v.shape == (self.dimension,)]
        if rows:
            self.total += self.features(np.stack(rows).astype(np.float64)).sum(axis=0)
            self.n += len(rows)

    def row(self) -> np.ndarray | None:
        if not self.n:
            return None
        return np.concatenate(([self.n], self.total / self.n)).astype(np.float32)

    def snapshot(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total.copy()}

    def restore(self, saved: dict[str, Any]) -> None:
        self.n = int(saved["n"])
        self.total = np.asarray(saved["total"], dtype=np.float64)
