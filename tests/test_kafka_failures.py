"""The Kafka input when things go wrong, with the real exporter process and a real broker.

- Poison messages cost only themselves: each is counted under its reason, every valid
  record exactly once, and the partition goes on (the lag reaches 0).
- A broker outage: /metrics keeps answering, /-/ready says 503 and why; the member
  reconnects by itself, is ready again and ends with every record counted once.
- A corrupt changelog entry costs only its stream: it re-learns, named in an ERROR line.
- Members SIGKILLed mid-run are replaced: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from benchmarks.kafka_traffic import records, stream_labels
from exporter.streams.changelog_topic import parse_slot_key
from tests.kafka_broker import RDKAFKA_LOG, KafkaBroker, produce_keyed
from tests.kafka_members import get_json, member_config, start_member, wait_caught_up
from tests.process import ExporterProcess, wait_for

pytestmark = [pytest.mark.e2e]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
Keyed = tuple[bytes | None, bytes | None]
MAX_MESSAGE_BYTES = 4096
# seconds: not a performance bar; "keeps serving": within the scrape timeout Prometheus uses by
# default (one slow scrape of ~3 s was seen as the broker went away: noted in the issue)
SCRAPE_BOUND = 10.0
CONNECTED = "llm_exporter_kafka_connected"


# --- helpers ---------------------------------------------------------------------------
def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _total(samples: Samples, name: str, **labels: str) -> float:
    return sum(value for (sample, found), value in samples.items()
               if sample == name and set(labels.items()) <= set(found))


def _stream_records(samples: Samples) -> dict[tuple[str, str], float]:
    """llm_records_total of each stream, keyed (model, route)."""
    return {(dict(found)["model"], dict(found)["route"]): value
            for (sample, found), value in samples.items() if sample == "llm_records_total"}


def _per_stream(keyed: Iterable[Keyed]) -> Counter[tuple[str, str]]:
    """Records per stream of valid traffic, from its keys (the stream-label values)."""
    return Counter(tuple(orjson.loads(key)) for key, _ in keyed if key is not None)


def _ready(member: ExporterProcess) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(member.url("/-/ready"), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _signals_ready(member: ExporterProcess) -> dict[tuple[str, str], set[str]]:
    """The signals whose baseline is ready, per stream (model, route)."""
    return {(view["labels"]["model"], view["labels"]["route"]):
            {name for name, signal in view["signals"].items() if signal["baseline_ready"]}
            for view in get_json(member, "/api/v1/streams")["streams"]}


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """The group's committed offsets of `topic`, summed (records covered by checkpoints)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,  # (it never
                         "logger": RDKAFKA_LOG})  # subscribes: not a member of the group)
    try:
        found = consumer.committed([TopicPartition(topic, n) for n in range(partitions)], 10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in found)


def _read_changelog(bootstrap: str, topic: str, partitions: int) -> dict[bytes, Message]:
    """The newest committed message of each key of the changelog topic (librdkafka's
    isolation.level is read_committed unless told otherwise)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": _unique("peek"),
                         "enable.partition.eof": True, "logger": RDKAFKA_LOG})
    newest: dict[bytes, Message] = {}
    try:
        consumer.assign([TopicPartition(topic, n, -2) for n in range(partitions)])
        pending, deadline = set(range(partitions)), time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(10_000, timeout=0.5):
                if message.error() is None:
                    newest[message.key()] = message
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
        assert not pending, f"changelog partitions {pending} not read to their end"
    finally:
        consumer.close()
    return newest


def _stop(members: Iterable[ExporterProcess]) -> None:
    for member in members:
        if member.process.poll() is None:
            assert member.stop(60) == 0, member.log_path.read_text()[-3000:]


def _caught_up(config: Path, workdir: Path, name: str, count: int, partitions: int
               ) -> tuple[Samples, dict[tuple[str, str], set[str]], ExporterProcess]:
    """A member run until caught up, then stopped (SIGTERM: it checkpoints): its samples,
    its streams' ready baselines, and it."""
    member = start_member(config, workdir, name)
    try:
        wait_caught_up([member], count, partitions, timeout=120)
        return member.samples(), _signals_ready(member), member
    finally:
        _stop([member])


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test's own, for tests that take it down."""
    broker = KafkaBroker()
    broker.start(tmp_path / "kafka")
    yield broker  # (what follows runs however the test ended)
    broker.stop()


