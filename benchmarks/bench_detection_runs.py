"""The averages section of the detection benchmark: its sizes (`Config`), how detectors are built
and fed, and the tasks the worker processes run (orchestrated in bench_detection_averages.py).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bench_detection_common  # noqa: F401  (first: BLAS threads, import path)
import detection_streams as streams
import numpy as np

from exporter.detectors.base import Detector
from exporter.detectors.calibration import CalibrationCache
from exporter.detectors.factory import DetectorFactory
from exporter.detectors.river_adapter import BINARY, RIVER_METHODS

MAIN_STREAMS = ("tokens", "tokens_heavy", "tokens_x4", "refusal", "validity", "embedding")
CALIBRATION_STREAMS = ("tokens", "tokens_heavy", "tokens_x4", "refusal", "refusal_10",
                       "validity", "embedding")
DEFAULT_ERT = 100_000
CALIBRATION_ERT = 1000
FALSE_ALARM_BUDGET = 1.0  # per 100,000 records, for the matched river settings
OUR_LABELS = {"rank_cusum": "ours: rank CUSUM", "bernoulli_cusum": "ours: Bernoulli CUSUM",
              "mmd": "ours: online MMD"}
RIVER_LABELS = {"adwin": "river ADWIN", "kswin": "river KSWIN",
                "page_hinkley": "river PageHinkley", "ddm": "river DDM", "eddm": "river EDDM",
                "hddm_a": "river HDDM_A"}
UNIVARIATE_DEFAULTS = ("adwin", "kswin", "page_hinkley")
BINARY_DEFAULTS = ("ddm", "eddm", "hddm_a")
MATCHED = ("adwin", "page_hinkley")
SLOW = ("kswin",)  # far fewer records: a scipy two-sample test per record
MEDIUM = ("hddm_a",)  # a quarter of the unchanged records, half the change runs: ~15 µs/record


@dataclass(frozen=True)
class Config:
    seeds: int  # unchanged streams per signal (also calibration baselines)
    null_length: int  # records per unchanged stream after the baseline
    slow_seeds: int  # the same, for the slow river detectors (KSWIN); 0 leaves them out
    slow_null_length: int
    change_runs: int  # streams with a change, per signal
    slow_change_runs: int
    calibration_length: int  # records per calibration stream after the baseline
    calibration_length_embedding: int
    pool_size: int  # embedded texts per topic
    cost_records: int
    baseline_size: int = 1000
    change_at: int = 3000
    horizon: int = 5000
    repeats: int = 3  # timings: the best of this many, as other work on the machine only adds
    seed_base: int = 0  # streams use seeds seed_base, seed_base + 1, ... (see --seed-base)

    def seed_list(self, n: int) -> list[int]:
        return list(range(self.seed_base, self.seed_base + n))

    def with_seeds(self, n: int) -> Config:
        return dataclasses.replace(
            self, seeds=n, change_runs=math.ceil(2.5 * n),
            slow_seeds=max(1, n // 10) if self.slow_seeds else 0,
            slow_change_runs=max(1, n // 5) if self.slow_seeds else 0,
        )


FULL = Config(seeds=40, null_length=50_000, slow_seeds=4, slow_null_length=10_000,
              change_runs=100, slow_change_runs=8, calibration_length=25_000,
              calibration_length_embedding=20_000, pool_size=20_000, cost_records=50_000)
QUICK = Config(seeds=5, null_length=20_000, slow_seeds=0, slow_null_length=0,
               change_runs=13, slow_change_runs=0, calibration_length=10_000,
               calibration_length_embedding=4000, pool_size=2000, cost_records=5000)


# --- detectors -------------------------------------------------------------------------------
_CACHE = CalibrationCache()  # one per process; calibration is pure, so sharing only saves time


def our_method(key: str) -> str:
    return {"tokens": "rank_cusum", "binary": "bernoulli_cusum",
            "embedding": "mmd"}[streams.SPECS[key].kind]


def make_ours(key: str, cfg: Config, expected_run_time: int,
              cache: CalibrationCache | None = None) -> Detector:
    factory = DetectorFactory.from_config(
        {"expected_run_time": expected_run_time, "baseline_size": cfg.baseline_size}
    )
    factory.cache = _CACHE if cache is None else cache
    detector = factory.make(streams.SPECS[key].signal)
    assert detector is not None
    return detector


def make_river(method: str, params: dict[str, Any], seed: int) -> Any:
    params = dict(params)
    if method == "kswin":
        params.setdefault("seed", seed)  # reproducible sampling; not a tuning parameter
    return RIVER_METHODS[method](**params)


def river_methods(key: str) -> tuple[str, ...]:
    spec = streams.SPECS[key]
    methods = UNIVARIATE_DEFAULTS + (BINARY_DEFAULTS if spec.kind == "binary" else ())
    if spec.draws:  # a rescaled copy: KSWIN ranks, so its rows would repeat the original's
        methods = tuple(m for m in methods if m not in SLOW)
    return methods


def observations(key: str, purpose: str, seed: int, n: int, cfg: Config,
                 change_at: int | None = None) -> np.ndarray:
    return streams.values(key, purpose, seed, n, change_at, cfg.pool_size)


def river_input(key: str, method: str, obs: np.ndarray, cfg: Config) -> list[Any]:
    if method in BINARY:
        return [bool(v) for v in obs.tolist()]
    scalar = streams.scalar_for_river(key, obs, cfg.baseline_size)
    return np.asarray(scalar, dtype=np.float64).tolist()


def our_input(key: str, obs: np.ndarray) -> Sequence[Any]:
    return obs if streams.SPECS[key].kind == "embedding" else obs.tolist()


# --- runs ------------------------------------------------------------------------------------
def run_unchanged(detector: Detector, data: Sequence[Any], baseline_size: int) -> tuple[int, int]:
    """Feed an unchanged stream; (events after the baseline, records armed = not in drift)."""
    update = detector.update
    start = 0
    # a Bernoulli baseline may run past baseline_size (up to 3x) to see enough events
    while not detector.baseline_ready:
        update(data[start])
        start += 1
    assert start >= baseline_size
    armed = 0
    for x in data[start:]:
        if not detector.drift_detected:
            armed += 1
        update(x)
    return detector.events, armed


def run_change(detector: Detector, data: Sequence[Any], change_at: int) -> tuple[int | None, int]:
    """(delay in changed records to the first event at or after the change, or None; events
    before the change)."""
    update = detector.update
    pre = 0
    for i, x in enumerate(data):
        before = detector.events
        update(x)
        if detector.events != before:
            if i < change_at:
                pre += 1
            else:
                return i - change_at + 1, pre
    return None, pre


def river_detections(detector: Any, data: Sequence[Any], warmup: int,
                     limit: int | None = None) -> int:
    """Detections after `warmup`; stops counting past `limit` (the caller only needs to know
    that a setting exceeds its false-alarm budget)."""
    update = detector.update
    for x in data[:warmup]:
        update(x)
    hits = 0
    for x in data[warmup:]:
        update(x)
        if detector.drift_detected:
            hits += 1
            if limit is not None and hits > limit:
                break
    return hits


def river_change(detector: Any, data: Sequence[Any], warmup: int,
                 change_at: int) -> tuple[int | None, int]:
    update = detector.update
    pre = 0
    for i, x in enumerate(data):
        update(x)
        if detector.drift_detected and i >= warmup:
            if i < change_at:
                pre += 1
            else:
                return i - change_at + 1, pre
    return None, pre


# --- tasks (top level, so that worker processes can run them) --------------------------------
def task_ours_unchanged(key: str, seeds: Sequence[int], cfg: Config, expected_run_time: int,
                        length: int, purpose: str = "null") -> dict[str, int]:
    out = {"events": 0, "armed": 0, "records": 0, "streams": 0}
    for seed in seeds:
        obs = observations(key, purpose, seed, cfg.baseline_size + length, cfg)
        events, armed = run_unchanged(make_ours(key, cfg, expected_run_time),
                                      our_input(key, obs), cfg.baseline_size)
        out["events"] += events
        out["armed"] += armed
        out["records"] += length
        out["streams"] += 1
    return out


def task_ours_change(key: str, seeds: Sequence[int], cfg: Config) -> list[tuple[int | None, int]]:
    results = []
    for seed in seeds:
        obs = observations(key, "change", seed, cfg.change_at + cfg.horizon, cfg, cfg.change_at)
        results.append(run_change(make_ours(key, cfg, DEFAULT_ERT), our_input(key, obs),
                                  cfg.change_at))
    return results


def _null_inputs(key: str, method: str, seeds: Sequence[int], cfg: Config,
                 length: int) -> list[list[Any]]:
    return [river_input(key, method,
                        observations(key, "null", s, cfg.baseline_size + length, cfg), cfg)
            for s in seeds]


def task_river_unchanged(key: str, method: str, params: dict[str, Any], seeds: Sequence[int],
                         cfg: Config, length: int) -> dict[str, int]:
    events = 0
    for seed, data in zip(seeds, _null_inputs(key, method, seeds, cfg, length), strict=True):
        events += river_detections(make_river(method, params, seed), data, cfg.baseline_size)
    return {"events": events, "records": length * len(seeds), "streams": len(seeds)}


def task_river_change(key: str, method: str, params: dict[str, Any], seeds: Sequence[int],
                      cfg: Config) -> list[tuple[int | None, int]]:
    results = []
    for seed in seeds:
        obs = observations(key, "change", seed, cfg.change_at + cfg.horizon, cfg, cfg.change_at)
        results.append(river_change(make_river(method, params, seed),
                                    river_input(key, method, obs, cfg), cfg.baseline_size,
                                    cfg.change_at))
    return results


# the searched parameter, its default, and which way is more sensitive (more alarms)
SEARCH = {"adwin": ("delta", 0.002, 4.0, 0.5), "page_hinkley": ("threshold", 50.0, 0.25, None)}


def task_river_search(key: str, method: str, seeds: Sequence[int], cfg: Config,
                      length: int) -> dict[str, Any]:
    """The most sensitive value of the searched parameter with <= FALSE_ALARM_BUDGET false
    detections per 100k on the first half of the unchanged streams: steps x4 from the default
    until the budget is crossed, then 2 bisections on the log scale. Its false detections are
    then counted on all the unchanged streams (those are what the table reports)."""
    name, default, sensitive, bound = SEARCH[method]
    inputs = _null_inputs(key, method, seeds, cfg, length)
    half = max(1, len(seeds) // 2)
    allowed = math.floor(FALSE_ALARM_BUDGET * length * half / 100_000)
    tried: dict[float, bool] = {}

    def count(value: float, streams: int, limit: int | None) -> int:
        hits = 0
        for seed, data in zip(seeds[:streams], inputs[:streams], strict=True):
            left = None if limit is None else limit - hits
            hits += river_detections(make_river(method, {name: value}, seed), data,
                                     cfg.baseline_size, limit=left)
            if limit is not None and hits > limit:
                break
        return hits

    def ok(value: float) -> bool:
        if value not in tried:
            tried[value] = count(value, half, allowed) <= allowed
        return tried[value]

    def step(value: float, factor: float) -> float:
        value *= factor
        return min(value, bound) if bound is not None else value

    passing: float | None = None
    failing: float | None = None
    if ok(default):
        passing = default
        for _ in range(12):
            nxt = step(passing, sensitive)
            if nxt == passing:
                break
            if not ok(nxt):
                failing = nxt
                break
            passing = nxt
    else:
        failing = default
        for _ in range(12):
            nxt = step(failing, 1 / sensitive)
            if ok(nxt):
                passing = nxt
                break
            failing = nxt
    if passing is not None and failing is not None:
        for _ in range(2):
            middle = math.sqrt(passing * failing)
            if ok(middle):
                passing = middle
            else:
                failing = middle
    chosen = passing if passing is not None else failing
    assert chosen is not None
    return {"params": {name: chosen}, "events": count(chosen, len(seeds), None),
            "records": length * len(seeds), "streams": len(seeds),
            "found": passing is not None, "evaluations": len(tried)}


# --- cost ------------------------------------------------------------------------------------
def measure_cost(key: str, cfg: Config) -> dict[str, float]:
    """µs per update() after calibration (best of `repeats` passes over `cost_records`
    records), and the calibration time with an empty cache (best of `repeats`)."""
    obs = observations(key, "cost", 0, cfg.baseline_size + cfg.cost_records, cfg)
    data = our_input(key, obs)
    calibrations, rates = [], []
    for _ in range(cfg.repeats):
        detector = make_ours(key, cfg, DEFAULT_ERT, cache=CalibrationCache())
        index = 0
        while True:  # the update that completes the baseline runs the calibration
            started = time.perf_counter()
            detector.update(data[index])
            index += 1
            if detector.baseline_ready:
                calibrations.append(time.perf_counter() - started)
                break
        live = data[index:]
        update = detector.update
        started = time.perf_counter()
        for x in live:
            update(x)
        rates.append((time.perf_counter() - started) / len(live) * 1e6)
    return {"us_per_record": min(rates), "calibration_s": min(calibrations)}


def tokenizer_reference_us(samples: int = 300, repeats: int = 3) -> float | None:
    """µs to count the tokens of a ~200-token reply with the exporter's TokenCounter."""
    try:
        from exporter.signals.tokens import TokenCounter

        counter = TokenCounter()
        counter.preload()
    except Exception:  # the encodings may be missing on a stripped-down install
        return None
    rng = streams.rng_for("tokens", "tokenizer", 0)
    words = (streams.FILLER + " " + " ".join(streams.TOPICS)).split()
    texts = [" ".join(words[i] for i in rng.integers(len(words), size=160)) + "."
             for _ in range(samples)]
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        for text in texts:
            counter.count(text, "gpt-4o")
        best = min(best, time.perf_counter() - started)
    return best / samples * 1e6


