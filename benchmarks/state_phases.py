"""The in-process phases of bench_state.py (see its docstring): each returns what it measured
and leaves the pipeline and store for the next."""

from __future__ import annotations

import cProfile
import io
import math
import pstats
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from state_feed import (
    Checkpoint,
    Feed,
    Run,
    StoreInfo,
    config,
    learn_all,
    store_info,
    take,
    whole_copy,
)

from exporter.detectors.calibration import CalibrationCache
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore, restore_streams


@dataclass
class Settings:
    streams: int
    batch: int
    baseline_size: int | None  # None: the default (1,000)
    learn_seconds: float
    steady_seconds: float
    sizes: list[int]
    reset_cycles: int
    reset_seconds: float
    expire_share: float
    relearn: bool
    profile: bool
    workdir: Path
    calibration: Executor  # where thresholds are simulated, as in the exporter


@dataclass
class Results:
    first: Checkpoint | None = None  # the first (whole) checkpoint of a new store, all learning
    learning: list[Checkpoint] = field(default_factory=list)
    learning_store: StoreInfo | None = None
    pretrain: dict[str, float] = field(default_factory=dict)
    catch_up: Checkpoint | None = None
    steady: list[Checkpoint] = field(default_factory=list)
    ingest: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # cpu, wall, n
    stores: dict[str, tuple[StoreInfo, StoreInfo]] = field(default_factory=dict)  # kept, whole
    restart: dict[str, float] = field(default_factory=dict)
    restart_first: Checkpoint | None = None
    sizes: list[dict[str, Any]] = field(default_factory=list)
    resets: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)


def _timed_ingest(run: Run) -> tuple[float, float, int]:
    return run.ingest_cpu, run.ingest_wall, run.records


def _since(run: Run, before: tuple[float, float, int]) -> tuple[float, float, int]:
    now = _timed_ingest(run)
    return now[0] - before[0], now[1] - before[1], now[2] - before[2]


def _profile(run: Run, name: str, out: Results) -> None:
    """One more checkpoint after a second of ingestion, under cProfile: where it goes."""
    store, run.store = run.store, None
    run.feed_batches(seconds=run.interval)
    run.store = store
    assert store is not None
    profiler = cProfile.Profile()
    profiler.enable()
    checkpoint = take(store, run.pipeline, run.feed.positions())
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(14)
    body = text.getvalue()
    body = body[body.find("ncalls"):] if "ncalls" in body else body
    out.profiles[name] = (f"make {checkpoint.make_cpu * 1000:.0f} ms + commit "
                          f"{checkpoint.commit_cpu * 1000:.0f} ms CPU ({checkpoint.streams} "
                          f"streams; profiled, so slower), by own time:\n" + body.rstrip())


