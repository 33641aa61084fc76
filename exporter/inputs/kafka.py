"""The Kafka input: this process as one member of a consumer group, owning the streams of
the partitions it is assigned.

Records must be keyed by stream (the stream-label values) so that all of a stream is in
one partition; then partitions are the unit of ownership, and scale-out is Kafka's own:
more members, cooperative-sticky assignment, static membership. Everything runs on the
event loop's thread: the consumer is polled without blocking (`consume(timeout=0)`), and
the rebalance callbacks librdkafka calls from inside that poll see the streams between
two batches, never halfway through one.

Ownership, in the order it happens (the state side is `exporter.streams.handoff`):
- assigned: the partitions are paused; their committed offsets are fetched (which waits until
  no transaction of a former owner is pending), then their streams' state is read from the
  changelog (`exporter.streams.changelog`) and restored, and only then are they resumed;
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

import orjson
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from exporter.config import KafkaInputConfig
from exporter.inputs.kafka_repartition import Repartitioner
from exporter.inputs.stats import InputStats
from exporter.records import RejectedRecord
from exporter.streams.changelog import Changelog, ChangelogError
from exporter.streams.handoff import Handoff, source
from exporter.streams.pipeline import Pipeline, Position
from exporter.streams.state import settings_of

log = logging.getLogger(__name__)
INSTANCE_ENV = "LLM_DRIFT_EXPORTER_INSTANCE_ID"  # group.instance.id, e.g. a pod's name
BATCH = 2000  # messages taken per poll
IDLE = 0.02  # seconds between polls while nothing arrives
OFFSET_UNSET = -1001


class KafkaInput:
    def __init__(self, config: KafkaInputConfig, pipeline: Pipeline, stats: InputStats,
                 checkpoint_interval: float, on_fatal: Callable[[str], None]) -> None:
        self.config = config
        self.pipeline = pipeline
        self.stats = stats
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
            # a partition resumed after its restore is fetched at once, not after the
            # broker's long poll on the others (500 ms by default)
            "fetch.wait.max.ms": 100,
            "error_cb": self._error,
            "stats_cb": self._statistics,  # brokers up again: readiness comes back
            "statistics.interval.ms": 2000,
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
        self.handoff = Handoff(pipeline, self.changelog, self.consumer, checkpoint_interval,
                               on_fatal)
        self.handoff.on_restored = self._restored
        self.assigned: set[tuple[str, int]] = set()
        self.next_offsets: dict[tuple[str, int], int] = {}  # after the last record applied
        self.started = False
        self._unreachable: str | None = "not connected to Kafka yet"
        self.rebalances = 0
        # a handoff, as this member sees it: the checkpoint of a revocation; an assignment
        # from its start to its first record processed (committed offsets, changelog, restore)
        self.last_revocation_seconds = 0.0
        self.last_assignment_seconds = 0.0
        self._assigned_at: float | None = None  # an assignment still without a record

    # --- the loop ---------------------------------------------------------------------
    async def run(self) -> None:
        if not self.started:
            await self._start()
        while True:
            if self.repartitioner is not None:
                self._forward(self.repartitioner)
            messages = self.consumer.consume(BATCH, timeout=0)
            if messages:
                self._ingest(messages)
            self.handoff.tick(self.next_offsets)
            await asyncio.sleep(0 if messages else IDLE)

    @property
    def problem(self) -> str | None:
        """Why this input is not ready (None: it is)."""
        return self._unreachable or self.handoff.problem

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
            except Exception as exc:  # the brokers are not there yet (or a ChangelogError)
                if isinstance(exc, ChangelogError) and exc.fatal:
                    self.on_fatal(str(exc))
                    raise
                self._unreachable = f"cannot reach Kafka: {exc}"
                log.warning("%s; retrying", self._unreachable)
                await asyncio.sleep(2.0)
        topics = [self.config.repartition_topic] if self.repartitioner is not None \
            else list(self.config.topics)
        self.consumer.subscribe(topics, on_assign=self._assigned, on_revoke=self._revoked,
                                on_lost=self._lost)
        self.started = True
        self._unreachable = None

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
        self._unreachable = None
        if lines:
            self.pipeline.ingest_lines(lines, self.stats, self.config.format, positions)
        if self._assigned_at is not None and messages:
            self.last_assignment_seconds = time.perf_counter() - self._assigned_at
            self._assigned_at = None
            log.info("first records after the assignment processed %.2f s after it began",
                     self.last_assignment_seconds)

    # --- rebalances (called by librdkafka from inside `consume`, on this thread) -------
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        new = [(tp.topic, tp.partition) for tp in partitions]
        self.assigned |= set(new)
        if not new:
            return
        # assigned here, paused until their streams are restored (`Handoff`, on its thread)
        consumer.incremental_assign(partitions)
        consumer.pause(partitions)
        self._assigned_at = time.perf_counter()
        self.handoff.assigned(new)

    def _restored(self, partitions: list[tuple[str, int]], offsets: dict[tuple[str, int], int]
                  ) -> None:
        """Their streams are back: their records may come, from the committed offsets."""
        self.next_offsets.update(offsets)
        self.consumer.resume([TopicPartition(t, p) for t, p in partitions])
        if self._assigned_at is not None:
            self.last_assignment_seconds = time.perf_counter() - self._assigned_at

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        gone = {(tp.topic, tp.partition) for tp in partitions}
        started = time.perf_counter()
        try:
            self.handoff.revoked(gone & self.assigned, self.next_offsets)
        except Exception:  # a callback must not raise into `consume`
            log.exception("cannot checkpoint before a revocation")
            self.handoff.drop(gone)
        self._forget(gone)
        self.last_revocation_seconds = time.perf_counter() - started
        log.info("revoked %d partition(s); checkpointed and dropped their streams in %.3f s",
                 len(gone), self.last_revocation_seconds)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.rebalances += 1
        gone = {(tp.topic, tp.partition) for tp in partitions}
        log.warning("lost %d partition(s) (this member was out of the group); their "
                    "streams go unsaved and their next owner resumes from its checkpoint",
                    len(gone))
        self.handoff.drop(gone)
        self._forget(gone)

    def _forget(self, gone: set[tuple[str, int]]) -> None:
        self.assigned -= gone
        for key in gone:
            self.next_offsets.pop(key, None)

    def _statistics(self, text: str) -> None:
        """librdkafka's statistics: a broker up again ends an outage (records may not
        come: a quiet topic must still turn ready)."""
        if self._unreachable is None or not self.started:
            return
        brokers = orjson.loads(text).get("brokers", {})
        if any(b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in brokers.values()):
            log.info("Kafka reachable again")
            self._unreachable = None

    def _error(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            self._unreachable = f"Kafka unreachable: {error.str()}"
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


    async def close(self) -> None:
        """Leave the group: the revoke callback saves every stream first."""
        self.consumer.close()  # calls `_revoked` for every partition held
        self.handoff.close()
        self.changelog.close()
        if self.repartitioner is not None:
            self.repartitioner.close()
