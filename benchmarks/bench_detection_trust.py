"""The per-stream section of the detection benchmark: what one team feels on its own stream.

The averages section (bench_detection_averages.py) pools many streams, which hides the unlucky
one whose baseline drew a rare-event rate far from the truth. This section measures each stream:

1. **False events per stream**: `streams` unchanged streams per shape, each with its own
   detector (built by `DetectorFactory` from the default config, one factory and calibration
   cache per process as in a running exporter) learning its own baseline, then `length`
   (100,000) records watched. Per shape: the events of every stream; the bar, from issue 12, is
   checked on every group of 12 consecutive seeds: the worst stream <= 3 events and the 12
   together <= 18.
2. **Flapping after a persistent change**: the change starts at record `change_at` (2,000) and
   holds; events in the `after` (30,000) records from it (bar: <= 2 in every run), false events
   before it, and whether the detector is still in drift at the end (a persistent change should
   stay one detected episode).
3. **Delay** on the same change runs: changed records seen up to and including the first event
   at or after the change, median and p90 (undetected runs count as > the horizon); river's
   ADWIN and PageHinkley (binary signals: also DDM and EDDM) at their defaults on the same
   records up to `river_horizon` records after the change, warming up on the first
   `baseline_size` records as in the averages section.

Seeds: every stream is a function of (shape, purpose, seed); `seed_base` shifts all seeds, so a
fresh base (1,000,000 for published runs) gives streams nobody tuned on (tuning uses base 0).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import bench_detection_common  # noqa: F401  (first: BLAS threads, import path)
import detection_streams as streams
import numpy as np
from bench_detection_common import Runner, chunks
from bench_detection_runs import BINARY_DEFAULTS, make_river, river_change

from exporter.detectors.base import Detector
from exporter.detectors.factory import DetectorFactory
from exporter.detectors.river_adapter import BINARY

GROUP = 12  # the bar is stated per 12 streams
WORST_BAR, GROUP_BAR, FLAP_BAR = 3, 18, 2
# Unchanged shapes per signal (part 1), in table order.
NULL_SHAPES = ("tokens_07", "tokens_13", "tokens_heavy", "tokens_pareto", "tokens_const",
               "json_tokens", "refusal_05", "refusal_1", "refusal", "refusal_5", "validity_03",
               "validity", "validity_5", "embedding", "embedding_skewed", "embedding_rare")
# Persistent changes (parts 2 and 3) and their delay bar in records (None: no bar).
CHANGES: dict[str, int | None] = {
    "tokens": 300, "tokens_07": 300, "tokens_13": None, "refusal": 1000, "validity": 1000,
    "embedding": None, "json_tokens": None, "json_validity": 1000,
}
RIVER_DELAY_METHODS = ("adwin", "page_hinkley")
SIGNALS = ("output_tokens", "refusal", "format_validity", "embedding")
# rough CPU seconds per 100,000 records, only to submit the longest tasks first
_SECONDS = {"tokens": 0.5, "binary": 0.15, "embedding": 1.2}


@dataclass(frozen=True)
class TrustConfig:
    streams: int  # unchanged streams per shape; groups of GROUP are checked against the bar
    change_runs: int  # change runs per persistent change
    river_runs: int  # of those, how many river's detectors also run (same records)
    length: int = 100_000  # records watched per unchanged stream, after its baseline
    change_at: int = 2000
    after: int = 30_000
    river_horizon: int = 5000
    pool_size: int = 20_000
    seed_base: int = 0
    max_baseline: int = 200_000  # a baseline still learning after this many records is an error

    def seeds(self, n: int) -> list[int]:
        return list(range(self.seed_base, self.seed_base + n))


TRUST_FULL = TrustConfig(streams=60, change_runs=60, river_runs=30)
TRUST_QUICK = TrustConfig(streams=12, change_runs=12, river_runs=12)


# --- feeding our detectors -------------------------------------------------------------------
_FACTORY: list[DetectorFactory] = []  # one per process (and its calibration cache)


def make_detector(key: str) -> Detector:
    """The detector the exporter would build for the stream's signal at the default config."""
    if not _FACTORY:
        _FACTORY.append(DetectorFactory.from_config({}))
    detector = _FACTORY[0].make(streams.SPECS[key].signal)
    assert detector is not None, f"{streams.SPECS[key].signal}: detector disabled by default"
    return detector


