"""A worker process: `python -m exporter.workers.child`, started by the supervisor.

It owns the detectors, totals and evidence of the streams the supervisor sends it, and
answers requests one at a time, in order, over stdin/stdout (exporter.workers.protocol):
a request is `(id, kind, args)`, a reply `(id, ok, value)`. In order matters: a snapshot
requested after a batch includes that batch, which is what makes a checkpoint's file
positions and detector state describe the same moment.

It ignores SIGINT and SIGTERM (a terminal's Ctrl-C reaches the whole process group): the
supervisor decides when it stops, and it stops on its own when stdin closes, so it never
outlives a supervisor that was killed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from exporter.inputs.stats import InputStats
from exporter.metrics.exposition import Dialect
from exporter.metrics.families import StreamRenderer
from exporter.streams.checkpoint import Checkpointer
from exporter.streams.pipeline import Pipeline, RoutedItem
from exporter.streams.state import restore_streams
from exporter.streams.store import Changes
from exporter.streams.view import streams_view
from exporter.workers.protocol import READY, read_blocking, write_blocking

log = logging.getLogger(__name__)


class Worker:
    """The request handlers of one worker process, over its own Pipeline."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.renderer = StreamRenderer(pipeline.streams)
        self.stats = InputStats(name="worker", kind="worker")
        self.checkpointer = Checkpointer()  # this worker's streams: what changed since
        self.handlers: dict[str, Callable[..., Any]] = {
            "ingest": self.ingest,
            "render": self.render,
            "snapshot": self.snapshot,
            "forget": self.checkpointer.forget,
            "restore": self.restore,
            "streams": self.streams,
            "reset": self.reset,
            "settle": self.settle,
        }

    def ingest(self, fmt: str | None, items: list[RoutedItem]) -> dict[str, Any]:
        before = Counter(self.pipeline.rejections)
        result = self.pipeline.ingest_routed(items, self.stats, fmt)
        rejected = Counter(self.pipeline.rejections)
        rejected.subtract(before)
        return {
            "accepted": result.accepted,
            "rejected": result.rejected,
            "errors": result.errors,  # RecordErrors, pickled as they are
            "reasons": {reason: n for reason, n in rejected.items() if n},
            "finished_at": time.time(),
        }

    def render(self, dialect: Dialect) -> dict[str, Any]:
        measurer = self.pipeline.measurer
        return {
            "chunks": self.renderer.render(dialect),
            "processing_seconds": self.pipeline.processing_seconds,
            "tokenizers": measurer.tokens.loaded_sources(),
        }

    def snapshot(self) -> Changes:
        """What changed in this worker's streams since its last snapshot (the supervisor
        adds the positions and commits; if that fails it sends `forget`)."""
        return self.checkpointer.changes(list(self.pipeline.streams), {}, {})

    def restore(self, entries: list[dict[str, Any]]) -> tuple[int, int]:
        return restore_streams(self.pipeline, entries)

    def streams(self, with_evidence: bool) -> list[dict[str, Any]]:
        return streams_view(self.pipeline.streams, with_evidence)

    def settle(self) -> None:
        """The supervisor's periodic tick: finished calibrations of quiet streams (see
        `Exporter._settle_loop`)."""
        self.pipeline.settle(wait=False)

    def reset(self, match: dict[str, str], signals: tuple[str, ...]) -> list[list[str]]:
        return [list(labels) for labels in self.pipeline.streams.reset_matching(match, signals)]

    def handle(self, request: tuple[int, str, tuple[Any, ...]]) -> tuple[int, bool, Any]:
        request_id, kind, args = request
        try:
            return request_id, True, self.handlers[kind](*args)
        except Exception as exc:  # answer, never die: the supervisor reports it
            log.exception("worker request %s failed", kind)
            return request_id, False, f"{type(exc).__name__}: {exc}"


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """Answer requests until stdin closes or a `stop` request; the first message is the
    Config (a frozen dataclass) this worker's Pipeline is built from, the first reply says
    the worker is ready."""
    ok, config = read_blocking(requests)
    if not ok:
        return
    # Thresholds are simulated on a thread, so a scrape is answered while one runs.
    calibration = ThreadPoolExecutor(1, "calibration")
    worker = Worker(Pipeline(config, calibration=calibration))
    worker.pipeline.measurer.tokens.load_in_background()  # see TokenCounter
    write_blocking(replies, (READY, True, os.getpid()))  # the supervisor waits for this
    try:
        while True:
            ok, request = read_blocking(requests)
            if not ok or request[1] == "stop":
                return
            write_blocking(replies, worker.handle(request))
    finally:  # the final checkpoint has waited for what it needed; the rest is moot
        calibration.shutdown(wait=False, cancel_futures=True)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    level = os.environ.get("LLM_EXPORTER_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO), stream=sys.stderr,
        format=f"ts=%(asctime)s level=%(levelname)s logger=%(name)s worker={os.getpid()} "
        "msg=%(message)s",
    )
    # the protocol owns the real stdout; a stray print() must not corrupt a frame
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
