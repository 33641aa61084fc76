"""The real Kafka broker of tests/kafka_broker.py does what the Kafka input's tests rely on.

A consumer group with the cooperative-sticky assignor reads every keyed record of a
12-partition topic, each key from one partition in order; compacted topics exist; a killed
broker comes back with its data at the same address.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Message
from confluent_kafka.admin import ConfigResource, ConsumerGroupDescription

from tests.kafka_broker import NODE_ID, RDKAFKA_LOG, KafkaBroker, consume, produce_keyed

pytestmark = pytest.mark.e2e

RECORDS = 10_000
KEYS = 500
PARTITIONS = 12


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_broker_answers_on_loopback(kafka_broker: KafkaBroker) -> None:
    metadata = kafka_broker.admin().list_topics(timeout=10)
    broker = metadata.brokers[NODE_ID]
    assert (broker.host, broker.port) == ("127.0.0.1", kafka_broker.port)
    assert kafka_broker.bootstrap == f"127.0.0.1:{kafka_broker.port}"
    assert "Kafka Server started" in kafka_broker.log_path.read_text()


def _read_in_group(
    broker: KafkaBroker, topic: str, group: str
) -> tuple[list[Message], ConsumerGroupDescription]:
    """Read RECORDS records as the only member of `group` (cooperative-sticky), and describe the
    group from the broker's side while the member is still in it."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "logger": RDKAFKA_LOG,
        }
    )
    messages: list[Message] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(messages) < RECORDS and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() is not None:
                    raise KafkaException(message.error())
                messages.append(message)
        admin = broker.admin()
        description = admin.describe_consumer_groups([group])[group].result(timeout=30)
    finally:
        consumer.close()
    return messages, description


def test_a_cooperative_sticky_group_reads_every_keyed_record_by_key(
    kafka_broker: KafkaBroker,
) -> None:
    topic = _topic("keyed")
    kafka_broker.create_topic(topic, partitions=PARTITIONS)
    records = [(f"stream-{i % KEYS}".encode(), str(i).encode()) for i in range(RECORDS)]

    delivered = produce_keyed(kafka_broker.bootstrap, topic, records)
    group = f"readers-{uuid.uuid4().hex[:8]}"
    consumed, description = _read_in_group(kafka_broker, topic, group)

    assert len(delivered) == RECORDS
    assert sorted(int(m.value()) for m in consumed) == list(range(RECORDS))
    # The broker saw the cooperative assignor and gave the one member all 12 partitions.
    assert description.partition_assignor == "cooperative-sticky"
    [member] = description.members
    assigned = {(tp.topic, tp.partition) for tp in member.assignment.topic_partitions}
    assert assigned == {(topic, p) for p in range(PARTITIONS)}
    # One partition per key, the one the producer was told; records of a key in order.
    partitions: dict[bytes, set[int]] = defaultdict(set)
    values: dict[bytes, list[int]] = defaultdict(list)
    for message in consumed:
        partitions[message.key()].add(message.partition())
        values[message.key()].append(int(message.value()))
    assert len(partitions) == KEYS
    assert all(len(found) == 1 for found in partitions.values())
    assert {m.key(): {m.partition()} for m in delivered} == partitions
    assert all(found == sorted(found) for found in values.values())
    assert set().union(*partitions.values()) == set(range(PARTITIONS))


def test_a_compacted_topic_takes_keyed_records_only(kafka_broker: KafkaBroker) -> None:
    topic = _topic("compacted")
    kafka_broker.create_topic(topic, partitions=3, config={"cleanup.policy": "compact"})

    resource = ConfigResource("topic", topic)
    admin = kafka_broker.admin()  # a client must outlive the futures it returns
    configs = admin.describe_configs([resource])[resource].result(timeout=30)
    assert configs["cleanup.policy"].value == "compact"
    produce_keyed(kafka_broker.bootstrap, topic, [(b"stream-a", b"1"), (b"stream-a", b"2")])
    # The broker enforces the policy: a compacted topic rejects a record without a key.
    with pytest.raises(RuntimeError, match="1 failed"):
        produce_keyed(kafka_broker.bootstrap, topic, [(None, b"no key")], timeout=30)


def test_a_killed_broker_restarts_with_its_data(tmp_path: Path) -> None:
    broker = KafkaBroker()
    try:
        broker.start(tmp_path)
        bootstrap = broker.bootstrap
        topic = _topic("durable")
        broker.create_topic(topic, partitions=4)
        before = [(f"k{i % 37}".encode(), f"before-{i}".encode()) for i in range(1000)]
        produce_keyed(bootstrap, topic, before)

        broker.kill()
        assert not broker.running
        with pytest.raises(KafkaException):
            broker.admin().list_topics(timeout=1)

        broker.restart()
        assert broker.bootstrap == bootstrap
        after = [(b"k0", b"after-0")]
        produce_keyed(bootstrap, topic, after)
        read = consume(bootstrap, topic, len(before) + len(after))
        assert sorted((m.key(), m.value()) for m in read) == sorted(before + after)
    finally:
        broker.stop()
