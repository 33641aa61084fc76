"""Helpers of bench_state.py: the streams' records, feeding a `Pipeline` the way the file
input does, timing each checkpoint, and looking inside a state store.

Records are calibration_storm.py's lines (`route="/s00042"`, model `bench`): every stream its
own shape from calibration_streams.py (lengths from provider usage, refusals, invalid replies,
a topic mix embedded by the built-in embedding), so states differ the way real ones do. They
are fed in batches of `batch` lines through `Pipeline.ingest_lines`, as a file poll hands a
chunk over, and every batch gives one record to each of `batch` streams in turn, so all the
streams move on together and every one has changed by the next checkpoint (the costly case).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import calibration_streams as cs
from calibration_storm import Lines

from exporter.config import Config, parse_config
from exporter.inputs.stats import InputStats
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore
from exporter.streams.store import Changes

INPUT = "bench"
_LOOP = asyncio.new_event_loop()  # checkpoints made as the exporter does, on a loop


def config(streams: int, baseline_size: int | None) -> Config:
    """Default settings, a format rule on every stream (so all four signals are live), room
    for `streams` streams."""
    raw: dict[str, Any] = {
        "max_streams": streams + 10,
        "signals": {"format_validity": [{"expect": "regex", "pattern": cs.FORMAT_PATTERN}]},
    }
    if baseline_size is not None:
        raw["detectors"] = {"baseline_size": baseline_size}
    return parse_config(raw)


class Feed:
    """Lines of `streams` streams, handed out a batch at a time, round-robin over streams."""

    def __init__(self, streams: int, batch: int, seed: int = 1) -> None:
        self.streams, self.batch = streams, batch
        self.lines = Lines(cs.shapes(streams, seed))
        self.sent = [0] * streams  # records given to each stream so far
        self.turn = 0
        self.total = 0

    def next_batch(self, only: list[int] | None = None) -> list[bytes]:
        """The next `batch` lines; `only`: just these streams' (in turn)."""
        pool = only if only is not None else range(self.streams)
        out = []
        for _ in range(self.batch):
            i = pool[self.turn % len(pool)]
            self.turn += 1
            out.append(self.lines.line(i, self.sent[i]))
            self.sent[i] += 1
        self.total += len(out)
        if len(self.lines.blocks) > 4 * self.streams:  # keep the cache to the blocks in use
            self.lines.blocks = {k: v for k, v in self.lines.blocks.items()
                                 if k[1] >= self.sent[k[0]] // cs.BLOCK}
        return out

    def positions(self) -> dict[str, Any]:
        """What a file input's positions look like in a checkpoint."""
        return {f"{INPUT}:/data/records.jsonl": [{"path": "/data/records.jsonl",
                                                   "inode": 1, "offset": self.total * 300}]}


@dataclass
class Checkpoint:
    """One checkpoint taken after `records` records (`ingest_*`: since the previous one)."""

    records: int
    ingest_cpu: float
    ingest_wall: float
    make_cpu: float  # StateStore.checkpoint: on the event loop in the exporter
    make_wall: float  # the longest it held the loop (and any scrape waiting on it): the
    # whole of it, or its longest slice in builds that make it a slice at a time
    commit_cpu: float  # StateStore.commit: on the saver thread in the exporter
    commit_wall: float
    flush_cpu: float  # StateStore.flush when the WAL is due (a thread of its own), if any
    flush_wall: float
    streams: int  # streams in the checkpoint (their running state rewritten)
    slots: int  # part slots written
    payload: int  # bytes of states and slots handed to the store
    written: int  # bytes the process wrote (write() calls: WAL pages, WAL checkpoints)

    @property
    def cost(self) -> float:
        return self.make_cpu + self.commit_cpu + self.flush_cpu

    @property
    def share(self) -> float:
        """Saving's share of the CPU of ingesting and saving over this interval."""
        return self.cost / (self.cost + self.ingest_cpu)


def written_bytes() -> int:
    """Bytes this process has passed to write() (`wchar`), all threads."""
    with open("/proc/self/io") as handle:
        for line in handle:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def payload(changes: Changes) -> tuple[int, int]:
    """(bytes of running states and part slots, part slots) of a checkpoint."""
    slots = [data for part in changes.parts for data in part.slots.values()]
    return sum(map(len, changes.streams.values())) + sum(map(len, slots)), len(slots)


def take(store: StateStore, pipeline: Pipeline, positions: dict[str, Any],
         records: int = 0, ingest: tuple[float, float] = (0.0, 0.0)) -> Checkpoint:
    """A checkpoint made and committed as the exporter does, each part timed: made, then
    committed, then (builds with `StateStore.wal_due`) the WAL copied into the database when
    it is due."""
    wall, cpu = time.perf_counter(), time.thread_time()
    if hasattr(store, "checkpoint_in_slices"):  # builds that make it a slice at a time
        changes = _LOOP.run_until_complete(store.checkpoint_in_slices(pipeline, lambda: positions))
    else:
        changes = store.checkpoint(pipeline, positions)
    made_wall, made_cpu = time.perf_counter(), time.thread_time()
    held = getattr(store, "last_pause", made_wall - wall)  # the loop's longest wait
    before = written_bytes()
    if not store.commit(changes):
        raise RuntimeError("commit failed: see the log")
    done_wall, done_cpu = time.perf_counter(), time.thread_time()
    wal_due = getattr(store, "wal_due", None)  # builds that copy the WAL themselves
    if wal_due is not None and wal_due():
        store.flush()
    flushed_wall, flushed_cpu = time.perf_counter(), time.thread_time()
    size, slots = payload(changes)
    return Checkpoint(records, ingest[0], ingest[1], made_cpu - cpu, held,
                      done_cpu - made_cpu, done_wall - made_wall, flushed_cpu - done_cpu,
                      flushed_wall - done_wall, len(changes.streams), slots, size,
                      written_bytes() - before)


@dataclass
class Run:
    """Feeding a pipeline, checkpointing every `interval` s of ingestion wall time."""

    pipeline: Pipeline
    feed: Feed
    store: StateStore | None
    interval: float = 1.0
    stats: InputStats = field(default_factory=lambda: InputStats(INPUT, "file"))
    checkpoints: list[Checkpoint] = field(default_factory=list)
    ingest_cpu: float = 0.0  # totals, over every batch fed
    ingest_wall: float = 0.0
    records: int = 0

    def feed_batches(self, seconds: float | None = None, batches: int | None = None,
                     until: Any = None, only: list[int] | None = None) -> None:
        """Feed for `seconds` of ingestion wall time, or `batches`, or until `until()`."""
        since_cpu = since_wall = 0.0
        since_records = fed = 0
        spent = 0.0
        while True:
            if seconds is not None and spent >= seconds:
                break
            if batches is not None and fed >= batches:
                break
            if until is not None and until():
                break
            lines = self.feed.next_batch(only)
            wall, cpu = time.perf_counter(), time.thread_time()
            self.pipeline.ingest_lines(lines, self.stats)
            took_cpu, took_wall = time.thread_time() - cpu, time.perf_counter() - wall
            fed += 1
            spent += took_wall
            self.ingest_cpu += took_cpu
            self.ingest_wall += took_wall
            self.records += len(lines)
            since_cpu, since_wall, since_records = (since_cpu + took_cpu,
                                                    since_wall + took_wall,
                                                    since_records + len(lines))
            if self.store is not None and since_wall >= self.interval:
                self.checkpoints.append(take(self.store, self.pipeline, self.feed.positions(),
                                             since_records, (since_cpu, since_wall)))
                since_cpu = since_wall = 0.0
                since_records = 0


def all_ready(pipeline: Pipeline) -> bool:
    return all(d.baseline_ready and not d.calibrating
               for s in pipeline.streams if s.detectors is not None
               for d in s.detectors.detectors.values())


def still_learning(pipeline: Pipeline) -> list[int]:
    """Indexes of the streams with a baseline still short of records (neither ready nor
    being calibrated); a Bernoulli baseline may need up to 3x `baseline_size` records."""
    return sorted(
        int(s.labels[-1][2:]) for s in pipeline.streams if s.detectors is not None
        and any(not (d.baseline_ready or d.calibrating) for d in s.detectors.detectors.values())
    )


def learn_all(run: Run, pipeline: Pipeline, only: list[int] | None = None) -> None:
    """Feed the streams still learning (of `only`) until every baseline is complete, then
    wait for the thresholds being simulated."""
    while True:
        pending = still_learning(pipeline)
        if only is not None:
            pending = sorted(set(pending) & set(only))
        if not pending:
            break
        run.feed_batches(batches=10, only=pending)
    pipeline.settle(wait=True)
    if not all_ready(pipeline):
        raise RuntimeError("a stream is still not ready after its baselines completed")


@dataclass
class StoreInfo:
    """A state store as it lies on disk."""

    file: int  # state.db
    wal: int  # state.db-wal
    live: int  # pages in use (not on the free list) x page size
    free: int  # free pages x page size: space a DELETE gave back to the file, not the disk
    streams: int  # rows
    parts: int  # rows
    data: int  # bytes of states and slots in the rows
    digest: str  # of every row (streams and parts), to compare two stores' contents

    @property
    def on_disk(self) -> int:
        return self.file + self.wal


def store_info(path: Path) -> StoreInfo:
    """Read through a second connection (WAL mode: the exporter's stays open meanwhile)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages, free, size = (db.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        digest = hashlib.sha256()
        streams = parts = data = 0
        for key, state in db.execute("SELECT stream, state FROM streams ORDER BY stream"):
            digest.update(key.encode() + b"\0" + state)
            streams, data = streams + 1, data + len(state)
        for key, part, slot, blob in db.execute("SELECT * FROM parts ORDER BY 1, 2, 3"):
            digest.update(f"{key}\0{part}\0{slot}\0".encode() + blob)
            parts, data = parts + 1, data + len(blob)
    finally:
        db.close()
    wal = Path(f"{path}-wal")
    return StoreInfo(path.stat().st_size, wal.stat().st_size if wal.exists() else 0,
                     (pages - free) * size, free * size, streams, parts, data,
                     digest.hexdigest()[:12])


def whole_copy(pipeline: Pipeline, directory: Path) -> tuple[StoreInfo, Checkpoint]:
    """`pipeline`'s state written whole into a new store: what a store of exactly these
    streams holds, to compare an incrementally kept one with."""
    store = StateStore(directory)
    store.open(pipeline)
    checkpoint = take(store, pipeline, {})
    store.close()
    return store_info(store.path), checkpoint


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def kib(n: float) -> str:
    return f"{n / 2**10:,.1f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def machine() -> str:
    load = os.getloadavg()
    return (f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
            f"at the start (shared machine)")
