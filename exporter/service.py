"""Wiring: config -> inputs -> pipeline -> collector, and the lifetime of background tasks.

`Exporter` owns every long-lived object of a running exporter; the web layer
and the CLI only hold a reference to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from exporter.config import Config
from exporter.inputs.file import FileInput
from exporter.inputs.http import HttpPushInput
from exporter.inputs.stats import InputStats
from exporter.metrics import ExporterCollector, build_registry
from exporter.pipeline import Pipeline
from exporter.records import RejectedRecord
from exporter.state import StateStore

log = logging.getLogger(__name__)
BackgroundTask = Callable[[], Awaitable[None]]


class Exporter:
    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.pipeline = Pipeline(config, clock=clock)
        self.input_stats: list[InputStats] = []
        self.file_inputs: list[FileInput] = []
        self.http_input: HttpPushInput | None = None
        for spec in config.file_inputs:
            stats = self._stats(spec.name, "file")
            self.file_inputs.append(
                FileInput(
                    spec,
                    on_lines=self._line_handler(stats, spec.format),
                    on_oversize=self._oversize_handler(stats, spec.max_line_bytes),
                    stats=stats,
                    on_truncation=self.checkpoint,
                )
            )
        for spec in config.http_inputs:
            self.http_input = HttpPushInput(spec, self.pipeline, self._stats(spec.name, "http"))
        self.state = StateStore(config.state_dir) if config.state_dir else None
        self.collector = ExporterCollector(
            self.pipeline, self.input_stats, state=self.state, file_inputs=self.file_inputs
        )
        self.registry = build_registry(self.collector)
        self.background: list[BackgroundTask] = [f.run for f in self.file_inputs]
        if self.state is not None:
            self.state.load(self.pipeline)
            positions = self.state.load_positions()
            for file_input in self.file_inputs:
                file_input.restore(positions.get(_position_key(file_input), []))
            self.background.append(self._checkpoint_loop)
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False

    def _stats(self, name: str, kind: str) -> InputStats:
        stats = InputStats(name=name, kind=kind)
        self.input_stats.append(stats)
        return stats

    def _line_handler(self, stats: InputStats, fmt: str | None) -> Callable[[list[bytes]], None]:
        def handle(lines: list[bytes]) -> None:
            self.pipeline.ingest_lines(lines, stats, fmt)

        return handle

    def _oversize_handler(self, stats: InputStats, limit: int) -> Callable[[int], None]:
        def handle(count: int) -> None:
            error = RejectedRecord("too_large", f"line longer than max_line_bytes={limit}")
            self.pipeline.reject(stats, error, count)

        return handle

    async def start(self) -> None:
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
        self.checkpoint()
        for file_input in self.file_inputs:
            file_input.close()

    def checkpoint(self) -> bool:
        """Save positions and detector state together; runs between polls, so every
        position saved is the end of a line whose record has been processed."""
        if self.state is None:
            return False
        positions = {_position_key(f): f.checkpoint() for f in self.file_inputs}
        return self.state.save(self.pipeline, positions)

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.checkpoint_interval)
            self.checkpoint()


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
