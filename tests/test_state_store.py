"""The state store as a whole, against the real SQLite file: checkpoints are incremental
(a learned stream costs its running JSON, a quiet stream nothing), the file holds exactly
what the live streams reference (no orphan part rows after resets and re-learning), and a
`detectors.json` of the one-document version is imported once.

Also the helpers the other state-store test modules share (`test_state_faults.py`,
`test_state_properties.py`): records for several streams, and `check_tables`, which reads
the database directly."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.config import parse_config
from exporter.detectors.calibration import CalibrationCache
from exporter.inputs.stats import InputStats
from exporter.streams.checkpoint import GROWING_BLOCK, stream_key
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore, settings_of
from exporter.streams.store import DATABASE
from tests import samples
from tests.state_helpers import as_saved_before, snapshots

DETECTORS = {"baseline_size": 30, "window_size": 10, "expected_run_time": 1000}
# /a is checked for JSON, so its streams have all four detectors; /b's never see format_validity
CONFIG: dict[str, Any] = {
    "detectors": DETECTORS,
    "signals": {"format_validity": [{"match": {"route": "/a"}, "expect": "json"}]},
}
STREAMS = [("m0", "/a"), ("m1", "/a"), ("m0", "/b"), ("m2", "/b")]


# Thresholds are pure functions of their keys (`CalibrationCache`): the tests' pipelines share
# one cache, so each simulates a rank or Bernoulli threshold once, not once per pipeline.
CACHE = CalibrationCache()


def make_pipeline(baseline_size: int = DETECTORS["baseline_size"], **kwargs: Any) -> Pipeline:
    """A pipeline of CONFIG (another baseline size: the same for every pipeline that reads
    the same store, or it would not restore)."""
    config = {**CONFIG, "detectors": {**DETECTORS, "baseline_size": baseline_size}}
    pipeline = Pipeline(parse_config(config), **kwargs)
    pipeline.detector_factory.cache = CACHE
    return pipeline


def batch(stream: tuple[str, str], count: int, kind: int = 0, start: int = 0) -> list[dict]:
    """`count` records of one stream; `kind` 0 prose, 1 JSON, 2 refusals, 3 long prose.
    Lengths vary with the record number so the rank baselines are not constant."""
    model, route = stream
    out = []
    for i in range(start, start + count):
        if kind == 1:
            text = orjson.dumps({"answer": i % 7, "items": list(range(i % 4))}).decode()
        elif kind == 2:
            text = "I'm sorry, but I can't help with that request."
        else:
            text = f"Answer number {i} about {model}: " + "word " * (i % 9 + 12 * (kind == 3))
        record = samples.chat(model=model, route=route, text=text)
        record["response"]["usage"]["completion_tokens"] = 3 + (i * 7) % 40 + 25 * (kind == 3)
        out.append(record)
    return out


def feed(pipeline: Pipeline, stream: tuple[str, str], count: int, kind: int = 0,
         start: int = 0) -> None:
    assert pipeline.ingest_values(batch(stream, count, kind, start),
                                  InputStats("t", "test")).accepted == count


class Gate:
    """A calibration executor whose one thread is held until `open_and_settle`."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, "gated-calibration")
        self.event = threading.Event()
        self.executor.submit(self.event.wait)

    def open_and_settle(self, pipeline: Pipeline) -> None:
        self.event.set()
        while pipeline.calibrating():
            pipeline.settle(wait=True)
        self.event = threading.Event()
        self.executor.submit(self.event.wait)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.event.set()


def keyed(entries: list[dict[str, Any]]) -> dict[tuple[str, ...], Any]:
    """`snapshots(...)` by labels: a restored pipeline admits streams in the store's order."""
    return {tuple(e["labels"]): e["detectors"] for e in entries}