def default_settings() -> dict[str, int]:
    return dataclasses.asdict(DetectorFactory.from_config({}).settings)


def _as_input(key: str, block: np.ndarray) -> Sequence[Any]:
    return block if streams.SPECS[key].kind == "embedding" else block.tolist()


@dataclass
class Fed:
    """What happened on one stream: where its baseline was complete (records learned) and the
    0-based record of each event."""

    baseline: int = 0
    events: list[int] = field(default_factory=list)
    in_drift: bool = False


def feed(detector: Detector, key: str, source: Iterator[np.ndarray], total: Callable[[int], int],
         max_baseline: int) -> Fed:
    """Feed blocks until `total(baseline records)` records are in; note each event's record.

    `update_run` returns at every change of drift level, so an event is seen where it happens."""
    fed, out, end = 0, Fed(), None
    for block in source:
        data = _as_input(key, block)
        i = 0
        while end is None and i < len(data):  # learning: one record per call
            i = detector.update_run(data, i)
            if detector.baseline_ready:
                out.baseline = fed + i
                end = total(out.baseline)
        if end is None:
            fed += len(data)
            if fed >= max_baseline:
                raise RuntimeError(f"{key}: baseline still learning after {fed:,} records")
            continue
        stop = min(len(data), end - fed)
        part = data[:stop]
        while i < stop:
            events = detector.events
            i = detector.update_run(part, i)
            if detector.events != events:
                out.events.append(fed + i - 1)
        fed += stop
        if fed >= end:
            break
    out.in_drift = detector.drift_detected
    return out


# --- tasks (top level, so that worker processes can run them) --------------------------------
def task_null(key: str, seeds: Sequence[int], cfg: TrustConfig) -> list[tuple[int, int, int]]:
    """(seed, false events in `length` records after the baseline, baseline records)."""
    out = []
    for seed in seeds:
        source = streams.blocks(key, "trust-null", seed, pool_size=cfg.pool_size)
        fed = feed(make_detector(key), key, source, lambda b: b + cfg.length, cfg.max_baseline)
        out.append((seed, len(fed.events), fed.baseline))
    return out


@dataclass
class ChangeRun:
    seed: int
    delay: int | None  # records from the change to the first event at or after it (1 = first)
    after: int  # events in the `after` records from the change
    pre: int  # events between the baseline and the change
    in_drift: bool  # still in drift at the end
    baseline: int  # records the baseline took (> change_at: it learned changed records)


def task_change(key: str, seeds: Sequence[int], cfg: TrustConfig) -> list[ChangeRun]:
    out = []
    end = cfg.change_at + cfg.after
    for seed in seeds:
        source = streams.blocks(key, "trust-change", seed, cfg.change_at, cfg.pool_size)
        fed = feed(make_detector(key), key, source, lambda b: max(b, end), cfg.max_baseline)
        later = [r for r in fed.events if r >= cfg.change_at]
        out.append(ChangeRun(
            seed=seed, delay=later[0] - cfg.change_at + 1 if later else None,
            after=sum(r < end for r in later), pre=len(fed.events) - len(later),
            in_drift=fed.in_drift, baseline=fed.baseline))
    return out


def prefix(key: str, purpose: str, seed: int, n: int, change_at: int | None,
           pool_size: int) -> np.ndarray:
    """The first `n` records of a stream as `blocks` yields them (the records ours saw)."""
    parts, have = [], 0
    for block in streams.blocks(key, purpose, seed, change_at, pool_size):
        parts.append(block)
        have += len(block)
        if have >= n:
            break
    return np.concatenate(parts)[:n]


def task_river(key: str, method: str, seeds: Sequence[int], cfg: TrustConfig,
               warmup: int) -> list[tuple[int | None, int]]:
    """river's (delay, detections before the change) at its defaults, on the change runs'
    records up to `river_horizon` after the change."""
    out = []
    for seed in seeds:
        obs = prefix(key, "trust-change", seed, cfg.change_at + cfg.river_horizon,
                     cfg.change_at, cfg.pool_size)
        if method in BINARY:
            data: list[Any] = [bool(v) for v in obs.tolist()]
        else:
            data = np.asarray(streams.scalar_for_river(key, obs, warmup),
                              dtype=np.float64).tolist()
        out.append(river_change(make_river(method, {}, seed), data, warmup, cfg.change_at))
    return out


