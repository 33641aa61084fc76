"""The Kafka input: this process as one member of a consumer group, owning the streams of
the partitions it is assigned.

Records must be keyed by stream (the stream-label values) so that all of a stream is in
one partition; then partitions are the unit of ownership, and scale-out is Kafka's own:
more members, cooperative-sticky assignment, static membership. Everything runs on the
event loop's thread: the consumer is polled without blocking (`consume(timeout=0)`), and
the rebalance callbacks librdkafka calls from inside that poll see the streams between
two batches, never halfway through one.

Ownership, in the order it happens:
- assigned: the partitions' committed offsets are fetched first (which waits until no
  transaction of a former owner is pending), then their streams' state is read from the
  changelog (`exporter.streams.changelog`) and restored, before their first record;
- running: a checkpoint every `checkpoint_interval` is one transaction of the changed
  streams and the offsets they include;
- revoked: a checkpoint at once, then the streams and their series are dropped here;
- lost (this member was too slow and the group went on without it): dropped, unsaved.

Nothing downstream knows: the pipeline, the detectors and the metrics see streams come
and go. Each record's position (`topic/partition`, offset) goes with it to the pipeline, and
a stream skips what it already applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from exporter.config import KafkaInputConfig
from exporter.inputs.kafka_repartition import Repartitioner
from exporter.inputs.stats import InputStats
from exporter.records import RejectedRecord
from exporter.streams.changelog import Changelog, ChangelogError
from exporter.streams.checkpoint import Checkpointer, saved_streams, stream_key
from exporter.streams.pipeline import Pipeline, Position
from exporter.streams.state import restore_streams, settings_of
from exporter.streams.table import StreamState

log = logging.getLogger(__name__)
INSTANCE_ENV = "LLM_DRIFT_EXPORTER_INSTANCE_ID"  # group.instance.id, e.g. a pod's name
BATCH = 2000  # messages taken per poll
IDLE = 0.02  # seconds between polls while nothing arrives
COMMITTED_TIMEOUT = 60.0
RESTORE_RETRY = 2.0  # seconds between two tries to restore partitions out of reach
OFFSET_UNSET = -1001


def home(stream: StreamState) -> str | None:
    """The partition a stream's records come from (its first), `topic/partition`."""
    return next(iter(stream.positions), None)


