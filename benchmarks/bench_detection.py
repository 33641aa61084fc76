"""Detection benchmark: false alarms, detection delay, calibration and cost of the drift detectors.

    python benchmarks/bench_detection.py [--quick] [--seeds N] [--workers W] [--markdown OUT.md]

The full run takes about 5 minutes on 2 CPUs; ``--quick`` (5 seeds, shorter streams, no KSWIN)
about 25 seconds. Timings (cost table) are the best of 3 passes, taken before the workers start.

Synthetic streams (benchmarks/detection_streams.py) for each signal, several seeds each:

1. Unchanged streams at the default ``expected_run_time`` (100,000): false events per 100,000
   records, for our detectors (built by `DetectorFactory`, sharing one `CalibrationCache`) and
   for river's ADWIN, KSWIN and PageHinkley at their defaults (binary signals: also DDM, EDDM
   and HDDM_A), and ADWIN/PageHinkley at settings *matched* to <= 1 false event per 100,000 on
   the same unchanged streams (a small log-scale search of ADWIN's ``delta`` and PageHinkley's
   ``threshold`` on half of those streams, other parameters at their defaults; a matched row's
   false events are then counted on all of them, so half in-sample).
2. Streams with a change at record ``change_at`` (after a ``baseline_size`` baseline): the delay
   is the number of changed records seen up to and including the first detection (a detection
   at the first changed record is delay 1). A detection before the change is a false alarm
   (counted in "pre-change alarms"), never a detection; runs without a detection within the
   horizon count as undetected (delay > horizon) in the percentiles.
3. Calibration: with ``expected_run_time=1000`` on unchanged streams, each seed with its own
   detector and baseline, the mean run length between false events = records during which the
   detector was armed (not in drift) / events, next to the target 1,000.
4. Cost: microseconds per `update()` after calibration, and calibration time (the `update()`
   that completes the baseline, with an empty calibration cache).

"False event" = a transition into drift: our detectors' `events` count; a river detector's
`drift_detected` (river resets itself after each). river detectors see every record from the
first, but detections are only counted after the first ``baseline_size`` records, the time our
detectors spend learning their baseline. river's univariate detectors cannot take vectors: on the
embedding stream they get each vector's score on the first principal component of the stream's
own baseline vectors.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import math
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# One BLAS thread per process: the worker processes already use every core, and the small
# matrix-vector products of the MMD detector only lose time to thread hand-offs.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402
from scipy.stats import chi2  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import detection_streams as streams  # noqa: E402

from exporter.detectors.base import Detector  # noqa: E402
from exporter.detectors.calibration import CalibrationCache  # noqa: E402
from exporter.detectors.factory import DetectorFactory  # noqa: E402
from exporter.detectors.river_adapter import BINARY, RIVER_METHODS  # noqa: E402

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


# --- statistics ------------------------------------------------------------------------------
def poisson_interval(k: int, level: float = 0.95) -> tuple[float, float]:
    low = 0.0 if k == 0 else chi2.ppf((1 - level) / 2, 2 * k) / 2
    high = chi2.ppf(1 - (1 - level) / 2, 2 * k + 2) / 2
    return float(low), float(high)


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Row:
    key: str
    detector: str
    setting: str
    events: int = 0
    records: int = 0
    streams: int = 0
    armed: int | None = None  # our detectors: records not in drift on the unchanged streams
    runs: list[tuple[int | None, int]] = field(default_factory=list)
    note: str = ""

    def rate(self) -> float:
        return self.events / self.records * 1e5 if self.records else math.nan

    def delays(self) -> list[float]:
        return [math.inf if d is None else float(d) for d, _ in self.runs]


def fmt_delay(value: float, horizon: int) -> str:
    return f">{horizon:,}" if math.isinf(value) else f"{value:,.0f}"


def fmt_rate(row: Row) -> str:
    if not row.records:
        return "n/a"
    low, high = poisson_interval(row.events)
    scale = 1e5 / row.records
    return f"{row.rate():.3g} ({low * scale:.2g}-{high * scale:.2g})"


# --- orchestration ---------------------------------------------------------------------------
def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


class Runner:
    """Runs tasks in a process pool (inline when workers=1)."""

    def __init__(self, workers: int) -> None:
        self.pool: cf.Executor | None = None
        if workers > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context)

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        if self.pool is not None:
            return self.pool.submit(fn, *args)
        future: cf.Future[Any] = cf.Future()
        future.set_result(fn(*args))
        return future

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


@dataclass
class Results:
    cfg: Config
    rows: list[Row]
    calibration: list[dict[str, Any]]
    costs: dict[str, dict[str, float]]
    tokenizer_us: float | None
    seconds: float
    workers: int


# rough µs per record, only to submit the longest tasks first
_US = {"rank_cusum": 4.0, "bernoulli_cusum": 1.5, "mmd": 12.0, "kswin": 250.0, "hddm_a": 6.0}
_CALIBRATION_S = {"mmd": 0.7}


@dataclass
class _Job:
    cost: float
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    row: Row | None
    what: str  # "null" | "change" | "calibration"


def run_benchmark(cfg: Config, workers: int = 1, keys: Iterable[str] = MAIN_STREAMS,
                  calibration_keys: Iterable[str] = CALIBRATION_STREAMS,
                  progress: Callable[[str], None] | None = None,
                  tokenizer: bool = True) -> Results:
    """Everything the tables need; `tokenizer=False` skips the tokenizer reference."""
    started = time.perf_counter()
    say = progress or (lambda _message: None)
    keys, calibration_keys = tuple(keys), tuple(calibration_keys)
    if "embedding" in keys or "embedding" in calibration_keys:
        say(f"embedding {cfg.pool_size:,} texts per topic")
        streams.embedding_pool(cfg.pool_size)  # before the workers fork, so they share it

    costs = {}  # first, alone on the machine
    for key in keys:
        method = our_method(key)
        if method not in costs:
            costs[method] = measure_cost(key, cfg)
            say(f"cost {OUR_LABELS[method]}: {costs[method]}")
    tokenizer_us = tokenizer_reference_us(repeats=cfg.repeats) if tokenizer else None

    parts = 4 * workers  # tasks per experiment: small enough to balance the workers
    null_seeds = list(range(cfg.seeds))
    change_seeds = list(range(cfg.change_runs))
    change_length = cfg.change_at + cfg.horizon // 2  # a guess, for ordering only
    rows: list[Row] = []
    jobs: list[_Job] = []
    matched: list[tuple[Row, str]] = []

    def add_runs(row: Row, method: str, seeds: list[int], length: int, null: Callable[..., Any],
                 change: Callable[..., Any], change_runs: list[int], *head: Any) -> None:
        us, calibration = _US.get(method, 0.5), _CALIBRATION_S.get(method, 0.0)
        for part in chunks(seeds, math.ceil(len(seeds) / parts)):
            cost = len(part) * ((cfg.baseline_size + length) * us * 1e-6 + calibration)
            jobs.append(_Job(cost, null, (*head, part, cfg, *_tail(null, length)), row, "null"))
        for part in chunks(change_runs, math.ceil(len(change_runs) / parts)):
            cost = len(part) * (change_length * us * 1e-6 + calibration)
            jobs.append(_Job(cost, change, (*head, part, cfg), row, "change"))

    for key in keys:
        method = our_method(key)
        row = Row(key, OUR_LABELS[method], f"expected_run_time={DEFAULT_ERT:,}")
        rows.append(row)
        add_runs(row, method, null_seeds, cfg.null_length, task_ours_unchanged,
                 task_ours_change, change_seeds, key)
        for method in river_methods(key):
            seeds, length, runs, note = _river_counts(cfg, method)
            if not seeds:
                continue
            row = Row(key, RIVER_LABELS[method], "defaults", note=note)
            rows.append(row)
            add_runs(row, method, seeds, length, task_river_unchanged, task_river_change, runs,
                     key, method, {})
        for method in MATCHED:
            row = Row(key, RIVER_LABELS[method], "matched")
            rows.append(row)
            matched.append((row, method))
    for key in calibration_keys:
        method = our_method(key)
        length = (cfg.calibration_length_embedding if streams.SPECS[key].kind == "embedding"
                  else cfg.calibration_length)
        us, calibration = _US.get(method, 0.5), _CALIBRATION_S.get(method, 0.0) / 2
        for part in chunks(null_seeds, math.ceil(len(null_seeds) / parts)):
            cost = len(part) * ((cfg.baseline_size + length) * us * 1e-6 + calibration)
            jobs.append(_Job(cost, task_ours_unchanged,
                             (key, part, cfg, CALIBRATION_ERT, length, "calibration"), None,
                             "calibration"))

    runner = Runner(workers)
    # searches first: their change runs can only start when they are done
    searches = {runner.submit(task_river_search, row.key, method, null_seeds, cfg,
                              cfg.null_length): (row, method) for row, method in matched}
    submitted = [(runner.submit(job.fn, *job.args), job)
                 for job in sorted(jobs, key=lambda job: -job.cost)]
    for future in cf.as_completed(searches):
        row, method = searches[future]
        found = future.result()
        value = next(iter(found["params"].values()))
        row.setting = f"{next(iter(found['params']))}={value:.2g}"
        row.setting += " (matched)" if found["found"] else " (none met the budget)"
        row.events, row.records, row.streams = found["events"], found["records"], found["streams"]
        row.note = f"searched on half of these streams; {found['evaluations']} settings tried"
        say(f"matched {row.key} {row.detector}: {row.setting}, {row.events} events")
        for part in chunks(change_seeds, math.ceil(len(change_seeds) / parts)):
            job = _Job(0.0, task_river_change, (row.key, method, found["params"], part, cfg),
                       row, "change")
            submitted.append((runner.submit(job.fn, *job.args), job))
    calibration: dict[str, dict[str, Any]] = {}
    for future, job in submitted:
        result = future.result()
        if job.what == "calibration":
            key = job.args[0]
            total = calibration.setdefault(
                key, {"key": key, "events": 0, "armed": 0, "records": 0, "streams": 0})
            for name in ("events", "armed", "records", "streams"):
                total[name] += result[name]
        elif job.what == "null":
            assert job.row is not None
            job.row.events += result["events"]
            job.row.records += result["records"]
            job.row.streams += result["streams"]
            if "armed" in result:
                job.row.armed = (job.row.armed or 0) + result["armed"]
        else:
            assert job.row is not None
            job.row.runs.extend(result)
    runner.close()
    say("done")
    return Results(cfg, rows, [calibration[k] for k in calibration_keys], costs, tokenizer_us,
                   time.perf_counter() - started, workers)


def _river_counts(cfg: Config, method: str) -> tuple[list[int], int, list[int], str]:
    """(unchanged-stream seeds, their length, change-run seeds, note) for a river method."""
    if method in SLOW:
        return (list(range(cfg.slow_seeds)), cfg.slow_null_length,
                list(range(cfg.slow_change_runs)), "fewer records (slow)")
    if method in MEDIUM:
        return (list(range(max(1, cfg.seeds // 4))), cfg.null_length,
                list(range(max(1, cfg.change_runs // 2))), "fewer records (slow)")
    return list(range(cfg.seeds)), cfg.null_length, list(range(cfg.change_runs)), ""


def _tail(null: Callable[..., Any], length: int) -> tuple[Any, ...]:
    """The arguments after (..., seeds, cfg) of an unchanged-stream task."""
    return (DEFAULT_ERT, length) if null is task_ours_unchanged else (length,)


# --- report ----------------------------------------------------------------------------------
def markdown(results: Results) -> str:
    cfg = results.cfg
    slow = (f"KSWIN: {cfg.slow_seeds} x {cfg.slow_null_length:,} and {cfg.slow_change_runs} "
            "change runs" if cfg.slow_seeds else "KSWIN left out")
    slow += f"; HDDM_A: {max(1, cfg.seeds // 4)} x {cfg.null_length:,} and "
    slow += f"{max(1, cfg.change_runs // 2)} change runs"
    lines = [
        "## Detection benchmark",
        "",
        f"`python benchmarks/bench_detection.py` — {cfg.seeds} seeds; unchanged streams "
        f"{cfg.seeds} x {cfg.null_length:,} records after a {cfg.baseline_size:,}-record "
        f"baseline per signal ({slow}); {cfg.change_runs} change runs per signal, change at "
        f"record {cfg.change_at:,}, horizon {cfg.horizon:,}; machine: {os.cpu_count()} CPUs "
        f"(nproc), {results.workers} worker processes, {platform.python_implementation()} "
        f"{platform.python_version()}; total runtime {results.seconds:.0f} s.",
        "",
        f"### False events and delay at expected_run_time={DEFAULT_ERT:,}",
        "",
        "False events per 100k: on unchanged streams, with the 95% Poisson interval. Delay: "
        "changed records seen up to the first detection (median, p90; undetected runs count as "
        f"> {cfg.horizon:,}). Pre-change: runs with a false alarm between the baseline and the "
        "change. Note on our detectors: mean records in drift per false event (until re-armed).",
        "",
        "| signal (change) | detector | setting | unchanged records | false events "
        "| per 100k (95% CI) | median delay | p90 delay "
        f"| detected <= {cfg.horizon:,} | pre-change alarms | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in results.rows:
        spec = streams.SPECS[row.key]
        delays = row.delays()
        if delays:
            median = fmt_delay(nearest_rank(delays, 0.5), cfg.horizon)
            p90 = fmt_delay(nearest_rank(delays, 0.9), cfg.horizon)
            within = sum(d <= cfg.horizon for d in delays) / len(delays)
            detected = f"{within:.0%}"
            pre = f"{sum(p > 0 for _, p in row.runs)}/{len(row.runs)}"
        else:
            median = p90 = detected = pre = "n/a"
        note = row.note
        if row.armed is not None and row.events:
            note = f"false events last {(row.records - row.armed) / row.events:,.0f} records"
        lines.append(
            f"| {spec.label} ({spec.change}) | {row.detector} | {row.setting} "
            f"| {row.records:,} | {row.events:,} | {fmt_rate(row)} | {median} | {p90} "
            f"| {detected} | {pre} | {note} |"
        )
    lines += [
        "",
        f"### Calibration at expected_run_time={CALIBRATION_ERT:,}",
        "",
        "Each seed learns its own baseline (a new detector per seed). Mean run length = "
        "records armed (not in drift) / events; target 1,000, within +-25%, >= 30 events. "
        "Drift episode: mean records from a false event until the detector re-armed.",
        "",
        "| stream | detector | seeds | records | armed | events | mean run length | ratio "
        "| target met | drift episode |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for c in results.calibration:
        spec = streams.SPECS[c["key"]]
        run_length = c["armed"] / c["events"] if c["events"] else math.inf
        ratio = run_length / CALIBRATION_ERT
        met = c["events"] >= 30 and abs(ratio - 1.0) <= 0.25
        verdict = "yes" if met else ("too few events" if c["events"] < 30 else "no")
        episode = (f"{(c['records'] - c['armed']) / c['events']:,.0f}" if c["events"]
                   else "n/a")
        lines.append(
            f"| {spec.label} | {OUR_LABELS[our_method(c['key'])]} | {c['streams']} "
            f"| {c['records']:,} | {c['armed']:,} | {c['events']:,} | {run_length:,.0f} "
            f"| {ratio:.2f} | {verdict} | {episode} |"
        )
    lines += [
        "",
        "### Cost",
        "",
        f"update() after calibration, one process; calibration at "
        f"expected_run_time={DEFAULT_ERT:,} with an empty cache (rank and Bernoulli "
        "thresholds are then cached and shared by every stream with the same baseline size "
        "and count; MMD calibrates each stream).",
        "",
        "| detector | µs per record | calibration (s) |",
        "|---|---:|---:|",
    ]
    for method, cost in results.costs.items():
        lines.append(f"| {OUR_LABELS[method]} | {cost['us_per_record']:.1f} "
                     f"| {cost['calibration_s']:.2f} |")
    if results.tokenizer_us is not None:
        lines += ["", f"For scale: counting the tokens of a ~200-token reply with the "
                      f"exporter's TokenCounter takes {results.tokenizer_us:.1f} µs."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    parser.add_argument("--seeds", type=int,
                        help="unchanged streams (and calibration baselines) per signal; change "
                             "runs = 2.5x this (default 40, quick 5)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: all CPUs)")
    parser.add_argument("--markdown", metavar="OUT.md", help="also write the tables here")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.seeds:
        cfg = cfg.with_seeds(args.seeds)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = run_benchmark(cfg, workers=max(1, args.workers), progress=progress)
    text = markdown(results)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
