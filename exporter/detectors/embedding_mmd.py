"""Online MMD for embedding vectors (topic mix, language, style, format).

The maximum mean discrepancy with an RBF kernel compares two distributions
of vectors through their mean embeddings in the kernel's feature space. We
approximate that space with random Fourier features (phi(x) = sqrt(2/D)
cos(W x / sigma + b), sigma from the median heuristic on the baseline) and
follow the live stream with an exponentially weighted mean of phi (effective
window `window_size` records). The statistic is the squared distance of that
mean from the baseline's: O(D) memory and work per record, no window of
vectors to keep.

The threshold is simulated per stream by bootstrap from a reservoir of the
baseline's features, with a guarantee per stream rather than on average over
the baselines a stream could have learned (see `mmd_null`).

Examples
--------
>>> import numpy as np
>>> from exporter.detectors.base import DetectorSettings
>>> rng = np.random.default_rng(3)
>>> topics = rng.normal(size=(3, 32))
>>> def texts(weights, n):
...     picks = rng.choice(3, size=n, p=weights)
...     return topics[picks] + rng.normal(scale=1.5, size=(n, 32))
>>> detector = EmbeddingMmd(DetectorSettings(expected_run_time=10_000))
>>> for v in texts([1/3, 1/3, 1/3], 2000):
...     detector.update(v)
>>> detector.drift_detected
False
>>> for v in texts([0.8, 0.1, 0.1], 800):
...     detector.update(v)
>>> detector.drift_detected
True
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from exporter.detectors.base import Detector, finite_or_none, from_stored
from exporter.detectors.calibration import seeded
from exporter.detectors.embedding_way_back import BACK_SHIFT, WayBack
from exporter.detectors.mmd_null import simulate_null
from exporter.detectors.parts import Rows, one_row, rows_of, the_row
from exporter.detectors.references import FeatureMean, rungs

FEATURES = 64
RESERVOIR = 256
BANDWIDTH_SAMPLE = 64
_SCALE = math.sqrt(2.0 / FEATURES)


@functools.lru_cache(maxsize=16)
def random_features(dimension: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Directions W (FEATURES x dimension, standard normal) and phases b of the random
    Fourier features, read-only. A stream's features are cos(W x / sigma + b) with its own
    bandwidth sigma: the draws depend only on (dimension, seed), so every stream shares
    one copy instead of holding a 128 KiB matrix of its own."""
    rng = seeded("rff", dimension, seed)
    directions = rng.normal(size=(FEATURES, dimension))
    phase = rng.uniform(0.0, 2.0 * math.pi, size=FEATURES)
    directions.flags.writeable = phase.flags.writeable = False
    return directions, phase