# --- 1. poison messages ------------------------------------------------------------------
def _chat(model: str, route: str, content: str) -> bytes:
    return orjson.dumps({
        "route": route,
        "request": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
        "response": {"object": "chat.completion", "model": model,
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": content}}]},
    })


# (how it is keyed, the reason it is rejected for or None when it is valid, the value)
POISON: list[tuple[str, str | None, bytes | None]] = [
    ("keyed", "invalid_json", b'{"route": "/chat", "response": {"choices": ['),
    ("keyed", "invalid_utf8", b'{"route": "/\xff\xfe"}'),
    ("keyed", "unknown_format", b'{"hello": "world"}'),
    ("keyed", "unknown_format", b"[1, 2, 3]"),
    ("keyed", "empty_body", b""),
    ("keyed", "empty_body", None),  # a tombstone, on a topic that is not compacted
    ("keyed", "too_large", _chat("model-0", "/route-0", "refund " * 700)),  # valid, 4.9 KB
    ("unkeyed", "invalid_json", b"not json at all"),
    # the key only places a record; its stream comes from its labels, as for any input
    ("unkeyed", None, _chat("model-unkeyed", "/unkeyed", "a reply without a key")),
]


def _with_poison(valid: list[tuple[bytes, bytes]], every: int
                 ) -> tuple[list[Keyed], Counter[str], Counter[tuple[str, str]]]:
    """The valid records with a poison message after every `every`-th, cycling through
    POISON; the expected rejections by reason and records per stream."""
    mixed: list[Keyed] = []
    reasons: Counter[str] = Counter()
    streams = _per_stream(valid)
    for n, (key, value) in enumerate(valid):
        mixed.append((key, value))
        if n % every == every - 1:
            kind, reason, poison = POISON[(n // every) % len(POISON)]
            mixed.append((key if kind == "keyed" else None, poison))
            if reason is None:
                streams[("model-unkeyed", "/unkeyed")] += 1
            else:
                reasons[reason] += 1
    return mixed, reasons, streams


def test_poison_messages_cost_only_themselves(kafka_broker: KafkaBroker, tmp_path: Path
                                              ) -> None:
    topic, partitions = _unique("poison"), 3
    kafka_broker.create_topic(topic, partitions)
    mixed, reasons, expected = _with_poison(list(records(3000, 9, seed=5)), every=40)
    assert set(reasons) == {r for _, r, _ in POISON if r} and len(mixed) - 3000 == 75
    delivered = produce_keyed(kafka_broker.bootstrap, topic, mixed)
    poisoned = {m.partition() for m in delivered if m.value() in {v for _, _, v in POISON}}
    assert poisoned == set(range(partitions)), "poison in every partition"
    first = sum(expected.values())
    later = list(records(600, 9, seed=6))  # after the last poison message of each partition
    expected += _per_stream(later)

    config = member_config(tmp_path, kafka_broker.bootstrap, topic, _unique("poison"),
                           f"    max_message_bytes: {MAX_MESSAGE_BYTES}\n")
    member = start_member(config, tmp_path, "poison")
    try:
        wait_caught_up([member], first, partitions, timeout=120)
        produce_keyed(kafka_broker.bootstrap, topic, later)
        wait_caught_up([member], sum(expected.values()), partitions, timeout=120)
        samples = member.samples()
    finally:
        _stop([member])

    assert _stream_records(samples) == expected  # every valid record exactly once
    assert {dict(found)["reason"]: value for (name, found), value in samples.items()
            if name == "llm_records_rejected_total" and value} == reasons
    assert (_total(samples, "llm_exporter_input_records_total", input="kafka"),
            _total(samples, "llm_exporter_input_records_rejected_total", input="kafka")
            ) == (sum(expected.values()), sum(reasons.values()))
    assert _total(samples, "llm_exporter_kafka_duplicates_skipped_total") == 0


# --- 2. the broker goes away ----------------------------------------------------------
def _outage_watch(member: ExporterProcess, seconds: float) -> dict[str, list]:
    """Scrape /metrics and /-/ready for `seconds`: the scrapes' times (a failed one
    counts with its time, connected None), `llm_exporter_kafka_connected`, readiness."""
    seen: dict[str, list] = {"scrape": [], "ready": [], "connected": []}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started, samples = time.perf_counter(), {}
        with contextlib.suppress(OSError):  # e.g. timed out after 30 s
            samples = member.samples()
        seen["scrape"].append(round(time.perf_counter() - started, 3))
        seen["connected"].append(_total(samples, CONNECTED) if samples else None)
        seen["ready"].append(_ready(member))
        time.sleep(0.3)
    return seen


@pytest.mark.slow
def test_a_broker_outage_is_reported_and_recovered_from(own_broker: KafkaBroker,
                                                        tmp_path: Path) -> None:
    """Every problem of the outage is collected, so that one does not hide the next."""
    topic, partitions, problems = _unique("outage"), 6, []
    own_broker.create_topic(topic, partitions)
    before, after = list(records(40_000, 12, seed=7)), list(records(8000, 12, seed=8))
    expected = _per_stream(before) + _per_stream(after)
    produce_keyed(own_broker.bootstrap, topic, before)
    config = member_config(tmp_path, own_broker.bootstrap, topic, _unique("outage"))
    member = start_member(config, tmp_path, "outage")
    try:
        assert wait_for(lambda: _total(member.samples(), "llm_records_total") >= 8000, 120)
        own_broker.kill()  # mid-run: records fetched and not yet checkpointed
        seen = _outage_watch(member, 15.0)
        if max(seen["scrape"]) >= SCRAPE_BOUND:
            problems.append(f"/metrics took {seen['scrape']} s with the broker down")
        if seen["ready"][-1][0] != 503 or "Kafka" not in seen["ready"][-1][1]:
            problems.append(f"/-/ready with the broker down: {seen['ready'][-1]!r}")
        if seen["connected"][-1] != 0:
            problems.append(f"{CONNECTED} with the broker down: {seen['connected']}")
        own_broker.restart()  # ... and back: it reconnects by itself
        restarted = _total(member.samples(), "llm_exporter_kafka_checkpoints_total")
        produce_keyed(own_broker.bootstrap, topic, after)
        assert wait_for(lambda: _ready(member)[0] == 200, 120), f"{_ready(member)!r}"
        wait_caught_up([member], sum(expected.values()), partitions, timeout=180)
        samples = member.samples()
        assert _stream_records(samples) == expected  # nothing lost, nothing doubled
        assert _total(samples, CONNECTED) == 1
        if not wait_for(lambda: _total(member.samples(), "llm_exporter_kafka_checkpoints_total")
                        > restarted, 30):
            problems.append("no checkpoint committed in 30 s after the outage")
    finally:
        _stop([member])

    # what it saved is whole: a new member resumes from it, counting nothing again
    samples, _, _ = _caught_up(config, tmp_path, "resumed", sum(expected.values()), partitions)
    assert _stream_records(samples) == expected
    assert _total(samples, "llm_exporter_kafka_changelog_restores_total") == len(expected)
    assert _total(samples, "llm_exporter_kafka_changelog_restore_failures_total") == 0
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_ready_again_after_an_outage_with_no_traffic(own_broker: KafkaBroker,
                                                     tmp_path: Path) -> None:
    """Readiness follows the connection, not the traffic: a quiet topic's member is ready
    again once the broker is back, before any new record arrives; also when the outage was
    shorter than its session, so that it kept its partitions (no new assignment)."""
    topic, partitions = _unique("quiet"), 3
    own_broker.create_topic(topic, partitions)
    traffic, group = list(records(2000, 6, seed=9)), _unique("quiet")
    produce_keyed(own_broker.bootstrap, topic, traffic)
    config = member_config(tmp_path, own_broker.bootstrap, topic, group)
    config.write_text(re.sub("session_timeout: .*", "session_timeout: 60", config.read_text()))
    member = start_member(config, tmp_path, "quiet")
    try:
        wait_caught_up([member], len(traffic), partitions, timeout=120)
        # killed between checkpoints, not within one: the outage alone is what is tested
        assert wait_for(lambda: _committed(own_broker.bootstrap, group, topic, partitions)
                        == len(traffic), 30)
        own_broker.kill()
        assert wait_for(lambda: _ready(member)[0] == 503, 30), f"{_ready(member)!r}"
        own_broker.restart()
        assert wait_for(lambda: _ready(member)[0] == 200, 50), f"{_ready(member)!r}"
        samples = member.samples()
        assert _total(samples, CONNECTED) == 1
        assert _total(samples, "llm_exporter_kafka_rebalances_total") == 1  # kept its own
    finally:
        _stop([member])


# --- 3. a corrupt changelog entry ---------------------------------------------------------
def test_a_corrupt_changelog_entry_costs_only_its_stream(kafka_broker: KafkaBroker,
                                                         tmp_path: Path) -> None:
    topic, partitions, streams = _unique("corrupt"), 6, 12
    kafka_broker.create_topic(topic, partitions)
    first, later = list(records(15_000, streams, seed=10)), list(records(900, streams, seed=11))
    home = {m.key(): m.partition() for m in produce_keyed(kafka_broker.bootstrap, topic, first)}
    group = _unique("corrupt")
    config = member_config(tmp_path, kafka_broker.bootstrap, topic, group)
    _, ready_before, _ = _caught_up(config, tmp_path, "before", len(first), partitions)

    saved = _read_changelog(kafka_broker.bootstrap, f"{group}-changelog", partitions)
    garbage, missing_slot, wrong_shape = (stream_labels(i) for i in range(3))
    damage: list[tuple[Message, bytes | None]] = []
    for labels, body in ((garbage, b"\x00not a stream state{"),
                         (wrong_shape, b'{"counters": {"records": "many"}, "x": 1}')):
        document = saved[b"s" + orjson.dumps(list(labels))]
        # its home: the changelog partition numbered like its input partition
        assert document.partition() == home[orjson.dumps(list(labels))]
        damage.append((document, body))
    key = orjson.dumps(list(missing_slot)).decode()
    slots = sorted(k for k in saved if k[:1] == b"p" and parse_slot_key(k)[0] == key)
    assert slots, f"stream {missing_slot} saved no part"
    damage.append((saved[slots[0]], None))  # a slot gone: its part is cut short
    _overwrite(kafka_broker.bootstrap, damage)
    produce_keyed(kafka_broker.bootstrap, topic, later)

    corrupt = {garbage, missing_slot, wrong_shape}
    expected = _per_stream(later) + Counter(
        {s: n for s, n in _per_stream(first).items() if s not in corrupt})
    samples, ready_after, member = _caught_up(config, tmp_path, "after",
                                              sum(expected.values()), partitions)
    assert _stream_records(samples) == expected  # the corrupt ones start over
    assert _total(samples, "llm_exporter_kafka_changelog_restores_total") == streams - 3
    assert _total(samples, "llm_exporter_kafka_changelog_restore_failures_total") == 3
    for labels in corrupt:  # re-learning: no baseline from the lost state
        assert ready_after[labels] == set(), f"{labels} kept baselines {ready_after[labels]}"
    for labels, signals in ready_before.items():
        if labels not in corrupt:
            assert signals <= ready_after[labels], f"{labels} lost baselines"
    errors = [line for line in member.log_path.read_text().splitlines()
              if "level=ERROR" in line]
    for model, route in corrupt:
        assert any(model in line and route in line for line in errors), \
            f"no ERROR line names stream {(model, route)}: {errors}"


def _overwrite(bootstrap: str, damage: list[tuple[Message, bytes | None]]) -> None:
    """Write a new value over each message with a plain producer: same topic, partition
    and key, and its headers (so only the body is bad); None deletes the key."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "logger": RDKAFKA_LOG})
    for message, value in damage:
        producer.produce(message.topic(), value, message.key(), partition=message.partition(),
                         headers=message.headers() if value is not None else None)
    assert producer.flush(30) == 0


# --- 4. members killed mid-run ------------------------------------------------------------
def _feed(bootstrap: str, topic: str, traffic: list[tuple[bytes, bytes]], chunk: int,
          pause: float) -> None:
    """Produce `traffic` in chunks with pauses (in a thread), so members are killed while
    records keep arriving and every checkpoint has much to save."""
    for start in range(0, len(traffic), chunk):
        produce_keyed(bootstrap, topic, traffic[start:start + chunk])
        time.sleep(pause)


@pytest.mark.slow
def test_members_killed_mid_checkpoint_are_replaced_exactly(kafka_broker: KafkaBroker,
                                                            tmp_path: Path) -> None:
    topic, partitions = _unique("sigkill"), 12
    kafka_broker.create_topic(topic, partitions)
    traffic = list(records(160_000, 300, seed=12))  # 300 streams: every checkpoint is large
    config = member_config(tmp_path, kafka_broker.bootstrap, topic, _unique("sigkill"))
    feeder = ThreadPoolExecutor(1)
    feeding = feeder.submit(_feed, kafka_broker.bootstrap, topic, traffic, 2000, 0.5)
    members: list[ExporterProcess] = []
    try:
        for n in range(2):
            member = start_member(config, tmp_path, f"killed-{n}")
            members.append(member)
            assert wait_for(lambda m=member: _total(  # a few seconds into its run
                m.samples(), "llm_exporter_kafka_checkpoints_total") >= 4, 120)
            member.kill()  # no checkpoint, no goodbye; most likely within a transaction
        survivor = start_member(config, tmp_path, "survivor")
        members.append(survivor)
        feeding.result(300)  # (raises what the feeder raised)
        wait_caught_up([survivor], len(traffic), partitions, timeout=300)
        samples = survivor.samples()
    finally:
        feeder.shutdown(wait=False, cancel_futures=True)
        _stop(members)
    assert _stream_records(samples) == _per_stream(traffic)  # nothing lost or counted twice
    assert _total(samples, "llm_exporter_kafka_changelog_restores_total") == 300
    assert _total(samples, "llm_exporter_kafka_changelog_restore_failures_total") == 0
    assert ("llm_exporter_kafka_duplicates_skipped_total", (("input", "kafka"),)) in samples
