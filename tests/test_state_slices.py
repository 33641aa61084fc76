"""A checkpoint made a slice of streams at a time (`StateStore.checkpoint_in_slices`): the
event loop is free between slices, and what runs meanwhile (records ingested, a stream
admitted or dropped) still ends in a checkpoint that describes the moment it ended."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from exporter.streams import state as state_module
from exporter.streams.state import StateStore
from tests.state_helpers import snapshots
from tests.test_state_store import STREAMS, check_tables, feed, keyed, make_pipeline, restored


@pytest.fixture
def one_stream_a_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "MAKE_SLICE", 0.0)  # each slice makes one stream


async def test_the_loop_runs_between_slices(tmp_path: Path, one_stream_a_slice: None) -> None:
    pipeline = make_pipeline()
    for stream in STREAMS:
        feed(pipeline, stream, 12)
    store = StateStore(tmp_path)
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other_task())
    changes = await store.checkpoint_in_slices(pipeline, lambda: {})
    task.cancel()
    assert set(changes.streams) and turns >= len(STREAMS) - 1
    assert store.commit(changes)
    store.close()


async def test_what_runs_between_slices_is_in_the_checkpoint(
        tmp_path: Path, one_stream_a_slice: None) -> None:
    """Records for a stream already made, a stream admitted and one dropped while the
    checkpoint is made: restored, the store equals the pipeline when the checkpoint ended,
    and the positions are those of that moment."""
    pipeline = make_pipeline()
    for index, stream in enumerate(STREAMS):
        feed(pipeline, stream, 40, kind=index % 2)  # past the baseline: thresholds and all
    store = StateStore(tmp_path)
    assert store.commit(store.checkpoint(pipeline, {"in": 1}))
    for stream in STREAMS:
        feed(pipeline, stream, 3, start=40)  # every stream changed since
    read = {"in": 2}
    first = next(iter(pipeline.streams)).labels

    async def meanwhile() -> None:  # starts after the first slice (first stream made)
        feed(pipeline, first, 5, start=43)
        feed(pipeline, ("m9", "/a"), 5)
        read["in"] = 3
        await asyncio.sleep(0)
        del pipeline.streams._streams[STREAMS[3]]  # (no expiry yet: as one would drop it)
        read["in"] = 4

    task = asyncio.create_task(meanwhile())
    changes = await store.checkpoint_in_slices(pipeline, lambda: dict(read))
    await task
    assert store.commit(changes)
    expected = keyed(snapshots(pipeline))  # nothing ran since the checkpoint ended
    store.close()
    assert STREAMS[3] not in expected and ("m9", "/a") in expected
    _, back, positions = restored(tmp_path)
    assert positions == {"in": 4}
    assert keyed(snapshots(back)) == expected
    check_tables(tmp_path, pipeline)


async def test_a_stream_made_again_in_one_checkpoint_keeps_its_parts_right(
        tmp_path: Path, one_stream_a_slice: None) -> None:
    """A stream made twice in one checkpoint (it learned on meanwhile, its baseline grew)
    writes the slots new since the previous checkpoint, not since its first making."""
    pipeline = make_pipeline(baseline_size=200)
    store = StateStore(tmp_path)
    for stream in STREAMS:
        feed(pipeline, stream, 10)
    assert store.commit(store.checkpoint(pipeline, {}))
    first = next(iter(pipeline.streams)).labels
    feed(pipeline, first, 70, start=10)  # its growing baseline: new blocks

    async def meanwhile() -> None:
        feed(pipeline, first, 70, start=80)  # more blocks, after it was made once

    task = asyncio.create_task(meanwhile())
    changes = await store.checkpoint_in_slices(pipeline, lambda: {})
    await task
    assert store.commit(changes)
    expected = keyed(snapshots(pipeline))
    store.close()
    _, back, _ = restored(tmp_path, baseline_size=200)
    assert keyed(snapshots(back)) == expected
    check_tables(tmp_path, pipeline)


async def test_a_checkpoint_cancelled_between_slices_makes_the_next_one_whole(
        tmp_path: Path, one_stream_a_slice: None) -> None:
    """Streams made before a cancellation (a shutdown) count as saved in the checkpointer's
    memory but were never committed: the next checkpoint must save everything."""
    pipeline = make_pipeline()
    for stream in STREAMS:
        feed(pipeline, stream, 12)
    store = StateStore(tmp_path)
    assert store.commit(store.checkpoint(pipeline, {}))
    for stream in STREAMS:
        feed(pipeline, stream, 2, start=12)
    task = asyncio.create_task(store.checkpoint_in_slices(pipeline, lambda: {}))
    await asyncio.sleep(0)  # the first slice is made
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    changes = store.checkpoint(pipeline, {})
    assert changes.replace_all and len(changes.streams) == len(STREAMS)
    assert store.commit(changes)
    expected = keyed(snapshots(pipeline))
    store.close()
    _, back, _ = restored(tmp_path)
    assert keyed(snapshots(back)) == expected