def restored(state_dir: Path, **kwargs: Any) -> tuple[StateStore, Pipeline, dict[str, Any]]:
    """A fresh store on `state_dir`, restored into a fresh pipeline: (store, pipeline,
    positions). Every saved stream must come back."""
    store = StateStore(state_dir)
    pipeline = make_pipeline(**kwargs)
    positions, entries = store.open(pipeline)
    assert store.restore(pipeline, entries) == len(entries)
    return store, pipeline, positions


def _references(key: str, value: Any, found: dict[tuple[str, str], int]) -> None:
    """The part slots a stream document references: rows one a slot, growing arrays in
    blocks of GROWING_BLOCK values."""
    if not isinstance(value, dict):
        return
    if "$rows" in value:
        found[(key, value["$rows"])] = value["n"]
    elif "$growing" in value:
        found[(key, value["$growing"])] = -(-value["n"] // GROWING_BLOCK)
    else:
        for item in value.values():
            _references(key, item, found)


def check_tables(state_dir: Path, pipeline: Pipeline) -> dict[str, int]:
    """Read the database directly: one `streams` row per live stream and `parts` rows for
    exactly the slots those rows reference (0..n-1, nothing orphaned, nothing missing).
    Returns the row counts."""
    db = sqlite3.connect(f"file:{state_dir / DATABASE}?mode=ro", uri=True)  # a reader
    try:
        documents = dict(db.execute("SELECT stream, state FROM streams"))
        groups = {(s, p): (n, low, high) for s, p, n, low, high in db.execute(
            "SELECT stream, part, COUNT(*), MIN(slot), MAX(slot) FROM parts GROUP BY stream, part")}
        total = db.execute("SELECT COUNT(*) FROM parts").fetchone()[0]
    finally:
        db.close()
    live = {stream_key(s.labels) for s in pipeline.streams if s.detectors is not None}
    assert set(documents) == live
    wanted: dict[tuple[str, str], int] = {}
    for key, state in documents.items():
        _references(key, orjson.loads(state), wanted)
    orphans = set(groups) - {ref for ref, n in wanted.items() if n}
    assert not orphans, f"part rows nothing references: {sorted(orphans)}"
    for ref, n in wanted.items():
        if n:
            assert groups.get(ref) == (n, 0, n - 1), (ref, n, groups.get(ref))
    return {"streams": len(documents), "parts": total}


def parts_of(changes: Any, labels: tuple[str, ...]) -> list[Any]:
    return [p for p in changes.parts if p.stream == stream_key(labels)]


# --- incremental checkpoints ---------------------------------------------------------
def test_learned_streams_write_only_their_running_state(tmp_path: Path) -> None:
    """Once a stream's baselines are learned and saved, its checkpoints carry its running
    JSON and no part slot; a stream that got no records is not in the checkpoint at all."""
    pipeline = make_pipeline()
    store = StateStore(tmp_path)
    learned, learning, quiet = STREAMS[0], STREAMS[1], STREAMS[2]
    feed(pipeline, learned, 40, kind=1)
    feed(pipeline, learning, 12)
    feed(pipeline, quiet, 5)
    assert store.commit(store.checkpoint(pipeline, {"in": 1}))
    feed(pipeline, learned, 15, kind=1, start=40)
    feed(pipeline, learning, 5, start=12)
    changes = store.checkpoint(pipeline, {"in": 2})
    assert not changes.replace_all
    assert set(changes.streams) == {stream_key(learned), stream_key(learning)}
    assert parts_of(changes, learned) == []
    # the learning stream writes only what its baselines grew by
    grown = parts_of(changes, learning)
    assert grown and all(len(p.slots) <= 5 for p in grown)
    assert store.commit(changes)
    check_tables(tmp_path, pipeline)
    again = store.checkpoint(pipeline, {"in": 2})
    assert (again.streams, again.parts, again.deleted) == ({}, [], [])
    assert store.unchanged(again)
    store.close()
    _, back, positions = restored(tmp_path)
    assert positions == {"in": 2}
    assert keyed(snapshots(back)) == keyed(snapshots(pipeline))


def test_store_size_follows_the_streams_not_the_checkpoints(tmp_path: Path) -> None:
    """Many checkpoints, resets and re-learnt baselines later the file holds the live
    streams' rows and the parts they reference, no more: the same row counts as a single
    checkpoint of the same state made by a fresh store."""
    pipeline = make_pipeline()
    store = StateStore(tmp_path / "long")
    for round_ in range(12):
        for n, stream in enumerate(STREAMS):
            feed(pipeline, stream, 7 + 3 * n, kind=(round_ + n) % 4, start=round_ * 20)
        if round_ % 3 == 1:
            pipeline.streams.reset_matching({"model": "m0"})
        if round_ % 4 == 2:
            pipeline.streams.reset_matching({"route": "/b"}, ("embedding",))
        assert store.commit(store.checkpoint(pipeline, {"in": round_}))
        counts = check_tables(tmp_path / "long", pipeline)
        assert counts["streams"] == len(STREAMS)
    once = StateStore(tmp_path / "once")
    assert once.save(pipeline, {"in": 11})
    assert check_tables(tmp_path / "once", pipeline) == counts
    store.close()
    _, back, _ = restored(tmp_path / "long")
    assert keyed(snapshots(back)) == keyed(snapshots(pipeline))


def test_a_calibration_taken_in_is_saved(tmp_path: Path) -> None:
    """A calibration that finishes changes the stream with no record arriving: the next
    checkpoint must carry it, parts and all (the held observations go, the learned arrays
    come)."""
    gate = Gate()
    try:
        pipeline = make_pipeline(calibration=gate.executor)
        store = StateStore(tmp_path)
        feed(pipeline, STREAMS[0], 36, kind=1)
        assert pipeline.calibrating()
        assert store.commit(store.checkpoint(pipeline, {}))
        gate.open_and_settle(pipeline)
        changes = store.checkpoint(pipeline, {})
        assert set(changes.streams) == {stream_key(STREAMS[0])} and parts_of(changes, STREAMS[0])
        assert store.commit(changes)
        check_tables(tmp_path, pipeline)
        _, back, _ = restored(tmp_path)
        assert not back.calibrating()
        assert keyed(snapshots(back)) == keyed(snapshots(pipeline))
    finally:
        gate.close()


def test_a_long_growing_baseline_reset_and_grown_again_is_rewritten(tmp_path: Path) -> None:
    """A rank baseline longer than one saved block, reset and re-learnt longer still: the
    new array is written from its first block, not from where the old one stopped."""
    pipeline = make_pipeline(baseline_size=5000)
    store = StateStore(tmp_path)
    feed(pipeline, STREAMS[0], 2 * GROWING_BLOCK + 10)
    assert store.commit(store.checkpoint(pipeline, {}))
    pipeline.streams.reset_matching({"model": "m0"})
    feed(pipeline, STREAMS[0], 3 * GROWING_BLOCK, kind=3, start=7)
    assert store.commit(store.checkpoint(pipeline, {}))
    check_tables(tmp_path, pipeline)
    back = make_pipeline(baseline_size=5000)
    reader = StateStore(tmp_path)
    assert reader.restore(back, reader.open(back)[1]) == 1
    assert keyed(snapshots(back)) == keyed(snapshots(pipeline))


def test_a_reset_rewrites_the_baseline_that_learns_again(tmp_path: Path) -> None:
    """A reset baseline learns into new arrays: a store that compared only lengths would
    keep the old values in the slots the new ones reach."""
    pipeline = make_pipeline()
    store = StateStore(tmp_path)
    stream = STREAMS[0]
    feed(pipeline, stream, 20)  # learning: 20 values in the rank baseline
    assert store.commit(store.checkpoint(pipeline, {}))
    pipeline.streams.reset_matching({"model": "m0"})
    feed(pipeline, stream, 25, kind=3, start=500)  # other values, further than before
    assert store.commit(store.checkpoint(pipeline, {}))
    check_tables(tmp_path, pipeline)
    _, back, _ = restored(tmp_path)
    assert keyed(snapshots(back)) == keyed(snapshots(pipeline))


# --- the one-document detectors.json of earlier versions ---------------------------------
def legacy_document(pipeline: Pipeline, positions: dict[str, Any]) -> bytes:
    streams = []
    for entry in snapshots(pipeline):
        detectors = entry["detectors"]
        old = {s: as_saved_before(d) for s, d in detectors["detectors"].items()}
        streams.append({"labels": entry["labels"], "detectors": {**detectors, "detectors": old}})
    return orjson.dumps({"version": 1, "saved_at": 1.0, "positions": positions,
                         **settings_of(pipeline), "streams": streams})


def test_legacy_state_of_several_streams_carries_over(tmp_path: Path) -> None:
    """Learned and learning streams, a store opened once before without a commit (a start
    that died early): the import still happens, once, and the file is kept renamed."""
    original = make_pipeline()
    feed(original, STREAMS[0], 45, kind=1)
    feed(original, STREAMS[1], 10)
    feed(original, STREAMS[3], 31, kind=2)
    assert not original.calibrating()
    positions = {"logs/*.jsonl": [{"path": "a", "offset": 7}]}
    (tmp_path / "detectors.json").write_bytes(legacy_document(original, positions))
    StateStore(tmp_path).open(make_pipeline())  # state.db created, nothing committed
    store, back, found = restored(tmp_path)
    assert found == positions and store.load_failures == 0
    assert keyed(snapshots(back)) == keyed(snapshots(original))
    assert (tmp_path / "detectors.json").exists()  # until its state is saved here
    assert store.save(back, found)
    assert not (tmp_path / "detectors.json").exists()
    assert (tmp_path / "detectors.json.imported").exists()
    store.close()
    again_store, again, again_positions = restored(tmp_path)
    assert again_positions == positions and again_store.load_failures == 0
    assert keyed(snapshots(again)) == keyed(snapshots(original))


def test_a_broken_stream_of_a_legacy_document_costs_only_itself(tmp_path: Path) -> None:
    original = make_pipeline()
    feed(original, STREAMS[0], 40)
    feed(original, STREAMS[2], 40)
    document = orjson.loads(legacy_document(original, {}))
    del document["streams"][0]["detectors"]["records"]
    (tmp_path / "detectors.json").write_bytes(orjson.dumps(document))
    store = StateStore(tmp_path)
    pipeline = make_pipeline()
    _, entries = store.open(pipeline)
    assert store.restore(pipeline, entries) == 1
    assert store.load_failures == 1
    assert keyed(snapshots(pipeline))[STREAMS[2]] == keyed(snapshots(original))[STREAMS[2]]


@pytest.mark.parametrize("content", [
    b"\x00\xffnot json at all",
    b'{"version": 1, "positions": {"in": [{"offset": 3}]}, "streams": [',  # cut short
    b'{"version": 7, "positions": {}, "streams": []}',
    b"[1, 2, 3]",
], ids=["garbage", "truncated", "unknown-version", "not-an-object"])
def test_an_unreadable_detectors_json_is_counted_and_the_exporter_starts_fresh(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "detectors.json").write_bytes(content)
    store = StateStore(tmp_path)
    pipeline = make_pipeline()
    assert store.open(pipeline) == ({}, [])
    assert store.load_failures == 1 and len(pipeline.streams) == 0
    feed(pipeline, STREAMS[0], 35)
    assert store.save(pipeline, {"in": 1})
    store.close()
    # the next start reads the store; the unreadable file is not counted again
    again_store, again, positions = restored(tmp_path)
    assert positions == {"in": 1} and again_store.load_failures == 0
    assert keyed(snapshots(again)) == keyed(snapshots(pipeline))
