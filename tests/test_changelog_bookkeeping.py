"""What a member knows it wrote to its changelog decides which slots a later checkpoint
deletes. A checkpoint that aborts deleted nothing: if the member believed it had, a later
document with a shorter part would be read with the old slots still behind it (found by the
broker-outage test, where a commit timed out and was aborted). No broker is needed: these
are the messages a checkpoint would write, before any is sent."""

from __future__ import annotations

import numpy as np

from exporter.config import KafkaInputConfig
from exporter.streams.changelog import Changelog, _Written
from exporter.streams.changelog_topic import parse_slot_key
from exporter.streams.store import Changes, PartChange

HOMES = {"s": "llm/0"}
ROW = np.zeros(4)


def _changelog() -> Changelog:
    config = KafkaInputConfig(name="kafka", bootstrap_servers="127.0.0.1:9", topics=("llm",))
    return Changelog(config, "bookkeeping-test", {})


def _checkpoint(changelog: Changelog, change: PartChange, committed: bool
                ) -> list[tuple[int, bytes | None]]:
    """(slot, value) of the slot messages a checkpoint of `change` writes."""
    written = _Written()
    messages = list(changelog._messages(Changes(positions={}, parts=[change]), HOMES, written))
    changelog._settle(written, committed)
    return [(parse_slot_key(key)[2], value) for _, key, value, _ in messages]


def test_an_aborted_shrink_is_written_again() -> None:
    changelog = _changelog()
    try:
        _checkpoint(changelog, PartChange("s", "p", 3, dict.fromkeys(range(3), ROW)), True)
        shrink = PartChange("s", "p", 0, {}, shrunk=True)
        assert _checkpoint(changelog, shrink, committed=False) == [(0, None), (1, None), (2, None)]
        # the deletions never happened: the next checkpoint makes them again
        assert _checkpoint(changelog, shrink, committed=True) == [(0, None), (1, None), (2, None)]
        assert _checkpoint(changelog, shrink, committed=True) == []
    finally:
        changelog.close()


def test_an_aborted_growth_is_deleted_too_when_the_part_shrinks() -> None:
    changelog = _changelog()
    try:
        _checkpoint(changelog, PartChange("s", "p", 2, dict.fromkeys(range(2), ROW)), False)
        # the aborted slots may not exist; deleting them anyway is harmless
        deleted = _checkpoint(changelog, PartChange("s", "p", 1, {0: ROW}, shrunk=True), True)
        assert [slot for slot, value in deleted if value is None] == [1]
    finally:
        changelog.close()
