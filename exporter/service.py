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
from exporter.inputs.kafka import KafkaInput
from exporter.inputs.otlp import OtlpReceiver
from exporter.inputs.stats import InputStats
from exporter.metrics.collector import ExporterCollector
from exporter.records import RejectedRecord
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore
from exporter.streams.store import Changes
from exporter.streams.view import streams_view

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
        # thresholds are simulated on a thread (numpy lets go of the GIL), not on the loop
        self.calibration = ThreadPoolExecutor(1, "calibration")
        self.pipeline = Pipeline(config, clock=clock, calibration=self.calibration)
        self.input_stats: list[InputStats] = []
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
                    between_passes=self.checkpoint_if_due,
                )
            )
        for spec in config.http_inputs:
            self.http_input = HttpPushInput(spec, self.pipeline, self._stats(spec.name, "http"))
        self.otlp: OtlpReceiver | None = None
        if config.otlp_input is not None:
            spec = config.otlp_input
            self.otlp = OtlpReceiver(spec, self.pipeline, self._stats(spec.name, "otlp"))
        self.kafka: KafkaInput | None = None
        if config.kafka_input is not None:  # this process owns its partitions' streams
            spec = config.kafka_input
            self.kafka = KafkaInput(spec, self.pipeline, self._stats(spec.name, "kafka"),
                                    config.checkpoint_interval, self.fail)
        self.state = StateStore(config.state_dir) if config.state_dir else None
        self.collector = ExporterCollector(
            self.pipeline, self.input_stats, state=self.state, file_inputs=self.file_inputs,
            kafka=self.kafka, otlp=self.otlp,
        )
        self.background: list[BackgroundTask] = [f.run for f in self.file_inputs]
        if self.otlp is not None:
            self.background.append(self.otlp.run)
        if self.kafka is not None:
            self.background.append(self.kafka.run)
        # Checkpoints are made on the loop (between two batches: consistent) and committed
        # here, one at a time, in order; the WAL is copied into the database here too.
        self.saver = ThreadPoolExecutor(1, "state") if self.state is not None else None
        self._saving = asyncio.Lock()
        self._next_save = 0.0  # time.monotonic() of the next checkpoint due
        self._gap = SAVE_MIN_GAP
        if self.state is not None:
            positions, saved_entries = self.state.open(self.pipeline)
            self.state.restore(self.pipeline, saved_entries)
            for file_input in self.file_inputs:
                file_input.restore(positions.get(_position_key(file_input), []))
            self.background.append(self._checkpoint_loop)
        self.background.append(self._settle_loop)
        self._tasks: list[asyncio.Task[None]] = []
        self._checkpoints: set[asyncio.Task[bool]] = set()
        self.ready = False
        self.failed_reason: str | None = None
        self._failed = asyncio.Event()

    def _stats(self, name: str, kind: str) -> InputStats:
        stats = InputStats(name=name, kind=kind)
        self.input_stats.append(stats)
        return stats

    def add_source(self, name: str, kind: str, run: SourceRun) -> None:
        """A record source beside the configured inputs, e.g. the demo's traffic generator.
        It is counted as an input of its own (`name` and `kind` label its self-metrics) and
        run from `start()` like the file tailers, restarted if it fails; `run` is handed the
        sink its records go to. Call before `start()`."""
        sink = self._handler(self._stats(name, kind), None, decode=False)
        self.background.append(lambda: run(sink))

    def _handler(
        self, stats: InputStats, fmt: str | None, decode: bool
    ) -> Callable[[list[Any]], None]:
        """Where a source's records go: lines (`decode`) or decoded JSON values."""
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
        self.pipeline.measurer.tokens.load_in_background()
        for run in self.background:
            self._tasks.append(asyncio.create_task(_supervised(run)))
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for push in (self.http_input, self.otlp):
            if push is not None:
                push.accepting = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._checkpoints:  # truncations' saves first: they were taken earlier
            await asyncio.gather(*self._checkpoints, return_exceptions=True)
        await self.checkpoint_async()
        if self.saver is not None:
            self.saver.shutdown(wait=True)
        if self.state is not None:
            self.state.close()
        for file_input in self.file_inputs:
            file_input.close()
        if self.kafka is not None:
            await self.kafka.close()
        self.calibration.shutdown(wait=False, cancel_futures=True)

    @property
    def not_ready(self) -> str | None:
        """Why `/-/ready` says no (None: ready)."""
        if not self.ready:
            return "starting" if self.failed_reason is None else "stopping"
        return self.kafka.problem if self.kafka is not None else None

    def fail(self, reason: str) -> None:
        """Stop the process, which exits non-zero, on a failure it cannot go on from (an
        input fenced off by a newer member of its group): its supervisor restarts it."""
        if self.failed_reason is None:
            self.failed_reason = reason
            self._failed.set()

    async def failed(self) -> None:
        """Returns only after `fail`."""
        await self._failed.wait()

    def _positions(self) -> dict[str, list[dict[str, Any]]]:
        return {_position_key(f): f.checkpoint() for f in self.file_inputs}

    async def _changes(self) -> Changes | None:
        """A checkpoint: taken between polls, so every position in it is the end of a
        line whose record has been processed, and the streams' state includes it."""
        assert self.state is not None
        # a slice of streams at a time: scrapes are served in between (times itself)
        return await self.state.checkpoint_in_slices(self.pipeline, self._positions)

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
            self.pipeline.settle(wait=False)

    async def stream_views(self, with_evidence: bool) -> list[dict[str, Any]]:
        return streams_view(self.pipeline.streams, with_evidence)

    async def reset_baselines(
        self, match: dict[str, str], signals: tuple[str, ...]
    ) -> list[tuple[str, ...]]:
        """Reset the matching streams' baselines; their label values."""
        return self.pipeline.streams.reset_matching(match, signals)


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
