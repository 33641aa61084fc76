"""`repartition: true`: records of topics that are not keyed by stream, forwarded keyed by stream.

Ownership needs all of a stream in one partition. When the producers cannot key by stream,
each member also consumes the input topics in a group of their own (`<group_id>-repartition`),
works out each record's stream (decoded, normalized, labelled as the pipeline does) and writes
the record unchanged to an internal topic keyed by the stream's label values; the members own
that topic's partitions as they would own a keyed input topic's. The Kafka Streams pattern.

Exactly once: a polled batch is forwarded in one transaction with the input offsets it covers
(`send_offsets_to_transaction`), so a record is forwarded once or, if the transaction fails, not
at all and read again (the consumer is moved back). A record whose stream cannot be worked out
(not JSON, an unknown shape) is forwarded without a key: the member that reads it rejects it
and counts it, once, like any other.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from exporter.config import KafkaInputConfig
from exporter.records import normalize
from exporter.streams.changelog_topic import (
    TIMEOUT,
    ChangelogError,
    ensure_topic,
    produce,
    transactional,
)
from exporter.streams.pipeline import Pipeline

log = logging.getLogger(__name__)
BATCH = 2000
# forwarded records are read within seconds; a day covers an outage of the members
REPARTITION_TOPIC_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(24 * 3600 * 1000)}


class Repartitioner:
    def __init__(self, config: KafkaInputConfig, pipeline: Pipeline, member: str,
                 common: dict[str, Any]) -> None:
        self.config = config
        self.pipeline = pipeline
        self.topic = config.repartition_topic
        self.admin = AdminClient(common)
        self.consumer = Consumer({
            **common,
            "group.id": f"{config.group_id}-repartition",
            "client.id": f"llm-drift-exporter-{member}-repartition",
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest" if config.start_at == "beginning" else "latest",
            "isolation.level": "read_committed",
            "session.timeout.ms": int(config.session_timeout * 1000),
        })
        self.producer = Producer({
            **transactional(config, common, f"{config.group_id}-repartition-{member}"),
            "partitioner": "murmur2_random",  # where Java producers would put the same key
        })
        self.forwarded = 0
        self.failures = 0

    def start(self, partitions: int) -> None:
        """The internal topic (as many partitions as the input's), then the consumer."""
        ensure_topic(self.admin, self.topic, partitions, REPARTITION_TOPIC_CONFIG)
        self.producer.init_transactions(TIMEOUT)
        self.consumer.subscribe(list(self.config.topics))

    def key(self, value: bytes | None) -> bytes | None:
        """The stream-label values of the record's (first) stream, as JSON; None when the
        record has none."""
        try:
            records = normalize(orjson.loads(value or b""), self.config.format
                                or self.pipeline.config.format)
            return orjson.dumps(list(self.pipeline.labeler.key(records[0])))
        except Exception:  # rejected by the member that reads it, counted there
            return None

    def poll(self) -> int:
        """Forward what has arrived; the number of records forwarded."""
        messages = [m for m in self.consumer.consume(BATCH, timeout=0) if m.error() is None]
        if not messages:
            return 0
        first: dict[tuple[str, int], int] = {}
        after: dict[tuple[str, int], int] = {}
        try:
            self.producer.begin_transaction()
            for message in messages:
                where = (message.topic(), message.partition())
                first.setdefault(where, message.offset())
                after[where] = message.offset() + 1
                produce(self.producer, self.topic, message.value(), self.key(message.value()))
            self.producer.send_offsets_to_transaction(
                [TopicPartition(t, p, o) for (t, p), o in after.items()],
                self.consumer.consumer_group_metadata(), TIMEOUT)
            self.producer.commit_transaction(TIMEOUT)
        except KafkaException as exc:
            self.failures += 1
            error = exc.args[0]
            log.error("repartition: batch not forwarded (%s); reading it again", error)
            if error.txn_requires_abort():
                self.producer.abort_transaction(TIMEOUT)
            for (topic, partition), offset in first.items():  # from where the batch began
                self.consumer.seek(TopicPartition(topic, partition, offset))
            if error.fatal():
                raise ChangelogError(f"repartition: {error}", fatal=True) from exc
            return 0
        self.forwarded += len(messages)
        return len(messages)

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush(TIMEOUT)