# --- orchestration ---------------------------------------------------------------------------
@dataclass
class TrustResults:
    cfg: TrustConfig
    settings: dict[str, int]
    null: dict[str, list[tuple[int, int, int]]]
    changes: dict[str, list[ChangeRun]]
    river: dict[tuple[str, str], list[tuple[int | None, int]]]
    seconds: float
    workers: int


def river_methods_for(key: str) -> tuple[str, ...]:
    binary = streams.SPECS[key].kind == "binary"
    return RIVER_DELAY_METHODS + (BINARY_DEFAULTS[:2] if binary else ())


def selected(keys: Iterable[str], signals: Iterable[str] | None) -> list[str]:
    wanted = set(SIGNALS if signals is None else signals)
    return [k for k in keys if streams.SPECS[k].signal in wanted]


def run_trust(cfg: TrustConfig, workers: int = 1, signals: Iterable[str] | None = None,
              null_shapes: Iterable[str] = NULL_SHAPES,
              changes: Iterable[str] = tuple(CHANGES),
              progress: Callable[[str], None] | None = None) -> TrustResults:
    started = time.perf_counter()
    say = progress or (lambda _message: None)
    signals = None if signals is None else tuple(signals)
    null_keys, change_keys = selected(null_shapes, signals), selected(changes, signals)
    if any(streams.SPECS[k].kind == "embedding" for k in (*null_keys, *change_keys)):
        say(f"embedding {cfg.pool_size:,} texts per topic")
        streams.embedding_pool(cfg.pool_size)  # before the workers fork, so they share it
    settings = default_settings()
    parts = 4 * max(1, workers)
    jobs: list[tuple[float, str, tuple[Any, ...], Callable[..., Any]]] = []
    for key in null_keys:
        per = _SECONDS[streams.SPECS[key].kind] * (cfg.length + settings["baseline_size"]) / 1e5
        for part in chunks(cfg.seeds(cfg.streams), math.ceil(cfg.streams / parts)):
            jobs.append((per * len(part), "null", (key, part, cfg), task_null))
    change_length = cfg.change_at + cfg.after
    for key in change_keys:
        per = _SECONDS[streams.SPECS[key].kind] * change_length / 1e5
        for part in chunks(cfg.seeds(cfg.change_runs), math.ceil(cfg.change_runs / parts)):
            jobs.append((per * len(part), "change", (key, part, cfg), task_change))
        for method in river_methods_for(key):
            runs = cfg.seeds(cfg.river_runs)
            for part in chunks(runs, math.ceil(len(runs) / parts)):
                cost = 0.08 * len(part) * (cfg.change_at + cfg.river_horizon) / 1e4
                jobs.append((cost, "river", (key, method, part, cfg, settings["baseline_size"]),
                             task_river))
    runner = Runner(workers)
    submitted = [(runner.submit(fn, *args), what, args)
                 for _, what, args, fn in sorted(jobs, key=lambda job: -job[0])]
    null: dict[str, list[tuple[int, int, int]]] = {k: [] for k in null_keys}
    change: dict[str, list[ChangeRun]] = {k: [] for k in change_keys}
    river: dict[tuple[str, str], list[tuple[int | None, int]]] = {
        (k, m): [] for k in change_keys for m in river_methods_for(k)}
    for done, (future, what, args) in enumerate(submitted, 1):
        result = future.result()
        if what == "null":
            null[args[0]].extend(result)
        elif what == "change":
            change[args[0]].extend(result)
        else:
            river[(args[0], args[1])].extend(result)
        if done % max(1, len(submitted) // 10) == 0:
            say(f"trust: {done}/{len(submitted)} tasks, {time.perf_counter() - started:.0f} s")
    runner.close()
    for runs in null.values():
        runs.sort()
    for changed in change.values():
        changed.sort(key=lambda run: run.seed)
    return TrustResults(cfg, settings, null, change, river, time.perf_counter() - started,
                        max(1, workers))
