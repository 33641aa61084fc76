"""The embedding detector's test for the end of an episode (see `embedding_mmd`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# The way back is tested against a change of this share of the one seen at the event.
BACK_SHIFT = 0.25
# Records of an episode before the way back is tested: the spread along the change is
# estimated from the episode's own records (the baseline's features are not kept).
MIN_BACK = 50


@dataclass
class WayBack:
    """A CUSUM of "back at the baseline" against "still changed": each record's feature
    offset from the baseline mean, projected on the change the EWMA saw when the event
    started (`direction`), is a Gaussian with mean 0 (back) or `shift` (changed), its
    variance estimated as the episode goes (Welford). As with the CUSUM detectors, the
    episode ends when the log-likelihood ratio reaches log(expected_run_time): while the
    change holds that happens no more often than once in that many records, so a stream
    whose distance hovers around the threshold stays one event."""

    direction: np.ndarray
    shift: float
    count: int = 0
    mean: float = 0.0
    squares: float = 0.0
    cusum: float = 0.0

    def observe(self, along: float, threshold: float) -> bool:
        self.count += 1
        delta = along - self.mean
        self.mean += delta / self.count
        self.squares += delta * (along - self.mean)
        if self.count < MIN_BACK:
            return False
        variance = max(self.squares / (self.count - 1), 1e-12)
        self.cusum = max(0.0, self.cusum + self.shift / variance * (self.shift / 2.0 - along))
        return self.cusum >= threshold

    def snapshot(self) -> list[Any]:
        return [self.direction.tolist(), self.shift, self.count, self.mean, self.squares,
                self.cusum]

    @classmethod
    def restore(cls, saved: list[Any]) -> WayBack:
        direction, shift, count, mean, squares, cusum = saved
        return cls(np.asarray(direction, dtype=np.float64), float(shift), int(count),
                   float(mean), float(squares), float(cusum))
