"""Wiring: config -> inputs -> pipeline -> collector, and the lifetime of background tasks.

`Exporter` owns every long-lived object of a running exporter; the web layer
and the CLI only hold a reference to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from exporter.config import Config
from exporter.inputs.file import FileInput
from exporter.inputs.http import HttpPushInput
from exporter.inputs.stats import InputStats
from exporter.metrics.collector import ExporterCollector
from exporter.metrics.exposition import Dialect, StreamChunks
from exporter.records import RejectedRecord
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore
from exporter.streams.store import Changes
from exporter.streams.view import streams_view
from exporter.workers.pool import WorkerFailed, WorkerPool, shard_of
from exporter.workers.router import ShardedIngest

log = logging.getLogger(__name__)
BackgroundTask = Callable[[], Awaitable[None]]
SETTLE_INTERVAL = 1.0  # seconds between two looks at finished calibrations
COMMIT_ON_LOOP_BYTES = 256 * 1024  # a commit this small is cheaper on the loop (see below)
# Checkpoints come as often as they cost at most this share of the time (more often for few
# streams, so a crash re-reads less), but at least every `checkpoint_interval` and at most
# every SAVE_MIN_GAP seconds.
SAVE_SHARE = 0.02
SAVE_MIN_GAP = 0.02
RecordSink = Callable[[list[Any]], None]  # decoded JSON values, each one record (any shape)
SourceRun = Callable[[RecordSink], Awaitable[None]]  # a source: runs, feeding the sink


class Exporter:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        # workers > 1: this process supervises; worker processes own the streams' state
        self.pool = WorkerPool(config) if config.workers > 1 else None
        # thresholds are simulated on a thread (numpy lets go of the GIL), not on the loop
        self.calibration = ThreadPoolExecutor(1, "calibration") if self.pool is None else None
        self.pipeline = Pipeline(
            config, clock=clock, detect=self.pool is None, calibration=self.calibration
        )
        self.sharded = ShardedIngest(self.pipeline, self.pool) if self.pool else None
        self.input_stats: list[InputStats] = []
        self._saved_entries: list[dict[str, Any]] = []
        self.file_inputs: list[FileInput] = []
        self.http_input: HttpPushInput | None = None
        for spec in config.file_inputs:
            stats = self._stats(spec.name, "file")
            self.file_inputs.append(
                FileInput(
                    spec,
                    on_lines=self._handler(stats, spec.format, decode=True),
                    on_oversize=self._oversize_handler(stats, spec.max_line_bytes),
                    stats=stats,
                    on_truncation=self._checkpoint_now,
                    throttle=self.pool.capacity if self.pool is not None else None,
                    between_passes=self.checkpoint_if_due,
                )
            )
        for spec in config.http_inputs:
            self.http_input = HttpPushInput(
                spec, self.pipeline, self._stats(spec.name, "http"), self.sharded
            )
        self.state = StateStore(config.state_dir) if config.state_dir else None
        self.collector = ExporterCollector(
            self.pipeline, self.input_stats, state=self.state, file_inputs=self.file_inputs
        )
        self.background: list[BackgroundTask] = [f.run for f in self.file_inputs]
        # Checkpoints are made on the loop (between two batches: consistent) and committed
        # here, one at a time, in order; the WAL is copied into the database here too.
        self.saver = ThreadPoolExecutor(1, "state") if self.state is not None else None
        self._saving = asyncio.Lock()
        self._next_save = 0.0  # time.monotonic() of the next checkpoint due
        self._gap = SAVE_MIN_GAP
        if self.state is not None:
            positions, self._saved_entries = self.state.open(self.pipeline)
            if self.pool is None:
                self.state.restore(self.pipeline, self._saved_entries)
                self._saved_entries = []  # (with workers: handed to them by `start`)
            for file_input in self.file_inputs:
                file_input.restore(positions.get(_position_key(file_input), []))
            self.background.append(self._checkpoint_loop)
        self.background.append(self._settle_loop)
        self._tasks: list[asyncio.Task[None]] = []
        self._checkpoints: set[asyncio.Task[bool]] = set()
        self.ready = False

    def _stats(self, name: str, kind: str) -> InputStats:
        stats = InputStats(name=name, kind=kind)
        self.input_stats.append(stats)
        return stats

    def add_source(self, name: str, kind: str, run: SourceRun) -> None:
        """A record source beside the configured inputs, e.g. the demo's traffic generator.
        It is counted as an input of its own (`name` and `kind` label its self-metrics) and
        run from `start()` like the file tailers, restarted if it fails; `run` is handed the
        sink its records go to (the pipeline, or the worker processes). Call before `start()`."""
        sink = self._handler(self._stats(name, kind), None, decode=False)
        self.background.append(lambda: run(sink))

    def _handler(
        self, stats: InputStats, fmt: str | None, decode: bool
    ) -> Callable[[list[Any]], None]:
        """Where a source's records go: lines (`decode`) or decoded JSON values."""
        sharded = self.sharded
        if sharded is not None:
            return lambda items: sharded.submit(items, stats, fmt, decode)
        ingest = self.pipeline.ingest_lines if decode else self.pipeline.ingest_values

        def handle(items: list[Any]) -> None:
            ingest(items, stats, fmt)

        return handle

    def _oversize_handler(self, stats: InputStats, limit: int) -> Callable[[int], None]:
        def handle(count: int) -> None:
            error = RejectedRecord("too_large", f"line longer than max_line_bytes={limit}")
            self.pipeline.reject(stats, error, count)

        return handle

    async def start(self) -> None:
        if self.pool is None:
            self.pipeline.measurer.tokens.load_in_background()
        else:  # the worker processes count tokens, and load the encoding themselves
            await self.pool.start()
            await self._restore_shards()
            self.collector.stream_source = self._worker_streams
        for run in self.background:
            self._tasks.append(asyncio.create_task(_supervised(run)))
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self.http_input is not None:
            self.http_input.accepting = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.sharded is not None:
            await self.sharded.drain()
        if self._checkpoints:  # truncations' saves first: they were taken earlier
            await asyncio.gather(*self._checkpoints, return_exceptions=True)
        if self.pool is None or not self.pool.failed.is_set():
            await self.checkpoint_async()  # not with a dead worker: its streams are gone
        if self.saver is not None:
            self.saver.shutdown(wait=True)
        if self.state is not None:
            self.state.close()
        for file_input in self.file_inputs:
            file_input.close()
        if self.pool is not None:
            await self.pool.stop()
        if self.calibration is not None:
            self.calibration.shutdown(wait=False, cancel_futures=True)

    async def failed(self) -> None:
        """Returns only if a worker process dies (see `failed_reason`)."""
        if self.pool is None:
            await asyncio.Event().wait()
        assert self.pool is not None
        await self.pool.failed.wait()

    @property
    def failed_reason(self) -> str | None:
        return self.pool.failure if self.pool is not None else None

    def _positions(self) -> dict[str, list[dict[str, Any]]]:
        return {_position_key(f): f.checkpoint() for f in self.file_inputs}

    async def _changes(self) -> Changes | None:
        """A checkpoint: taken between polls, so every position in it is the end of a
        line whose record has been processed, and the streams' state includes it."""
        assert self.state is not None
        if self.pool is None:
            # a slice of streams at a time: scrapes are served in between (times itself)
            return await self.state.checkpoint_in_slices(self.pipeline, self._positions)
        # Positions now; each worker answers the snapshot after every batch sent before it
        # (requests are answered in order), so the state covers all lines up to them.
        positions = self._positions()
        # sent now, before any other task can hand the workers more lines
        asked = [self.pool.request(index, "snapshot") for index in range(self.pool.size)]
        parts = await asyncio.gather(*asked, return_exceptions=True)
        failed = [part for part in parts if isinstance(part, BaseException)]
        if failed:
            self.state.save_failures += 1
            log.error("cannot save detector state: %s", failed[0])
            return None
        return _merged(parts, self.state.checkpoint(self.pipeline, positions))

    async def checkpoint_async(self) -> bool:
        """Take a checkpoint (on the loop) and commit it: a small one at once, on the loop;
        a large one on the saver thread, so the loop does not wait for it (but the thread
        waits for the GIL at each step of SQLite while the loop is busy: a small commit
        would take far longer there than it costs)."""
        if self.state is None or self.saver is None:
            return False
        async with self._saving:  # in the order they are made
            try:
                changes = await self._changes()
            except Exception:  # a bug in making one must cost that checkpoint, not the loop
                log.exception("cannot make a state checkpoint")
                self.state.failed_to_make()
                return False
            if changes is None:
                return False
            if self.state.unchanged(changes):
                return True
            if changes.size <= COMMIT_ON_LOOP_BYTES:
                saved = self.state.commit_and_flush(changes)  # about a millisecond
            else:
                loop = asyncio.get_running_loop()
                saved = await loop.run_in_executor(self.saver, self.state.commit_and_flush,
                                                   changes)
        if not saved and self.pool is not None:  # the workers' memory of what is saved
            with contextlib.suppress(WorkerFailed):
                await self.pool.broadcast("forget")
        return saved

    def _checkpoint_task(self) -> asyncio.Task[bool]:
        """A checkpoint that runs to its end: once made, the checkpointer counts it as saved,
        so it must be committed even if whoever started it is cancelled (a shutdown).
        `stop` waits for these before the last one."""
        task = asyncio.ensure_future(self.checkpoint_async())
        self._checkpoints.add(task)
        task.add_done_callback(self._checkpoints.discard)
        return task

    def _checkpoint_now(self) -> None:
        """After a truncation: the new positions are saved at once."""
        self._checkpoint_task()

    async def checkpoint_if_due(self) -> None:
        """Start a checkpoint if one is due: after each read pass of the file inputs, and
        from a ticker (for push inputs and quiet times). Checkpoints come as often as they
        cost at most SAVE_SHARE of the time, and at least every `checkpoint_interval`."""
        if self.state is None or time.monotonic() < self._next_save:
            return
        self._next_save = math.inf  # until this one is done (`_scheduled`)
        task = self._checkpoint_task()
        task.add_done_callback(self._scheduled)
        # a file input's next pass waits for it: what a crash re-reads stays small even
        # while a large commit runs on the saver thread
        await asyncio.shield(task)

    def _scheduled(self, _: asyncio.Task[bool]) -> None:
        assert self.state is not None
        cost = self.state.last_cost  # CPU seconds: making it and committing it
        # a one-off (a whole checkpoint after a start, a baseline written once learned)
        # lengthens the gap by at most half: only a cost that lasts reaches the cap
        self._gap = min(self.config.checkpoint_interval, 1.5 * self._gap,
                        max(SAVE_MIN_GAP, cost / SAVE_SHARE))
        self._next_save = time.monotonic() + self._gap
        log.debug("checkpoint took %.1f ms of CPU; the next in %.2f s", 1000 * cost, self._gap)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_MIN_GAP)
            await self.checkpoint_if_due()

    async def _settle_loop(self) -> None:
        """Thresholds are simulated off-thread; a detector takes the result in with its
        stream's next records. This tick, on the loop that ingests, does it for a stream
        that went quiet, so it still turns ready within SETTLE_INTERVAL. Scrapes and views
        only read: they never do it."""
        while True:
            await asyncio.sleep(SETTLE_INTERVAL)
            if self.pool is None:
                self.pipeline.settle(wait=False)
            elif self.pool.failure is None:
                with contextlib.suppress(WorkerFailed):  # `serve` sees the failure and stops
                    await self.pool.broadcast("settle")

    # --- with worker processes: what the web layer asks of the streams ------------------
    async def _restore_shards(self) -> None:
        """Hand each worker the saved state of the streams it owns."""
        assert self.pool is not None
        if self.state is None:
            return
        by_shard: dict[int, list[dict[str, Any]]] = {}
        for entry in self._saved_entries:
            try:
                labels = tuple(entry["labels"])
                key = self.pipeline.streams.get(labels).labels
            except (KeyError, TypeError):
                self.state.load_failures += 1
                continue
            if key != labels:  # beyond a lowered max_streams: its state has no stream now
                log.warning("not restoring stream %s: over max_streams", labels)
                continue
            by_shard.setdefault(shard_of(key, self.pool.size), []).append(entry)
        try:
            answers = await asyncio.gather(
                *(self.pool.call(shard, "restore", entries) for shard, entries in by_shard.items())
            )
        except WorkerFailed:
            return  # the pool has failed; `serve` sees it and stops
        self.state.load_failures += sum(failures for _, failures in answers)
        if answers:
            log.info("restored detector state of %d stream(s) into %d workers",
                     sum(restored for restored, _ in answers), self.pool.size)

    async def _worker_streams(self, dialect: Dialect) -> list[StreamChunks]:
        assert self.pool is not None
        answers = await self.pool.broadcast("render", dialect)
        self.collector.worker_status = [
            {k: v for k, v in answer.items() if k != "chunks"} for answer in answers
        ]
        return [answer["chunks"] for answer in answers]

    async def stream_views(self, with_evidence: bool) -> list[dict[str, Any]]:
        if self.pool is None:
            return streams_view(self.pipeline.streams, with_evidence)
        parts = await self.pool.broadcast("streams", with_evidence)
        return [view for part in parts for view in part]

    async def reset_baselines(
        self, match: dict[str, str], signals: tuple[str, ...]
    ) -> list[tuple[str, ...]]:
        """Reset the matching streams' baselines; their label values."""
        if self.pool is None:
            return self.pipeline.streams.reset_matching(match, signals)
        parts = await self.pool.broadcast("reset", match, signals)
        return [tuple(labels) for part in parts for labels in part]


def _merged(parts: list[Changes], supervisor: Changes) -> Changes:
    """The workers' changes as one checkpoint with the supervisor's positions and settings
    (each worker owns its streams; together they are the whole state when all say so)."""
    merged = supervisor
    merged.replace_all = all(part.replace_all for part in parts)
    for part in parts:
        merged.streams.update(part.streams)
        merged.parts.extend(part.parts)
        merged.deleted.extend(part.deleted)
    return merged


def _position_key(file_input: FileInput) -> str:
    """Positions belong to the globs, not to the input's place in the list: adding an input
    above another must not hand it the other's positions."""
    return "\n".join(file_input.config.paths)


async def _supervised(run: BackgroundTask) -> None:
    """Restart a background loop after an unexpected error instead of silently losing the input."""
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task failed; restarting in 1s")
            await asyncio.sleep(1.0)
