"""Exporter processes as members of one Kafka consumer group, on a real broker: what they
serve together equals what one process serves after reading the same records, while one
member is SIGKILLed and another joins mid-run."""

from __future__ import annotations

import time
from collections import Counter

import orjson
import pytest

from benchmarks.kafka_traffic import records
from tests.kafka_broker import KafkaBroker, produce_keyed
from tests.kafka_members import (
    differences,
    member_config,
    progress,
    start_member,
    stream_series,
    streams_of,
    wait_caught_up,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
LABELS = ("model", "route")
PARTITIONS = 12


def _topic(broker: KafkaBroker, name: str, count: int, streams: int, seed: int) -> None:
    broker.create_topic(name, PARTITIONS)
    produce_keyed(broker.bootstrap, name, records(count, streams, seed=seed))


def test_a_group_with_a_kill_and_a_join_serves_what_one_process_does(kafka_broker, tmp_path):
    count, streams = 200_000, 48
    _topic(kafka_broker, "llm-e2e", count, streams, seed=11)

    single = start_member(member_config(tmp_path, kafka_broker.bootstrap, "llm-e2e", "single"),
                          tmp_path, "single")
    try:
        wait_caught_up([single], count, PARTITIONS)
        expected = streams_of([single])
        expected_series = stream_series([single], LABELS)
    finally:
        assert single.stop(60) == 0

    config = member_config(tmp_path, kafka_broker.bootstrap, "llm-e2e", "group")
    members = [start_member(config, tmp_path, f"member-{i}") for i in range(3)]
    try:
        _wait_records(members, count // 4)
        members[1].kill()  # no checkpoint, no goodbye: its partitions move after the session
        _wait_records([members[0], members[2]], count // 2)
        members.append(start_member(config, tmp_path, "member-3"))  # joins mid-run
        live = [members[0], members[2], members[3]]
        wait_caught_up(live, count, PARTITIONS)
        got = streams_of(live)
        got_series = stream_series(live, LABELS)
        owned = [progress(m)["partitions"] for m in live]
    finally:
        for member in members:
            if member.process.poll() is None:
                assert member.stop(60) == 0

    assert len(expected) == streams and sorted(got) == sorted(expected)
    assert all(owned), f"a live member owns no partition: {owned}"
    differing = {key: differences(got[key], view)[:5] for key, view in expected.items()
                 if got[key] != view}
    assert not differing, f"{len(differing)} stream(s) differ: {differing}"
    # no baseline learned twice: each signal's baseline became ready at the same record
    assert got_series == expected_series


def _wait_records(members, at_least: int, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(progress(m)["records"] for m in members) >= at_least:
            return
        time.sleep(0.2)
    raise TimeoutError(f"fewer than {at_least} records after {timeout} s")


def test_repartition_gives_each_stream_of_an_unkeyed_topic_one_owner(kafka_broker, tmp_path):
    """Records produced without a key land in every partition; with `repartition: true` the
    members forward them keyed by stream, so each stream has one owner that sees all of it."""
    count, streams = 20_000, 24
    lines = list(records(count, streams, seed=12))
    kafka_broker.create_topic("llm-unkeyed", PARTITIONS)
    produce_keyed(kafka_broker.bootstrap, "llm-unkeyed", [(None, line) for _, line in lines])
    config = member_config(tmp_path, kafka_broker.bootstrap, "llm-unkeyed", "repartitioned",
                           extra="    repartition: true\n")
    members = [start_member(config, tmp_path, f"member-{i}") for i in range(2)]
    try:
        wait_caught_up(members, count, PARTITIONS)
        got = streams_of(members)  # (fails if a stream is served by two members)
        forwarded = sum(v for m in members for (n, _), v in m.samples().items()
                        if n == "llm_exporter_kafka_repartitioned_records_total")
    finally:
        for member in members:
            assert member.stop(60) == 0
    expected = Counter(tuple(sorted(zip(LABELS, orjson.loads(key), strict=True)))
                       for key, _ in lines)
    assert {key: view["records"] for key, view in got.items()} == dict(expected)
    assert forwarded == count
