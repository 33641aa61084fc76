"""The state side of owning Kafka partitions: restores on assignment, checkpoints while
running and on revocation, off the event loop where they wait on the brokers.

Both wait on the network (a transaction's commit, the committed offsets, a changelog read) and
the brokers may be gone for minutes: they run on a thread of their own, one at a time, so
ingestion, scrapes and readiness go on meanwhile. What changes the streams stays on the
event loop's thread: a checkpoint is *made* there (between two batches: one moment), and
restored state is put into the pipeline there, when the thread has read it.

A revocation cannot wait for the loop: librdkafka asks from inside a poll, and the partitions
leave when it returns. So it finishes what the thread is doing, then checkpoints at once, on
the loop (the brokers are there: a rebalance needs them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Consumer, TopicPartition

from exporter.streams.changelog import Changelog, ChangelogError, Restored
from exporter.streams.checkpoint import Checkpointer, saved_streams, stream_key
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import restore_streams
from exporter.streams.table import StreamState

log = logging.getLogger(__name__)
COMMITTED_TIMEOUT = 60.0
RESTORE_RETRY = 2.0  # seconds between two tries to restore partitions out of reach
REVOKE_WAIT = 5.0  # seconds a revocation waits for a checkpoint being committed
STUCK_AFTER = 30.0  # seconds after which a commit is given up and its producer replaced
T = TypeVar("T")


def _on_a_thread(work: Callable[..., T], *args: Any) -> Future[T]:
    """Run `work` on a daemon thread of its own: a call stuck in librdkafka past its
    timeout (see `Changelog.renew`) must not keep the process from exiting."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(work(*args))
        except BaseException as exc:  # handed to whoever takes the result
            future.set_exception(exc)

    threading.Thread(target=run, name="kafka-state", daemon=True).start()
    return future
Partition = tuple[str, int]


def home(stream: StreamState) -> str | None:
    """The partition a stream's records come from (its first), `topic/partition`."""
    return next(iter(stream.positions), None)