def source(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


class KafkaInput:
    def __init__(self, config: KafkaInputConfig, pipeline: Pipeline, stats: InputStats,
                 checkpoint_interval: float, on_fatal: Callable[[str], None]) -> None:
        self.config = config
        self.pipeline = pipeline
        self.stats = stats
        self.checkpoint_interval = checkpoint_interval
        self.on_fatal = on_fatal
        self.instance_id = config.instance_id or os.environ.get(INSTANCE_ENV) or None
        member = self.instance_id or uuid.uuid4().hex[:12]
        settings: dict[str, Any] = {
            **config.properties,
            "bootstrap.servers": config.bootstrap_servers,
            "group.id": config.group_id,
            "client.id": config.client_id or f"llm-drift-exporter-{member}",
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,  # offsets go with the state (changelog.py)
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest" if config.start_at == "beginning" else "latest",
            "isolation.level": "read_committed",
            "session.timeout.ms": int(config.session_timeout * 1000),
            "heartbeat.interval.ms": int(config.session_timeout * 1000 / 4),
            "fetch.max.bytes": max(52_428_800, 2 * config.max_message_bytes),
            "error_cb": self._error,
            "logger": log,  # librdkafka's own log lines, through logging
        }
        if self.instance_id:
            settings["group.instance.id"] = self.instance_id
        self.consumer = Consumer(settings)
        self.changelog = Changelog(config, f"{config.group_id}-{member}", settings_of(pipeline))
        common = {**config.properties, "bootstrap.servers": config.bootstrap_servers,
                  "logger": log}
        self.repartitioner = Repartitioner(config, pipeline, member, common) \
            if config.repartition else None
        self.checkpointer = Checkpointer()
        self.assigned: set[tuple[str, int]] = set()
        self.next_offsets: dict[tuple[str, int], int] = {}  # after the last record applied
        self._committed: dict[tuple[str, int], int] = {}  # as in the last checkpoint
        self.started = False
        self.problem: str | None = "not connected to Kafka yet"  # readiness says why
        self.rebalances = 0
        self.restored_streams = 0
        self.restore_failures = 0
        # a handoff, as this member sees it: the checkpoint of a revocation; an assignment
        # from its start to its first record processed (committed offsets, changelog, restore)
        self.last_revocation_seconds = 0.0
        self.last_assignment_seconds = 0.0
        self._assigned_at: float | None = None  # an assignment still without a record
        self._unrestored: set[tuple[str, int]] = set()  # assigned, paused, to restore
        self._retry_at = 0.0
        self._next_save = 0.0

    # --- the loop ---------------------------------------------------------------------
    async def run(self) -> None:
        if not self.started:
            await self._start()
        while True:
            if self._unrestored and time.monotonic() >= self._retry_at:
                self._restore()
            if self.repartitioner is not None:
                self._forward(self.repartitioner)
            messages = self.consumer.consume(BATCH, timeout=0)
            if messages:
                self._ingest(messages)
            if time.monotonic() >= self._next_save:
                self.checkpoint()
            await asyncio.sleep(0 if messages else IDLE)

    async def _start(self) -> None:
        """Create the changelog topic if needed and join the group; retried until the
        brokers answer (readiness says why meanwhile)."""
        while True:
            try:
                partitions = self._input_partitions()
                self.changelog.start(partitions)
                if self.repartitioner is not None:
                    self.repartitioner.start(partitions)
                break
            except (ChangelogError, Exception) as exc:  # the brokers are not there yet
                if isinstance(exc, ChangelogError) and exc.fatal:
                    self.on_fatal(str(exc))
                    raise
                self.problem = f"cannot reach Kafka: {exc}"
                log.warning("%s; retrying", self.problem)
                await asyncio.sleep(2.0)
        topics = [self.config.repartition_topic] if self.repartitioner is not None \
            else list(self.config.topics)
        self.consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked,
                                on_lost=self._lost)
        self.started = True
        self.problem = None

    def _forward(self, repartitioner: Repartitioner) -> None:
        try:
            repartitioner.poll()
        except ChangelogError as exc:  # fatal: fenced off by a newer member
            self.on_fatal(str(exc))

    def _input_partitions(self) -> int:
        metadata = self.consumer.list_topics(timeout=10.0)
        counts = []
        for topic in self.config.topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                raise RuntimeError(f"topic {topic} not found")
            counts.append(len(found.partitions))
        return max(counts)

    def _ingest(self, messages: list[Message]) -> None:
        lines: list[bytes] = []
        positions: list[Position] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    self.stats.read_errors[error.name()] += 1
                    log.warning("kafka: %s", error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if (topic, partition) not in self.assigned:
                continue  # (revoked within this poll)
            self.next_offsets[(topic, partition)] = offset + 1
            value = message.value()
            self.stats.bytes_read += len(value or b"")
            if not value:
                self.pipeline.reject(self.stats, RejectedRecord("empty_body", "empty message"))
            elif len(value) > self.config.max_message_bytes:
                self.pipeline.reject(self.stats, RejectedRecord(
                    "too_large", f"message longer than max_message_bytes="
                                 f"{self.config.max_message_bytes}"))
            else:
                lines.append(value)
                positions.append((source(topic, partition), offset))
        self.problem = None
        if lines:
            self.pipeline.ingest_lines(lines, self.stats, self.config.format, positions)
        if self._assigned_at is not None and messages:
            self.last_assignment_seconds = time.perf_counter() - self._assigned_at
            self._assigned_at = None
            log.info("first records after the assignment processed %.2f s after it began",
                     self.last_assignment_seconds)

    # --- checkpoints ------------------------------------------------------------------
    def _owned(self) -> list[StreamState]:
        return [s for s in self.pipeline.streams if home(s) is not None]

    def checkpoint(self) -> bool:
        """Save the changed streams and the offsets they include, in one transaction."""
        self._next_save = time.monotonic() + self.checkpoint_interval
        streams = self._owned()
        changes = self.checkpointer.changes(streams, {}, {})
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.next_offsets.items()
                   if (t, p) in self.assigned and self._committed.get((t, p)) != o]
        if not (changes.streams or changes.parts or changes.deleted) and not offsets:
            return True
        homes = {stream_key(s.labels): home(s) or "" for s in streams}
        try:
            self.changelog.commit(changes, homes, offsets,
                                  self.consumer.consumer_group_metadata())
        except ChangelogError as exc:
            self.checkpointer.forget()  # the next one saves every stream whole
            log.error("%s", exc)
            if exc.fatal:
                self.on_fatal(f"kafka: {exc}")
            return False
        self._committed.update(((tp.topic, tp.partition), tp.offset) for tp in offsets)
        return True

    # --- rebalances (called by librdkafka from inside `consume`, on this thread) -------
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        new = {(tp.topic, tp.partition) for tp in partitions}
        self.assigned |= new
        if not new:
            return
        # assigned here and paused until their streams are restored: a restore that fails
        # (brokers unreachable) is tried again, their records wait (see `_restore`)
        consumer.incremental_assign(partitions)
        consumer.pause(partitions)
        self._unrestored |= new
        self._assigned_at = time.perf_counter()
        self._restore()

    def _restore(self) -> None:
        """Restore the streams of the partitions assigned but not restored yet, then let
        their records come. Their committed offsets are fetched first, which waits until no
        transaction of a former owner is pending: what the changelog holds and the offsets
        then agree."""
        waiting = sorted(self._unrestored)
        partitions = [TopicPartition(t, p) for t, p in waiting]
        started = time.perf_counter()
        try:
            committed = self.consumer.committed(partitions, timeout=COMMITTED_TIMEOUT)
            restored = self.changelog.restore({source(t, p) for t, p in waiting})
        except Exception as exc:  # out of reach: tried again, never re-learnt for this
            self.problem = f"cannot restore partitions {waiting}: {exc}"
            log.error("%s; retrying", self.problem)
            self._retry_at = time.monotonic() + RESTORE_RETRY
            return
        read = time.perf_counter()
        entries, failures = saved_streams(restored.saved)
        done, unusable = restore_streams(self.pipeline, entries)
        self.restored_streams += done
        self.restore_failures += failures + unusable + restored.other_settings
        if restored.other_settings:
            log.warning("%d stream(s) in %s were saved with other detector settings; "
                        "they re-learn", restored.other_settings, self.config.changelog)
        for tp in committed:  # where each resumes (what the lag counts from until it moves)
            if tp.offset >= 0:
                self.next_offsets[(tp.topic, tp.partition)] = tp.offset
                self._committed[(tp.topic, tp.partition)] = tp.offset
        self._unrestored.clear()
        self.problem = None
        self.consumer.resume(partitions)
        self.last_assignment_seconds = time.perf_counter() - (self._assigned_at or started)
        log.info("assigned %d partition(s); restored %d stream(s) in %.2f s (offsets %.2f s, "
                 "%.1f MB of changelog read in %.2f s, restored in %.2f s)", len(waiting), done,
                 time.perf_counter() - started, read - started - restored.seconds,
                 restored.bytes / 1e6, restored.seconds, time.perf_counter() - read)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        gone = {(tp.topic, tp.partition) for tp in partitions}
        started = time.perf_counter()
        if gone & self.assigned:
            try:
                self.checkpoint()  # before they move: the next owner starts from here
            except Exception:  # a callback must not raise into `consume`
                log.exception("cannot checkpoint before a revocation")
        self._drop(gone)
        self.last_revocation_seconds = time.perf_counter() - started
        log.info("revoked %d partition(s); checkpointed and dropped their streams in %.3f s",
                 len(gone), self.last_revocation_seconds)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        gone = {(tp.topic, tp.partition) for tp in partitions}
        log.warning("lost %d partition(s) (this member was out of the group); their "
                    "streams go unsaved and their next owner resumes from its checkpoint",
                    len(gone))
        self._drop(gone)

    def _drop(self, gone: set[tuple[str, int]]) -> None:
        homes = {source(t, p) for t, p in gone}
        leaving = [s for s in self.pipeline.streams if home(s) in homes]
        self.checkpointer.release(leaving)
        self.changelog.forget(stream_key(s.labels) for s in leaving)
        self.pipeline.streams.drop(s.labels for s in leaving)
        self.assigned -= gone
        self._unrestored -= gone
        for key in gone:
            self.next_offsets.pop(key, None)
            self._committed.pop(key, None)

    def _error(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self.problem = f"Kafka unreachable: {error.str()}"
        log.warning("kafka: %s", error.str())
        if error.fatal():
            self.on_fatal(f"kafka: {error.str()}")

    # --- reads ------------------------------------------------------------------------
    def lag(self) -> Iterable[tuple[str, int, int]]:
        """(topic, partition, records behind) of each assigned partition, from the high
        watermark of the last fetch and this member's position (local reads: no request to
        the brokers). The position, not the last offset processed: it is past the markers a
        transactional producer leaves (the repartition topic's), which are no records."""
        for topic, partition in sorted(self.assigned):
            tp = TopicPartition(topic, partition)
            low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high == OFFSET_UNSET:
                continue
            position = self.consumer.position([tp])[0].offset
            done = max(position, self.next_offsets.get((topic, partition), position))
            yield topic, partition, max(0, high - (done if done >= 0 else max(low, 0)))

    def describe(self) -> dict[str, Any]:
        return {"assigned": [source(t, p) for t, p in sorted(self.assigned)],
                "problem": self.problem}

    async def close(self) -> None:
        """Leave the group: the revoke callback saves every stream first."""
        self.consumer.close()  # calls `_revoked` for every partition held
        self.changelog.close()
        if self.repartitioner is not None:
            self.repartitioner.close()
