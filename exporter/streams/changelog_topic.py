"""The changelog topic's shape, and the Kafka calls the changelog and the repartitioner
share: its settings, how its keys are made, creating a topic, producing into a full
queue, a transactional producer's settings."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from exporter.config import KafkaInputConfig

log = logging.getLogger(__name__)
SETTINGS_HEADER = "llm-drift-settings"
HOME_HEADER = "llm-drift-home"
TIMEOUT = 10.0  # seconds for a transaction step (then it fails, and is tried again)
# Compaction only cleans closed segments: small, short-lived ones keep what a restore reads
# close to one version per stream and slot (the newest segments are read whole: at 1,000
# streams changing every second, about 5 MB a second of checkpoints until cleaned).
CHANGELOG_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": str(8 << 20),
    "segment.ms": "10000",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    # A stream's slots end as tombstones when a part goes (a reservoir once learned: 256 a
    # stream); kept a day by default, they are most of what a restore would read. A
    # restore reading past this would at worst see a stale slot, which no document
    # refers to (restores time out at READ_TIMEOUT).
    "delete.retention.ms": "60000",
}
ConsumerGroupMetadata = Any


class ChangelogError(Exception):
    """A checkpoint or restore failed. `fatal`: this producer was fenced off (another
    process took over its transactional id) or hit an unrecoverable error; the process
    must stop, and its supervisor restarts it."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def fingerprint(settings: dict[str, Any]) -> bytes:
    return hashlib.sha256(orjson.dumps(settings, option=orjson.OPT_SORT_KEYS)).digest()[:16]


def document_key(stream: str) -> bytes:
    return b"s" + stream.encode()


def slot_key(stream: str, part: str, slot: int) -> bytes:
    """`p<stream>\0<part>\0<slot>`: split, not parsed, by a restore (a learned stream has a
    few hundred slots). A stream key is JSON, whose strings never hold a raw NUL."""
    return b"p%s\0%s\0%d" % (stream.encode(), part.encode(), slot)


def parse_slot_key(key: bytes) -> tuple[str, str, int]:
    """(stream, part, slot) of a `slot_key`; ValueError if it is not one."""
    stream, part, slot = key[1:].split(b"\0")
    return stream.decode(), part.decode(), int(slot)


def transactional(config: KafkaInputConfig, common: dict[str, Any], transactional_id: str
                  ) -> dict[str, Any]:
    """The settings of a producer that writes in transactions (the changelog's, the
    repartitioner's): a transaction outlives a session timeout at most."""
    return {
        **common,
        "transactional.id": transactional_id,
        "enable.idempotence": True,
        "transaction.timeout.ms": int(max(10.0, config.session_timeout) * 1000),
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": max(1_000_000, 2 * config.max_message_bytes),
    }


def ensure_topic(admin: AdminClient, topic: str, partitions: int,
                 config: dict[str, str]) -> int | None:
    """Create `topic` with `partitions` and `config` unless it exists; the partitions of
    the one that exists (None: created now, or by another member meanwhile)."""
    found = admin.list_topics(timeout=TIMEOUT).topics.get(topic)
    if found is not None:
        return len(found.partitions)
    created = admin.create_topics([NewTopic(topic, num_partitions=partitions,
                                            replication_factor=-1, config=config)])
    try:
        created[topic].result(TIMEOUT)
        log.info("created topic %s (%d partitions)", topic, partitions)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise ChangelogError(f"cannot create {topic}: {exc}") from exc
    return None


def produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None,
            **where: Any) -> None:
    """`producer.produce`, waiting while its local queue is full (`where`: partition,
    headers)."""
    while True:
        try:
            producer.produce(topic, value, key, **where)
            return
        except BufferError:  # let it drain
            producer.poll(0.05)
