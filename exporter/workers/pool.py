"""The supervisor's side of the worker processes: start, ask, stop, notice a death.

Each worker is a child process on its own stdin/stdout pipes, driven from the event loop
(asyncio subprocess streams: writes never block the loop, replies are read by one task
per worker). Requests carry an id and are answered in order.

A worker that dies takes the state of its streams since the last checkpoint with it.
Carrying on would export a hole and checkpoint positions past records its streams never
saw, so the pool reports the death (`failed`) and the exporter exits non-zero without a
final checkpoint; restarted, it resumes from the last consistent checkpoint and reads
again what came after it (at-least-once, as after a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import zlib
from dataclasses import dataclass, field
from typing import Any

from exporter.config import Config
from exporter.workers import protocol

log = logging.getLogger(__name__)
MAX_IN_FLIGHT = 4  # batches queued per worker before inputs wait (bounds scrape delay too)
STOP_TIMEOUT_SECONDS = 10.0


class WorkerFailed(Exception):
    """A worker died or answered a request with an error."""


def shard_of(key: tuple[str, ...], workers: int) -> int:
    """The worker owning a stream: crc32 of its label values, the same in every process
    and run (never Python's salted `hash()`)."""
    return zlib.crc32("\x1f".join(key).encode("utf-8", "surrogatepass")) % workers


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process
    pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)  # by request id
    reader: asyncio.Task[None] | None = None


class WorkerPool:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.size = config.workers
        self._workers: list[_Worker] = []
        self._ids = itertools.count()
        self._progress = asyncio.Event()
        self.failed = asyncio.Event()
        self.failure: str | None = None
        self._stopping = False

    async def start(self) -> None:
        env = {**os.environ,
               "LLM_EXPORTER_LOG_LEVEL": logging.getLevelName(logging.getLogger().level)}
        for index in range(self.size):
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "exporter.workers.child",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            )
            assert process.stdin is not None
            process.stdin.write(protocol.encode(self.config))
            worker = _Worker(index, process)
            worker.pending[protocol.READY] = asyncio.get_running_loop().create_future()
            worker.reader = asyncio.create_task(self._read_replies(worker))
            self._workers.append(worker)
        # ready (and scrapes fast) only once every worker has imported and built its pipeline
        await asyncio.gather(*(w.pending[protocol.READY] for w in self._workers),
                             return_exceptions=True)
        log.info("started %d worker processes: %s", self.size,
                 ", ".join(str(w.process.pid) for w in self._workers))

    async def _read_replies(self, worker: _Worker) -> None:
        assert worker.process.stdout is not None
        try:
            while True:
                request_id, ok, value = await protocol.read(worker.process.stdout)
                future = worker.pending.pop(request_id, None)
                self._progress.set()
                if future is not None and not future.done():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(WorkerFailed(f"worker {worker.index}: {value}"))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        code = await worker.process.wait()
        if not self._stopping:
            self._fail(f"worker {worker.index} (pid {worker.process.pid}) exited with {code}")
        for future in worker.pending.values():
            if not future.done():
                future.set_exception(WorkerFailed(self.failure or "worker stopped"))
        worker.pending.clear()

    def _fail(self, why: str) -> None:
        if self.failure is None:
            self.failure = why
            log.error("%s; its streams' state since the last checkpoint is lost, so the "
                      "exporter stops (it resumes from that checkpoint when restarted)", why)
        self.failed.set()
        self._progress.set()

    def request(self, index: int, kind: str, *args: Any) -> asyncio.Future[Any]:
        """Send a request to worker `index` now (the frame is queued on its pipe before this
        returns, so requests reach a worker in the order they were made); the future is
        its reply, or WorkerFailed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.failure is not None:
            future.set_exception(WorkerFailed(self.failure))
            return future
        worker = self._workers[index]
        request_id = next(self._ids)
        stdin = worker.process.stdin
        assert stdin is not None
        try:
            stdin.write(protocol.encode((request_id, kind, args)))
        except (ConnectionError, RuntimeError) as exc:
            future.set_exception(WorkerFailed(f"worker {index}: {exc}"))
            return future
        worker.pending[request_id] = future
        return future

    async def call(self, index: int, kind: str, *args: Any) -> Any:
        """Ask worker `index` and wait for its reply (WorkerFailed if it cannot answer)."""
        future = self.request(index, kind, *args)
        await self.drained(index)
        return await future

    async def drained(self, index: int) -> None:
        """Wait until the pipe to worker `index` has room (asyncio's flow control)."""
        stdin = self._workers[index].process.stdin
        if stdin is not None and not stdin.is_closing():
            with contextlib.suppress(ConnectionError):
                await stdin.drain()

    async def broadcast(self, kind: str, *args: Any) -> list[Any]:
        return list(await asyncio.gather(*(self.call(w.index, kind, *args)
                                           for w in self._workers)))

    async def capacity(self) -> None:
        """Wait until every worker has room for another batch: inputs read no faster
        than the workers keep up, and a scrape queues behind little work."""
        while self.failure is None and any(len(w.pending) >= MAX_IN_FLIGHT for w in self._workers):
            self._progress.clear()
            await self._progress.wait()

    async def stop(self) -> None:
        self._stopping = True
        for worker in self._workers:
            stdin = worker.process.stdin
            if stdin is not None and not stdin.is_closing():
                with contextlib.suppress(ConnectionError, RuntimeError):
                    stdin.write(protocol.encode((next(self._ids), "stop", ())))
                    stdin.close()
        for worker in self._workers:
            try:
                await asyncio.wait_for(worker.process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning("worker %d did not stop in time; killing it", worker.index)
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()
                await worker.process.wait()
            if worker.reader is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.reader
        self._workers.clear()
