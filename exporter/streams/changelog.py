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

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from exporter.config import KafkaInputConfig
from exporter.streams.changelog_topic import (
    CHANGELOG_TOPIC_CONFIG,
    HOME_HEADER,
    SETTINGS_HEADER,
    TIMEOUT,
    ChangelogError,
    ConsumerGroupMetadata,
    document_key,
    ensure_topic,
    fingerprint,
    parse_slot_key,
    produce,
    slot_key,
    transactional,
)
from exporter.streams.store import Changes, Saved

log = logging.getLogger(__name__)
READ_TIMEOUT = 30.0  # seconds for a restore's read of the changelog


@dataclass
class _Written:
    """What one checkpoint writes, kept by this process once the checkpoint commits: the
    slots of each part it writes, the streams it deletes."""

    lengths: dict[tuple[str, str], int] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)


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
            **transactional(config, common, transactional_id),
            # a checkpoint of every stream (after a failure) is queued whole
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
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
        written = _Written()
        with self._lock:  # what was written, as this process knows it
            messages = list(self._messages(changes, homes, written))
        try:
            self._commit(messages, offsets, group)
        except ChangelogError:
            with self._lock:
                self._settle(written, committed=False)
            raise
        with self._lock:
            self._settle(written, committed=True)

    def _commit(self, messages: list[tuple[int, bytes, bytes | None, Any]],
                offsets: list[TopicPartition], group: ConsumerGroupMetadata) -> None:
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
        self._replace()

    def _replace(self) -> None:
        self.producer = Producer(self._producer_config)
        self._open, self._needs_init = False, True

    def _abort(self) -> None:
        """Leave a failed transaction: its writes are never read (read_committed). If the
        brokers cannot be reached to abort it now, the next commit aborts it first. If the
        producer refuses (a commit that timed out is still in progress in librdkafka, and
        would have to be called again until it settles), a new producer takes over its
        transactional id, which aborts the transaction on the brokers."""
        try:
            self.producer.abort_transaction(TIMEOUT)
            self._open = False
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError._TIMED_OUT:
                log.warning("cannot abort a failed checkpoint yet: %s", exc.args[0])
            else:
                log.warning("cannot abort a failed checkpoint (%s); a new producer takes "
                            "over", exc.args[0])
                self._replace()

    def _settle(self, written: _Written, committed: bool) -> None:
        """What a transaction wrote, once it is known whether it counts. An aborted one
        deleted nothing: a part keeps the most slots either may have left (deleting one
        that is not there is harmless; leaving one behind is not: a later document with
        fewer would read it), and the streams it deleted are still there."""
        for (stream, part), length in written.lengths.items():
            if stream not in self._partition:
                continue  # it moved to another process meanwhile
            known = self._lengths.get((stream, part), 0)
            self._lengths[(stream, part)] = length if committed else max(known, length)
        if committed:
            self._forget(written.deleted)

    def _messages(self, changes: Changes, homes: dict[str, str], written: _Written
                  ) -> Iterable[tuple[int, bytes, bytes | None, list[tuple[str, bytes]] | None]]:
        """Parts before documents: a restore never sees a document whose parts are older
        (within a transaction too, so a reader of uncommitted data would not either). The
        slots each part holds after it, and the streams deleted, go into `written`."""
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
            length = max(change.length, max(change.slots, default=-1) + 1)
            written.lengths[(change.stream, change.part)] = length
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
            for part in self._parts_of.get(stream, ()):
                for slot in range(self._lengths.get((stream, part), 0)):
                    yield partition, slot_key(stream, part, slot), None, None
            written.deleted.append(stream)

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
        newest: dict[bytes, bytes | None] = {}  # slot key -> its newest value
        newest_documents: dict[bytes, Any] = {}  # document key -> its newest message
        while pending:
            if time.monotonic() > deadline:
                raise ChangelogError(f"restore from {self.topic} timed out; partitions "
                                     f"{sorted(pending)} not read to their end")
            messages = self._restorer.consume(100_000, timeout=0.02)
            restored.messages += len(messages)
            for message in messages:
                key = message.key()
                if key is not None:
                    if key[:1] == b"s":
                        newest_documents[key] = message
                    else:  # only the bytes: half a million messages are not kept alive
                        newest[key] = message.value()
                    continue
                error = message.error()  # an event: the end of a partition, or an error
                if error is None:
                    continue  # a message without a key: not ours
                if error.code() != KafkaError._PARTITION_EOF:
                    raise ChangelogError(f"cannot read {self.topic}: {error}")
                pending.discard(message.partition())
        for key, message in newest_documents.items():
            value = message.value()
            if value is not None:  # (None: deleted)
                restored.bytes += len(key) + len(value)
                documents[key[1:].decode()] = (value, dict(message.headers() or ()))
        for key, value in newest.items():
            if value is None:
                continue
            restored.bytes += len(key) + len(value)
            if key[:1] == b"p":
                try:
                    stream, part, slot = parse_slot_key(key)
                except ValueError:
                    continue  # not ours: a corrupt entry costs nothing more
                slots.setdefault((stream, part), {})[slot] = value

    def close(self) -> None:
        self.producer.flush(TIMEOUT)
        self._restorer.close()