def learn_and_steady(s: Settings, out: Results, progress: Any) -> tuple[Run, Path]:
    """A new store; every stream learning, then (saving paused) on to steady state, then
    steady. Returns the run (its pipeline steady, its store open) and the store's directory."""
    cfg = config(s.streams, s.baseline_size)
    baseline = cfg.detectors.settings.baseline_size
    live = s.workdir / "live"
    store = StateStore(live)
    pipeline = Pipeline(cfg, calibration=s.calibration)  # as the exporter: on a thread
    store.open(pipeline)
    run = Run(pipeline, Feed(s.streams, s.batch), store)
    progress(f"learning: {s.streams} streams, checkpoint every {run.interval} s of ingestion")
    run.feed_batches(batches=max(1, -(-s.streams // s.batch)))  # every stream admitted
    out.first = take(store, pipeline, run.feed.positions())
    before = _timed_ingest(run)
    run.feed_batches(seconds=s.learn_seconds,
                     until=lambda: min(run.feed.sent) >= 0.8 * baseline)
    out.learning = list(run.checkpoints)
    out.ingest["learning"] = _since(run, before)
    if s.profile:
        _profile(run, "learning", out)
    out.learning_store = store_info(store.path)

    progress("on to steady state (no checkpoints meanwhile) ...")
    run.store, started, cpu = None, time.perf_counter(), time.process_time()
    learn_all(run, pipeline)
    out.pretrain = {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                    "records": run.feed.total, "per_stream": run.feed.total / s.streams}
    run.store = store
    out.catch_up = take(store, pipeline, run.feed.positions())

    progress(f"steady state: {s.steady_seconds:.0f} s of ingestion")
    run.checkpoints = []
    before = _timed_ingest(run)
    run.feed_batches(seconds=s.steady_seconds)
    out.steady = list(run.checkpoints)
    out.ingest["steady"] = _since(run, before)
    if s.profile:
        _profile(run, "steady", out)
    take(store, pipeline, run.feed.positions())  # nothing in between: compare with a copy
    out.stores["steady"] = (store_info(store.path), whole_copy(pipeline, s.workdir / "whole")[0])
    return run, live


def restart(s: Settings, run: Run, live: Path, out: Results, progress: Any) -> Run:
    """The exporter restarted on the steady store: open, restore, the first checkpoint."""
    progress("restart: open, restore, first checkpoint")
    assert run.store is not None
    run.store.close()
    cfg = run.pipeline.config
    wall, cpu = time.perf_counter(), time.process_time()
    store, pipeline = StateStore(live), Pipeline(cfg, calibration=s.calibration)
    _, entries = store.open(pipeline)
    opened_wall, opened_cpu = time.perf_counter(), time.process_time()
    restored = store.restore(pipeline, entries)
    out.restart = {"open": opened_wall - wall, "open_cpu": opened_cpu - cpu,
                   "restore": time.perf_counter() - opened_wall,
                   "restore_cpu": time.process_time() - opened_cpu,
                   "streams": restored, "entries": len(entries)}
    out.restart_first = take(store, pipeline, run.feed.positions())
    fresh = Run(pipeline, run.feed, store)
    fresh.feed_batches(seconds=2.0)
    return fresh


def _copies(entries: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """`n` entries: the saved streams, then copies of them under another model label."""
    out = []
    for c in range(math.ceil(n / len(entries))):
        for entry in entries:
            model, *rest = entry["labels"]
            out.append({**entry, "labels": [model if c == 0 else f"{model}-{c}", *rest]})
    return out[:n]


def sizes(s: Settings, out: Results, cache: CalibrationCache, progress: Any) -> None:
    """Stores of 100, 1,000, 3,000 steady streams (copies of the saved ones beyond). Their
    pipelines share `cache` (the restarted one's): Bernoulli thresholds are not saved but
    simulated again on restore, and the copies have the same baseline counts anyway."""
    probe = StateStore(s.workdir / "whole")
    base = config(s.streams, s.baseline_size)
    _, entries = probe.open(Pipeline(base))
    probe.close()
    for n in s.sizes:
        progress(f"store of {n} steady streams")
        pipeline = Pipeline(config(n, s.baseline_size))
        pipeline.detector_factory.cache = cache
        wall = time.perf_counter()
        restored, failures = restore_streams(pipeline, _copies(entries, n))
        restore = time.perf_counter() - wall
        info, checkpoint = whole_copy(pipeline, s.workdir / f"size-{n}")
        out.sizes.append({"streams": restored, "failures": failures, "restore": restore,
                          "info": info, "checkpoint": checkpoint})
        del pipeline


def _expire(pipeline: Pipeline, streams: list[Any]) -> None:
    """The product has no stream expiry yet; one would drop the stream from the table,
    so that is what this does (StreamTable's own dict)."""
    table = pipeline.streams._streams
    for stream in streams:
        del table[stream.labels]


def resets(s: Settings, run: Run, out: Results, progress: Any) -> None:
    """Half the streams reset `reset_cycles` times (each followed by `reset_seconds` of
    ingestion, checkpointed every second); then a share expired; then (relearn) until every
    stream is steady again. After each step the kept store is compared with a whole copy."""
    assert run.store is not None
    pipeline, store = run.pipeline, run.store
    labels = sorted(stream.labels for stream in pipeline.streams)
    half = [pipeline.streams.get(key) for key in labels[::2]]

    def note(step: str) -> None:
        take(store, pipeline, run.feed.positions())
        kept = store_info(store.path)
        whole = whole_copy(pipeline, s.workdir / f"whole-{len(out.resets)}")[0]
        out.resets.append({"step": step, "kept": kept, "whole": whole,
                           "streams": len(pipeline.streams)})

    note("steady, after the restart")
    for cycle in range(s.reset_cycles):
        progress(f"reset cycle {cycle + 1}: {len(half)} streams reset")
        for stream in half:
            stream.reset_baselines()
        run.feed_batches(seconds=s.reset_seconds)
        note(f"reset {cycle + 1} of half, then {s.reset_seconds:.0f} s")
    order = sorted(pipeline.streams, key=lambda st: st.labels)
    gone = order[1::max(2, round(1 / s.expire_share))]  # among the half not reset
    _expire(pipeline, gone)
    routes = {st.labels[-1] for st in gone}
    left = [i for i in range(s.streams) if f"/s{i:05d}" not in routes]
    run.feed_batches(seconds=1.0, only=left)
    note(f"{len(gone)} streams expired, then 1 s")
    if s.relearn:
        progress("relearning the reset streams to steady state ...")
        learn_all(run, pipeline, left)
        run.feed_batches(seconds=2.0, only=left)
        note("relearned: every stream steady again")