def source(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


@dataclass
class _Reading:
    """A restore on the thread: the partitions (with the assignment each belongs to)."""

    future: Future[tuple[list[TopicPartition], Restored]]
    partitions: dict[Partition, int]
    started: float


@dataclass
class _Saving:
    future: Future[None]
    offsets: list[TopicPartition]
    started: float = field(default_factory=time.monotonic)


class Handoff:
    def __init__(self, pipeline: Pipeline, changelog: Changelog, consumer: Consumer,
                 interval: float, on_fatal: Callable[[str], None]) -> None:
        self.pipeline = pipeline
        self.changelog = changelog
        self.consumer = consumer
        self.interval = interval
        self.on_fatal = on_fatal
        self.checkpointer = Checkpointer()
        self._saving: _Saving | None = None
        self._reading: _Reading | None = None
        self._next_save = 0.0
        self._retry_at = 0.0
        self._assignments = 0
        self.waiting: dict[Partition, int] = {}  # assigned, paused, not restored yet
        self.committed: dict[Partition, int] = {}  # offsets in the last checkpoint
        self.problem: str | None = None
        self.restored_streams = 0
        self.restore_failures = 0
        self.on_restored: Callable[[list[Partition], dict[Partition, int]], None] = \
            lambda partitions, offsets: None

    # --- on the loop, between two batches ---------------------------------------------
    def tick(self, offsets: dict[Partition, int]) -> None:
        """Take in what the thread finished; start a restore or a checkpoint if due."""
        if self._saving is not None and self._saving.future.done():
            self._saved(self._saving)
        elif self._saving is not None and time.monotonic() - self._saving.started > STUCK_AFTER:
            log.error("a checkpoint has been committing for %.0f s; giving it up (a new "
                      "producer takes over, the next checkpoint saves every stream)",
                      time.monotonic() - self._saving.started)
            self._saving = None
            self.changelog.renew()
            self.checkpointer.forget()
        if self._reading is not None and self._reading.future.done():
            self._restored(self._reading)
        if self.waiting and self._reading is None and time.monotonic() >= self._retry_at:
            self._read()
        if self._saving is None and time.monotonic() >= self._next_save:
            self._save(offsets, wait=False)

    def assigned(self, partitions: list[Partition]) -> None:
        self._assignments += 1
        for partition in partitions:
            self.waiting[partition] = self._assignments

    def revoked(self, gone: set[Partition], offsets: dict[Partition, int]) -> None:
        """Save everything now (the next owner starts from here), then let them go. A
        checkpoint still committing after REVOKE_WAIT (the brokers are slow to settle a
        transaction) is not waited for: the next owner resumes from the last one committed,
        which loses nothing (it reads again what came after)."""
        if not self._finish(REVOKE_WAIT):
            log.warning("a checkpoint is still being committed; the streams of %s leave "
                        "without a newer one", sorted(gone))
        elif gone:
            self._save(offsets, wait=True)
        self.drop(gone)

    def drop(self, gone: set[Partition]) -> None:
        """Forget the streams of `gone` (revoked after a checkpoint, or lost)."""
        homes = {source(*p) for p in gone}
        leaving = [s for s in self.pipeline.streams if home(s) in homes]
        self.checkpointer.release(leaving)
        self.changelog.forget(stream_key(s.labels) for s in leaving)
        self.pipeline.streams.drop(s.labels for s in leaving)
        for partition in gone:
            self.waiting.pop(partition, None)
            self.committed.pop(partition, None)

    def close(self) -> None:
        self._finish(REVOKE_WAIT)

    # --- checkpoints --------------------------------------------------------------------
    def _save(self, offsets: dict[Partition, int], wait: bool) -> None:
        """Make a checkpoint of the changed streams and the offsets they include; commit it
        on the thread (`wait`: here, now)."""
        self._next_save = time.monotonic() + self.interval
        streams = [s for s in self.pipeline.streams if home(s) is not None]
        changes = self.checkpointer.changes(streams, {}, {})
        moved = [TopicPartition(t, p, o) for (t, p), o in offsets.items()
                 if (t, p) not in self.waiting and self.committed.get((t, p)) != o]
        if not (changes.streams or changes.parts or changes.deleted) and not moved:
            return
        homes = {stream_key(s.labels): home(s) or "" for s in streams}
        group = self.consumer.consumer_group_metadata()
        if wait:
            try:
                self.changelog.commit(changes, homes, moved, group)
                self._committed(moved)
            except ChangelogError as exc:
                self._failed(exc)
        else:
            future = _on_a_thread(self.changelog.commit, changes, homes, moved, group)
            self._saving = _Saving(future, moved)

    def _saved(self, saving: _Saving) -> None:
        self._saving = None
        try:
            saving.future.result()
        except ChangelogError as exc:
            self._failed(exc)
            return
        self._committed(saving.offsets)

    def _failed(self, exc: ChangelogError) -> None:
        """A checkpoint not committed: the next one saves every stream whole."""
        self.checkpointer.forget()
        log.error("%s", exc)
        if exc.fatal:
            self.on_fatal(f"kafka: {exc}")

    def _committed(self, offsets: list[TopicPartition]) -> None:
        self.committed.update(((tp.topic, tp.partition), tp.offset) for tp in offsets)

    # --- restores -------------------------------------------------------------------------
    def _read(self) -> None:
        partitions = dict(self.waiting)
        wanted = [TopicPartition(t, p) for t, p in sorted(partitions)]
        self._reading = _Reading(_on_a_thread(self._read_state, wanted), partitions,
                                 time.perf_counter())

    def _read_state(self, wanted: list[TopicPartition]
                    ) -> tuple[list[TopicPartition], Restored]:
        """(On the thread.) The partitions' committed offsets first, which waits until no
        transaction of a former owner is pending, so what the changelog then holds agrees
        with them; then their streams' state."""
        committed = self.consumer.committed(wanted, timeout=COMMITTED_TIMEOUT)
        return committed, self.changelog.restore({source(tp.topic, tp.partition)
                                                  for tp in wanted})

    def _restored(self, reading: _Reading) -> None:
        self._reading = None
        try:
            committed, restored = reading.future.result()
        except Exception as exc:  # out of reach: tried again, never re-learnt for this
            self.problem = f"cannot restore partitions {sorted(reading.partitions)}: {exc}"
            log.error("%s; retrying", self.problem)
            self._retry_at = time.monotonic() + RESTORE_RETRY
            return
        # still waiting, for the same assignment (not revoked, or revoked and assigned again)
        now = [p for p, n in reading.partitions.items() if self.waiting.get(p) == n]
        homes = {source(*p) for p in now}
        saved = restored.saved
        saved.streams = {k: v for k, v in saved.streams.items() if restored.homes[k] in homes}
        started = time.perf_counter()
        entries, failures = saved_streams(saved)
        done, unusable = restore_streams(self.pipeline, entries)
        # what was read is what the changelog holds: the next checkpoint writes what changes
        self.checkpointer.adopt([s for s in self.pipeline.streams if home(s) in homes])
        self.restored_streams += done
        self.restore_failures += failures + unusable + restored.other_settings
        if restored.other_settings:
            log.warning("%d stream(s) were saved with other detector settings; they re-learn",
                        restored.other_settings)
        offsets = {(tp.topic, tp.partition): tp.offset for tp in committed
                   if (tp.topic, tp.partition) in now and tp.offset >= 0}
        self.committed.update(offsets)
        for partition in now:
            del self.waiting[partition]
        self.problem = None
        log.info("restored %d stream(s) of %d partition(s) in %.2f s (%d changelog messages "
                 "holding %.1f MB of state read in %.2f s, restored in %.2f s)", done,
                 len(now), time.perf_counter() - reading.started, restored.messages,
                 restored.bytes / 1e6, restored.seconds, time.perf_counter() - started)
        self.on_restored(now, offsets)

    def _finish(self, timeout: float) -> bool:
        """Wait for the thread's work and take it in (a revocation, a stop); False if it
        is still running after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        for work, taken in ((self._saving, self._saved), (self._reading, self._restored)):
            if work is None:
                continue
            try:
                work.future.exception(max(0.0, deadline - time.monotonic()))  # waits
            except TimeoutError:
                return False
            taken(work)  # type: ignore[arg-type]
        return True