def _project(vectors: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """W x of each row: a stack of one-row products, so each row's floats are the same
    however many rows come together (one matrix product's rows may differ in the last bit
    with the number of rows), yet one call for the whole run."""
    return np.matmul(vectors[:, None, :], directions.T)[:, 0, :]


class EmbeddingMmd(Detector):
    kind = "embedding_mmd"
    fine_rungs = False  # simulated per stream, at its first calibration: a few sizes only

    def _reset(self) -> None:
        super()._reset()
        self._bandwidth_sample: list[np.ndarray] = []
        self._bandwidth: float | None = None  # sigma; None until the sample is in
        self._directions: np.ndarray | None = None  # shared, see `random_features`
        self._phase: np.ndarray | None = None
        # Baseline features to simulate from: each distinct one, counted, while at most RESERVOIR
        # (a near-constant stream's rare outputs kept exactly), then a sample of the records.
        self._reservoir: list[np.ndarray] = []
        self._counts: list[int] = []
        self._distinct: dict[bytes, int] | None = {}  # row of each feature; None once sampling
        self._feature_sum = np.zeros(FEATURES)
        self._baseline_n = 0
        self._baseline_mean: np.ndarray | None = None
        self._ewma: np.ndarray | None = None
        self._threshold = math.inf
        self._null_median = 0.0
        self._release = 0.5
        self._rng = np.random.default_rng(self.settings.seed)
        self._back: WayBack | None = None  # during an event: the test for the way back
        # with a rolling or seasonal baseline: (threshold, median, release) for references
        # of each rung's size, simulated from the first baseline's features (see `_rebase`)
        self._nulls: dict[int, tuple[float, float, float]] = {}
        # during `_observe_run`: the run's EWMAs and projections on `_back`, and the row of
        # the record `_step` is at (read by `_started` and `_back_to_baseline`)
        self._run: tuple[np.ndarray, list[float]] = (np.zeros((1, FEATURES)), [])
        self._offset = 0

    @property
    def baseline_ready(self) -> bool:
        return self._baseline_mean is not None

    @property
    def _weight(self) -> float:
        return 2.0 / (self.settings.window_size + 1.0)

    def _features(self, vectors: np.ndarray) -> np.ndarray:
        """phi of each row of `vectors`: one pass for a run (see `_project`)."""
        assert self._directions is not None and self._phase is not None
        assert self._bandwidth is not None
        features = _project(vectors, self._directions)
        features /= self._bandwidth
        features += self._phase
        np.cos(features, out=features)
        features *= _SCALE
        return features

    def _use_bandwidth(self, sigma: float, dimension: int) -> None:
        self._bandwidth = sigma
        self._directions, self._phase = random_features(dimension, self.settings.seed)

    def _make_features(self, dimension: int) -> None:
        sample = np.stack(self._bandwidth_sample)
        squared = ((sample[:, None, :] - sample[None, :, :]) ** 2).sum(-1)
        positive = squared[np.triu_indices(len(sample), k=1)]
        positive = positive[positive > 0]
        self._use_bandwidth(
            math.sqrt(float(np.median(positive))) if positive.size else 1.0, dimension
        )
        for vector in self._bandwidth_sample:
            self._add_baseline_feature(self._features(vector[None])[0])
        self._bandwidth_sample = []

    def _add_baseline_feature(self, phi: np.ndarray) -> None:
        self._baseline_n += 1
        self._feature_sum += phi
        if self._distinct is not None:
            row = self._distinct.setdefault(phi.tobytes(), len(self._reservoir))
            if row < len(self._reservoir):
                self._counts[row] += 1
                return
            if row < RESERVOIR:
                self._reservoir.append(phi)
                self._counts.append(1)
                return
            # one distinct output too many: a uniform sample of the records so far, then on
            kept = self._rng.multivariate_hypergeometric(self._counts, RESERVOIR)
            self._reservoir = [v for v, k in zip(self._reservoir, kept, strict=True)
                               for _ in range(k)]
            self._counts, self._distinct = [1] * RESERVOIR, None
        slot = int(self._rng.integers(self._baseline_n))
        if slot < RESERVOIR:
            self._reservoir[slot] = phi

    def _vector(self, x: Any) -> np.ndarray:
        vector = np.asarray(x, dtype=np.float64)
        expected = (
            self._directions.shape[1] if self._directions is not None
            else self._bandwidth_sample[0].shape[0] if self._bandwidth_sample else None
        )
        if vector.ndim != 1 or (expected is not None and vector.shape[0] != expected):
            raise ValueError(f"embedding of shape {vector.shape}, this stream's are ({expected},)")
        return vector

    def _vectors(self, xs: Sequence[Any], start: int) -> np.ndarray:
        """The longest run of `xs` from `start` that are vectors of this stream's dimension, as
        float64 rows; `_vector`'s error when the first is not one. Arrays of the right
        shape (what the pipeline hands over) are stacked at once; anything else goes alone
        through `_vector`, so one bad vector costs itself, never a re-read of the batch."""
        assert self._directions is not None
        expected = (self._directions.shape[1],)
        end = start
        for x in itertools.islice(xs, start, None):
            if not (isinstance(x, np.ndarray) and x.shape == expected and x.dtype.kind in "fiu"):
                break
            end += 1
        if end - start == 1:  # a run of one (a quiet stream): a view, not np.stack's copy
            return xs[start][None].astype(np.float64, copy=False)
        if end > start:
            return np.stack(xs[start:end]).astype(np.float64, copy=False)
        return self._vector(xs[start])[None]

    def _learn(self, x: Any) -> None:
        vector = self._vector(x)
        if self._directions is None:
            self._bandwidth_sample.append(vector)
            if len(self._bandwidth_sample) >= min(BANDWIDTH_SAMPLE, self.settings.baseline_size):
                self._make_features(vector.shape[0])
        else:
            self._add_baseline_feature(self._features(vector[None])[0])
        if self._baseline_n >= self.settings.baseline_size:
            self._calibrate()

    def _calibrate(self) -> None:
        pool, counts = np.stack(self._reservoir), np.asarray(self._counts)
        n, settings, weight = self._baseline_n, self.settings, self._weight
        # phases' references are summarised as feature means only: their thresholds come
        # from this baseline's features, the only sample of them the detector keeps
        sizes = rungs(settings.baseline_size, fine=False) if self.seasons is not None else ()

        def job() -> tuple[tuple[float, float, float], dict[int, tuple[float, float, float]]]:
            return (simulate_null(pool, counts, n, weight, settings),
                    {size: simulate_null(pool, counts, size, weight, settings)
                     for size in sizes})

        self._calibrate_with(job, self._apply_null)

    def _apply_null(self, nulls: tuple[tuple[float, float, float],
                                       dict[int, tuple[float, float, float]]]) -> None:
        (self._threshold, self._null_median, self._release), self._nulls = nulls
        self._baseline_mean = self._feature_sum / self._baseline_n
        self._ewma = self._baseline_mean.copy()
        self._reservoir, self._counts, self._distinct = [], [], None

    def _reference_summary(self) -> FeatureMean | None:
        if self._directions is None:
            return None
        return FeatureMean(self._features, FEATURES, self._directions.shape[1])

    def _rebase(self, row: np.ndarray, size: int) -> None:
        """The phase's feature mean is the reference point; the threshold, the one the
        first baseline's features need for a reference learned from `size` records (the
        bootstrap pool is that baseline's, over every phase: wider than one phase's, so
        the threshold errs high). The EWMA's offset from the reference carries on: the
        records it holds were compared with their own phase's mean."""
        null = self._nulls.get(size)
        if null is None:  # (cannot happen once calibrated with seasons; kept as learned)
            null = (self._threshold, self._null_median, self._release)
        mean = row[1:].astype(np.float64)
        if self._ewma is not None and self._baseline_mean is not None:
            self._ewma = self._ewma + (mean - self._baseline_mean)
        self._baseline_mean = mean
        self._threshold, self._null_median, self._release = null

    def _observe_run(self, xs: Sequence[Any], start: int) -> int:
        """Features of the run in one pass (see `_project`; the run ends before the first
        value that is not a vector of this stream's dimension, and a run that starts with
        one counts it and raises), the EWMA row by row, all distances in one pass; then the
        hysteresis up to the first change of drift level. The EWMA is then the last taken
        record's, unless that record ended an episode (`_rearm` has set it back to the
        baseline's)."""
        assert self._ewma is not None and self._baseline_mean is not None
        try:
            vectors = self._vectors(xs, start)
        except ValueError:
            self._observations += 1
            raise
        features = self._features(vectors)
        ewma, step, weight = self._ewma.copy(), np.empty(FEATURES), self._weight
        ewmas = np.empty_like(features)
        for row, phi in enumerate(features):
            np.subtract(phi, ewma, out=step)
            step *= weight
            ewma += step
            ewmas[row] = ewma
        squared = ewmas - self._baseline_mean
        squared **= 2
        scores = (squared.sum(axis=1) / self._threshold).tolist()
        back = self._back
        # row by row sums, like the distances: a record's floats do not depend on its run
        along = ((features - self._baseline_mean) * back.direction).sum(axis=1).tolist() \
            if back else []
        self._run = (ewmas, along)  # the record `_step` is at: `_run`'s row `_offset`
        taken, ended = len(scores), False
        for offset, score in enumerate(scores):
            self._observations += 1
            self._offset = offset
            if self._step(score):
                taken, ended = offset + 1, not self._in_drift
                break
        if not ended:
            self._ewma = ewmas[taken - 1].copy()
        return start + taken

    @property
    def release_level(self) -> float:
        return self._release

    def _started(self) -> None:
        """The change as the EWMA saw it when the event started: the way back is tested
        along it (see `WayBack`)."""
        super()._started()
        assert self._baseline_mean is not None
        change = self._run[0][self._offset] - self._baseline_mean
        size = float(np.sqrt(change @ change))
        self._back = WayBack(change / size, size * BACK_SHIFT) if size > 0.0 else None

    def _back_to_baseline(self) -> bool:
        if self._back is None:  # no direction (or a state saved before it): calm records
            return super()._back_to_baseline()
        along = self._run[1][self._offset]
        return self._back.observe(along, math.log(self.settings.expected_run_time))

    def witness(self, vectors: np.ndarray) -> np.ndarray | None:
        """The MMD witness function at each row of `vectors` (None while learning): how
        much more like the live window than like the baseline each vector is, so the
        replies with the largest values are the ones that carry an embedding drift.
        A read: nothing of the detector changes."""
        if self._baseline_mean is None or self._ewma is None:
            return None
        rows = np.asarray(vectors, dtype=np.float64).reshape(len(vectors), -1)
        return self._features(rows) @ (self._ewma - self._baseline_mean)

    def _rearm(self) -> None:
        self._back = None
        if self._baseline_mean is not None:
            self._ewma = self._baseline_mean.copy()

    def summary(self) -> dict[str, dict[str, float]]:
        """MMD^2 estimates: the window's now, and the typical no-change level."""
        if self._baseline_mean is None or self._ewma is None:
            return {}
        current = float(((self._ewma - self._baseline_mean) ** 2).sum())
        return {"baseline": {"mmd2": self._null_median}, "window": {"mmd2": current}}

    def _snapshot_state(self) -> dict[str, Any]:
        # numpy arrays as they are: a checkpoint writes them without a list in between
        return {
            "bandwidth": self._bandwidth,
            "dimension": None if self._directions is None else self._directions.shape[1],
            "bandwidth_sample": Rows(list(self._bandwidth_sample)),
            "reservoir": Rows(list(self._reservoir)),
            "reservoir_counts": self._counts,
            # added to while learning; once learned, its mean is the baseline's
            "feature_sum": None if self._baseline_mean is not None
            else self._feature_sum.copy(),
            "baseline_n": self._baseline_n,
            "baseline_mean": one_row(self._baseline_mean),
            "ewma": self._ewma,
            "threshold": finite_or_none(self._threshold),
            "null_median": self._null_median,
            "release": self._release,
            "back": None if self._back is None else self._back.snapshot(),
            "nulls": [[size, *null] for size, null in self._nulls.items()],
            # the reservoir's draws go on where they were after a restore (or a move to
            # another process): the same records keep the same baseline sample
            "rng": _generator_state(self._rng) if self._baseline_mean is None else None,
        }

    def _restore_state(self, state: dict[str, Any]) -> None:
        def array(v: list[float] | None) -> np.ndarray | None:
            return None if v is None else np.asarray(v, dtype=np.float64)

        dimension, sigma = state.get("dimension"), state.get("bandwidth")
        if "projection" in state and state["projection"] is not None:  # saved by 0.1
            projection = np.asarray(state["projection"], dtype=np.float64)
            dimension = projection.shape[1]
            directions, _ = random_features(dimension, self.settings.seed)
            sigma = float(directions[0, 0] / projection[0, 0])
        if sigma is not None and dimension is not None:
            self._use_bandwidth(float(sigma), int(dimension))
        self._bandwidth_sample = rows_of(state["bandwidth_sample"])
        self._baseline_n = int(state["baseline_n"])
        self._baseline_mean = the_row(state["baseline_mean"])
        self._reservoir = rows_of(state["reservoir"])
        # states saved before counts were kept hold one record per row
        self._counts = list(state.get("reservoir_counts", [1] * len(self._reservoir)))
        exact = sum(self._counts) == self._baseline_n and self._baseline_mean is None
        self._distinct = {v.tobytes(): i for i, v in enumerate(self._reservoir)} if exact else None
        if state["feature_sum"] is not None:
            self._feature_sum = np.asarray(state["feature_sum"], dtype=np.float64)
        self._ewma = array(state["ewma"])
        self._threshold = from_stored(state["threshold"])
        self._null_median = float(state["null_median"])
        self._release = float(state.get("release", 0.5))
        back = state.get("back")  # absent: saved before the way back was tested
        self._back = None if back is None else WayBack.restore(back)
        self._nulls = {int(size): (float(t), float(m), float(r))
                       for size, t, m, r in state.get("nulls", ())}
        if state.get("rng") is not None:  # (absent: saved before it was, or learned)
            self._rng.bit_generator.state = _generator_restored(state["rng"])



def _generator_state(rng: np.random.Generator) -> dict[str, Any]:
    """A PCG64 generator's state as JSON can hold it (its 128-bit integers as text)."""
    state = rng.bit_generator.state
    inner = state["state"]
    return {"bit_generator": state["bit_generator"], "state": str(inner["state"]),
            "inc": str(inner["inc"]), "has_uint32": int(state["has_uint32"]),
            "uinteger": int(state["uinteger"])}


def _generator_restored(saved: dict[str, Any]) -> dict[str, Any]:
    return {"bit_generator": str(saved["bit_generator"]),
            "state": {"state": int(saved["state"]), "inc": int(saved["inc"])},
            "has_uint32": int(saved["has_uint32"]), "uinteger": int(saved["uinteger"])}
