"""Records through a pool of workers: the supervisor's half of the pipeline, then a batch
per worker, then the replies folded back into the input's counters.

The supervisor decodes and normalizes each record to learn its stream key (and rejects
what cannot be a record, counted as in one process); the worker re-decodes the same
bytes, which costs less than pickling the normalized record would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import orjson

from exporter.inputs.stats import InputStats
from exporter.records import RejectedRecord
from exporter.streams.pipeline import MAX_REPORTED_ERRORS, IngestResult, Pipeline, RoutedItem
from exporter.workers.pool import WorkerFailed, WorkerPool, shard_of

log = logging.getLogger(__name__)


class ShardedIngest:
    def __init__(self, pipeline: Pipeline, pool: WorkerPool) -> None:
        self.pipeline = pipeline  # built with detect=False: it admits streams, nothing more
        self.pool = pool
        self._sent: set[asyncio.Task[IngestResult]] = set()
        # stream key -> worker: keys are admitted streams, so bounded by max_streams
        self._shards: dict[tuple[str, ...], int] = {}

    def route(
        self, items: Iterable[Any], stats: InputStats, fmt: str | None, decode: bool
    ) -> tuple[dict[int, list[RoutedItem]], IngestResult]:
        """Batches per worker, and the result so far (what the supervisor rejected)."""
        result = IngestResult()
        batches: dict[int, list[RoutedItem]] = {}
        size = self.pool.size
        for position, item in enumerate(items):
            try:
                if decode:
                    parsed = self.pipeline.parse_line(item, stats)
                    if parsed is None:
                        continue
                    raw, value = parsed
                else:
                    value, raw = item, orjson.dumps(item)
                picks = self.pipeline.route_value(value, stats, fmt)
            except RejectedRecord as error:
                result.add_error(position, error)
                continue
            shards: dict[int, list[tuple[int, tuple[str, ...]]]] = {}
            for index, key in picks:  # an OTLP export's spans may belong to several workers
                shard = self._shards.get(key)
                if shard is None:
                    shard = self._shards[key] = shard_of(key, size)
                shards.setdefault(shard, []).append((index, key))
            for shard, taken in shards.items():
                batches.setdefault(shard, []).append((position, raw, taken))
        return batches, result

    async def ingest(
        self, items: Iterable[Any], stats: InputStats, fmt: str | None = None, decode: bool = True
    ) -> IngestResult:
        batches, result = self.route(items, stats, fmt, decode)
        replies = self._send(batches, fmt)
        for shard in replies:
            await self.pool.drained(shard)
        return await self._collect(replies, result, stats)

    def submit(
        self, items: list[Any], stats: InputStats, fmt: str | None, decode: bool = True
    ) -> None:
        """For sources that hand records over synchronously (the file tailer, an added
        source): route and send now (so a later checkpoint's snapshot request queues behind
        these records), collect the answers in the background. The tailer waits for
        `pool.capacity()` before each read pass. `decode`: lines, else decoded values."""
        batches, result = self.route(items, stats, fmt, decode)
        if batches:
            task = asyncio.ensure_future(self._collect(self._send(batches, fmt), result, stats))
            self._sent.add(task)
            task.add_done_callback(self._sent.discard)

    async def drain(self) -> None:
        """Wait for every batch sent so far to be answered."""
        if self._sent:
            await asyncio.gather(*list(self._sent), return_exceptions=True)

    def _send(
        self, batches: dict[int, list[RoutedItem]], fmt: str | None
    ) -> dict[int, asyncio.Future[Any]]:
        return {shard: self.pool.request(shard, "ingest", fmt, batch)
                for shard, batch in batches.items()}

    async def _collect(
        self, replies: dict[int, asyncio.Future[Any]], result: IngestResult, stats: InputStats
    ) -> IngestResult:
        """Fold the workers' answers into the result and the input's counters."""
        answers = await asyncio.gather(*replies.values(), return_exceptions=True)
        errors = list(result.errors)
        for reply in answers:
            if isinstance(reply, BaseException):
                if not isinstance(reply, WorkerFailed):
                    log.error("a batch sent to a worker failed: %r", reply)
                continue  # the pool has failed: the exporter is stopping
            result.accepted += reply["accepted"]
            result.rejected += reply["rejected"]
            stats.records += reply["accepted"]
            stats.rejected += reply["rejected"]
            self.pipeline.records += reply["accepted"]
            self.pipeline.rejections.update(reply["reasons"])
            errors.extend(reply["errors"])
            if reply["accepted"]:
                stats.last_record_timestamp = reply["finished_at"]
        result.errors = sorted(errors, key=lambda error: error.position)[:MAX_REPORTED_ERRORS]
        return result
