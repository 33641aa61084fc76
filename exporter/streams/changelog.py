"""Streams' state in a compacted Kafka topic: the checkpoints of a consumer-group member.

A stream's state is what `exporter.streams.checkpoint` makes of it: one document (its
running values and counters) and the slots of its large parts. Here each goes to the
changelog partition numbered like the input partition the stream's records come from
(its home), keyed by stream and slot, so compaction keeps the newest of each and a member
assigned input partition 3 finds all of its streams by reading changelog partition 3.

A checkpoint is one Kafka transaction that holds the changed streams *and* the group's input
offsets (`send_offsets_to_transaction`, the exactly-once pattern of Kafka Streams): both
become visible together or not at all. Why transactions rather than plain writes followed by
an offset commit: a process killed halfway through a checkpoint would leave some slots of a
stream new and its document old, a state that never existed; an aborted transaction leaves
the last whole one. It also fences a member that lost its partitions but does not know yet
(a zombie): its offsets carry an old group generation, so its transaction fails. Each
stream also remembers the last offset it applied (`StreamState.positions`), so a record
delivered again is never applied twice even across an abort.

Restores read with `isolation.level=read_committed`: only whole checkpoints. Documents carry
two headers: the fingerprint of the detector settings they were made with (others are not
restored: the stream re-learns, counted) and the stream's home (`topic/partition`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from exporter.config import KafkaInputConfig
from exporter.streams.store import Changes, Saved

log = logging.getLogger(__name__)
SETTINGS_HEADER = "llm-drift-settings"
HOME_HEADER = "llm-drift-home"
TIMEOUT = 10.0  # seconds for a transaction step (then it fails, and is tried again)
READ_TIMEOUT = 30.0  # seconds for a restore's read of the changelog
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


@dataclass
class Restored:
    """What `Changelog.restore` read: the streams' documents and parts as a `Saved`, the
    number skipped because their settings differ, the messages read and the bytes of the
    state found in them."""

    saved: Saved = field(default_factory=Saved)
    homes: dict[str, str] = field(default_factory=dict)  # stream -> its home partition
    other_settings: int = 0
    messages: int = 0
    bytes: int = 0
    seconds: float = 0.0


class Changelog:
    def __init__(self, config: KafkaInputConfig, transactional_id: str,
                 settings: dict[str, Any]) -> None:
        self.config = config
        self.topic = config.changelog
        self.fingerprint = fingerprint(settings)
        common = {"bootstrap.servers": config.bootstrap_servers, **config.properties,
                  "logger": log}
        self._producer_config = {
            **common,
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "transaction.timeout.ms": int(max(10.0, config.session_timeout) * 1000),
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "message.max.bytes": max(1_000_000, 2 * config.max_message_bytes),
        }
        self.producer = Producer(self._producer_config)
        self._needs_init = False  # a renewed producer: init_transactions at its first commit
        self.admin = AdminClient(common)
        self._restorer = Consumer({
            **common,
            "group.id": f"{config.group_id}-restore",  # never joined, never committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 20,  # the end of a partition is seen at once, not in 0.5 s
            # a restore reads whole partitions (~0.4 MB a learned stream): large fetches
            "max.partition.fetch.bytes": 64 << 20,
            "fetch.max.bytes": 256 << 20,
            "queued.max.messages.kbytes": 1 << 20,
        })
        # what this process wrote or read: a stream's partition, and the slots of each part
        self._partition: dict[str, int] = {}
        self._lengths: dict[tuple[str, str], int] = {}
        self._parts_of: dict[str, set[str]] = {}
        self.transactions = 0
        self.failures = 0
        self._open = False  # a transaction begun and not yet committed or aborted
        # commits and restores (a thread) and `forget` (the loop) share what was written
        self._lock = threading.RLock()

    def start(self, partitions: int) -> None:
        """Make sure the topic exists, compacted, with at least as many partitions as the
        input's; then take over this transactional id (aborting what a previous process
        with it left open)."""
        found = ensure_topic(self.admin, self.topic, partitions, CHANGELOG_TOPIC_CONFIG)
        if found is not None and found < partitions:
            raise ChangelogError(f"changelog topic {self.topic} has {found} partitions, "
                                 f"fewer than the input's {partitions}", fatal=True)
        self.producer.init_transactions(TIMEOUT)

    # --- checkpoints ------------------------------------------------------------------
    def commit(self, changes: Changes, homes: dict[str, str], offsets: list[TopicPartition],
               group: ConsumerGroupMetadata) -> None:
        """One checkpoint, one transaction: the changed streams (each to its home's
        partition) and the input `offsets` they include. Raises ChangelogError; after one,
        no transaction is left open (aborted), or the error is fatal."""
        with self._lock:  # what was written, as this process knows it
            messages = list(self._messages(changes, homes))
        producer = self.producer
        try:
            if self._needs_init:
                producer.init_transactions(TIMEOUT)
                self._needs_init = False
            if self._open:  # a failed abort before: the producer is still in it
                producer.abort_transaction(TIMEOUT)
                self._open = False
            producer.begin_transaction()
            self._open = True
            for partition, key, value, headers in messages:
                produce(producer, self.topic, value, key, partition=partition, headers=headers)
            if offsets:
                producer.send_offsets_to_transaction(offsets, group, TIMEOUT)
            producer.commit_transaction(TIMEOUT)
            self._open = False
        except KafkaException as exc:
            self.failures += 1
            error = exc.args[0]
            if error.fatal():
                raise ChangelogError(f"checkpoint not saved: {error}", fatal=True) from exc
            self._abort()
            raise ChangelogError(f"checkpoint not saved: {error}") from exc
        self.transactions += 1

    def renew(self) -> None:
        """A transaction step that outlived its timeout (librdkafka issue 5456: after the
        group coordinator was away, `send_offsets_to_transaction` can wait for ever): a new
        producer under the same transactional id takes over; its `init_transactions`
        fences the stuck one and aborts its transaction."""
        self.failures += 1
        self.producer = Producer(self._producer_config)
        self._open, self._needs_init = False, True

    def _abort(self) -> None:
        """Leave a failed transaction: its writes are never read (read_committed). If the
        brokers cannot be reached to abort it now, the next commit aborts it first."""
        try:
            self.producer.abort_transaction(TIMEOUT)
            self._open = False
        except KafkaException as exc:
            log.warning("cannot abort a failed checkpoint yet: %s", exc.args[0])

    def _messages(self, changes: Changes, homes: dict[str, str]
                  ) -> Iterable[tuple[int, bytes, bytes | None, list[tuple[str, bytes]] | None]]:
        """Parts before documents: a restore never sees a document whose parts are older
        (within a transaction too, so a reader of uncommitted data would not either)."""
        for change in changes.parts:
            partition = self._home(change.stream, homes)
            if partition is None:
                continue
            self._parts_of.setdefault(change.stream, set()).add(change.part)
            for slot, data in change.slots.items():
                yield partition, slot_key(change.stream, change.part, slot), \
                    bytes(memoryview(data).cast("B")), None
            known = self._lengths.get((change.stream, change.part), 0)
            for slot in range(change.length, known):  # a part that shrank
                yield partition, slot_key(change.stream, change.part, slot), None, None
            self._lengths[(change.stream, change.part)] = max(
                change.length, max(change.slots, default=-1) + 1)
        for stream, state in changes.streams.items():
            partition = self._home(stream, homes)
            if partition is not None:
                headers = [(SETTINGS_HEADER, self.fingerprint),
                           (HOME_HEADER, homes[stream].encode())]
                yield partition, document_key(stream), state, headers
        for stream in changes.deleted:
            partition = self._partition.get(stream)
            if partition is None:
                continue
            yield partition, document_key(stream), None, None
            for part in self._parts_of.pop(stream, ()):
                for slot in range(self._lengths.pop((stream, part), 0)):
                    yield partition, slot_key(stream, part, slot), None, None
            self._forget([stream])

    def _home(self, stream: str, homes: dict[str, str]) -> int | None:
        home = homes.get(stream)
        if home is None:
            return self._partition.get(stream)
        partition = self._partition[stream] = int(home.rpartition("/")[2])
        return partition

    def forget(self, streams: Iterable[str]) -> None:
        """These streams moved to another process: it writes them from now on."""
        with self._lock:
            self._forget(streams)

    def _forget(self, streams: Iterable[str]) -> None:
        for stream in streams:
            self._partition.pop(stream, None)
            for part in self._parts_of.pop(stream, ()):
                self._lengths.pop((stream, part), None)

    # --- restores ---------------------------------------------------------------------
    def restore(self, homes: set[str]) -> Restored:
        """The committed state of the streams whose home is in `homes` (`topic/partition`),
        read from the start of their changelog partitions to their end."""
        with self._lock:
            return self._restore(homes)

    def _restore(self, homes: set[str]) -> Restored:
        started = time.perf_counter()
        numbers = sorted({int(home.rpartition("/")[2]) for home in homes})
        restored = Restored()
        if not numbers:
            return restored
        documents: dict[str, tuple[bytes, dict[str, bytes]]] = {}
        slots: dict[tuple[str, str], dict[int, bytes]] = {}
        self._restorer.assign([TopicPartition(self.topic, n, -2) for n in numbers])  # start
        try:
            self._read(set(numbers), documents, slots, restored)
        finally:
            self._restorer.unassign()
        for stream, (state, headers) in documents.items():
            if headers.get(HOME_HEADER, b"").decode() not in homes:
                continue  # a stream of another input topic sharing the partition number
            if headers.get(SETTINGS_HEADER) != self.fingerprint:
                restored.other_settings += 1
                continue
            restored.saved.streams[stream] = state
            restored.homes[stream] = headers[HOME_HEADER].decode()
            self._partition[stream] = int(headers[HOME_HEADER].decode().rpartition("/")[2])
        for (stream, part), found in slots.items():
            if stream not in restored.saved.streams:
                continue
            length = 0
            while length in found:  # the slots in order, up to the first missing one
                length += 1
            restored.saved.parts[(stream, part)] = [found[i] for i in range(length)]
            self._lengths[(stream, part)] = max(found, default=-1) + 1
            self._parts_of.setdefault(stream, set()).add(part)
        restored.seconds = time.perf_counter() - started
        return restored

    def _read(self, partitions: set[int], documents: dict[str, tuple[bytes, dict[str, bytes]]],
              slots: dict[tuple[str, str], dict[int, bytes]], restored: Restored) -> None:
        """The newest message of each key in `partitions`, sorted into `documents` and
        `slots`. Most of what is read is older versions and tombstones not compacted yet:
        the loop over messages only keeps the newest per key, what is kept is parsed."""
        deadline = time.monotonic() + READ_TIMEOUT
        pending = set(partitions)
        newest: dict[bytes, Any] = {}
        while pending:
            if time.monotonic() > deadline:
                raise ChangelogError(f"restore from {self.topic} timed out; partitions "
                                     f"{sorted(pending)} not read to their end")
            messages = self._restorer.consume(100_000, timeout=0.02)
            restored.messages += len(messages)
            for message in messages:
                key = message.key()
                if key is not None:
                    newest[key] = message
                    continue
                error = message.error()  # an event: the end of a partition, or an error
                if error is None:
                    continue  # a message without a key: not ours
                if error.code() != KafkaError._PARTITION_EOF:
                    raise ChangelogError(f"cannot read {self.topic}: {error}")
                pending.discard(message.partition())
        for key, message in newest.items():
            value = message.value()
            if value is None:
                continue  # deleted
            restored.bytes += len(key) + len(value)
            if key[:1] == b"s":
                documents[key[1:].decode()] = (value, dict(message.headers() or ()))
            elif key[:1] == b"p":
                try:
                    stream, part, slot = parse_slot_key(key)
                except ValueError:
                    continue  # not ours: a corrupt entry costs nothing more
                slots.setdefault((stream, part), {})[slot] = value

    def close(self) -> None:
        self.producer.flush(TIMEOUT)
        self._restorer.close()
