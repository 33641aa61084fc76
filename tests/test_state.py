from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.signals.embedding import FEATURES_VERSION
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore, settings_of
from exporter.streams.store import DATABASE
from tests import samples
from tests.state_helpers import as_saved_before, load_into, snapshots

CONFIG = {"detectors": {"baseline_size": 50, "window_size": 20, "expected_run_time": 1000}}


def fed_pipeline(n: int = 80, config: dict | None = None) -> Pipeline:
    pipeline = Pipeline(parse_config(config or CONFIG))
    stats = InputStats("t", "test")
    values = [samples.chat(text=f"Answer number {i} " + "word " * (i % 7)) for i in range(n)]
    assert pipeline.ingest_values(values, stats).accepted == n
    return pipeline


def detectors_of(pipeline: Pipeline):
    return next(iter(pipeline.streams)).detectors


def test_save_and_restore_keeps_baselines_and_state(tmp_path):
    original = fed_pipeline()
    store = StateStore(tmp_path)
    assert store.save(original)
    restored = Pipeline(parse_config(CONFIG))
    assert load_into(tmp_path, restored) == 1
    a, b = detectors_of(original), detectors_of(restored)
    assert b.records == a.records == 80
    for signal, detector in a.detectors.items():
        twin = b.detectors[signal]
        assert twin.baseline_ready == detector.baseline_ready
        assert twin.score == detector.score
    assert b.detectors["output_tokens"].baseline_ready
    assert snapshots(restored) == snapshots(original)


def test_corrupt_store_is_set_aside_not_fatal(tmp_path):
    (tmp_path / DATABASE).write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    store = StateStore(tmp_path)
    pipeline = Pipeline(parse_config(CONFIG))
    positions, entries = store.open(pipeline)
    assert (positions, entries) == ({}, [])
    assert store.load_failures == 1
    assert len(list(tmp_path.glob(f"{DATABASE}.corrupt-*"))) == 1
    assert store.save(fed_pipeline())  # and it starts afresh
    assert load_into(tmp_path, Pipeline(parse_config(CONFIG))) == 1


def test_changed_detector_settings_ignore_the_old_state(tmp_path):
    StateStore(tmp_path).save(fed_pipeline(), {"in": [{"offset": 5}]})
    other = {"detectors": {**CONFIG["detectors"], "expected_run_time": 5000}}
    pipeline = Pipeline(parse_config(other))
    store = StateStore(tmp_path)
    positions, entries = store.open(pipeline)
    assert entries == [] and positions == {"in": [{"offset": 5}]}
    assert len(pipeline.streams) == 0


def test_unwritable_state_dir_counts_a_failure(tmp_path):
    target = tmp_path / "file-not-dir"
    target.write_text("x")
    store = StateStore(target)
    assert not store.save(fed_pipeline())
    assert store.save_failures == 1 and not store.writable
    assert os.path.isfile(target)


def test_state_saved_while_learning_restores_all_detectors(tmp_path):
    """Thresholds are infinite while learning; JSON has no infinity."""
    config = {"detectors": {"baseline_size": 1000, "expected_run_time": 1000}}
    original = fed_pipeline(600, config)
    assert StateStore(tmp_path).save(original)
    restored = Pipeline(parse_config(config))
    assert load_into(tmp_path, restored) == 1
    for signal, detector in detectors_of(restored).detectors.items():
        assert detector.observations == detectors_of(original).detectors[signal].observations
    assert snapshots(restored) == snapshots(original)


def test_changed_embedding_settings_ignore_the_old_state(tmp_path):
    StateStore(tmp_path).save(fed_pipeline())
    other = {**CONFIG, "signals": {"embedding": {"dimension": 512}}}
    assert load_into(tmp_path, Pipeline(parse_config(other))) == 0


def legacy_entry(entry: dict) -> dict:
    """A stream entry as the one-document version wrote it."""
    detectors = entry["detectors"]
    old = {s: as_saved_before(d) for s, d in detectors["detectors"].items()}
    return {"labels": entry["labels"], "detectors": {**detectors, "detectors": old}}


def test_legacy_detectors_json_is_imported_once_and_kept(tmp_path):
    """A state_dir of the one-document version: its baselines and positions carry over."""
    original = fed_pipeline()
    legacy = {"version": 1, "saved_at": 1.0, "positions": {"in": [{"offset": 7}]},
              **settings_of(original),
              "streams": [legacy_entry(e) for e in snapshots(original)]}
    (tmp_path / "detectors.json").write_bytes(orjson.dumps(legacy))
    restored = Pipeline(parse_config(CONFIG))
    store = StateStore(tmp_path)
    positions, entries = store.open(restored)
    assert positions == {"in": [{"offset": 7}]}
    assert store.restore(restored, entries) == 1
    assert snapshots(restored) == snapshots(original)
    assert store.save(restored, positions)
    assert not (tmp_path / "detectors.json").exists()
    assert (tmp_path / "detectors.json.imported").exists()
    again = Pipeline(parse_config(CONFIG))
    assert load_into(tmp_path, again) == 1 and snapshots(again) == snapshots(original)


def test_state_of_an_older_builtin_embedding_is_not_restored(tmp_path):
    """Saved baselines of embeddings computed another way would read as drift."""
    original = fed_pipeline()
    settings = settings_of(original)
    assert settings["builtin_embedding"] == FEATURES_VERSION
    del settings["builtin_embedding"]  # as 0.1.0 saved it
    legacy = {"version": 1, "positions": {}, **settings,
              "streams": [legacy_entry(e) for e in snapshots(original)]}
    (tmp_path / "detectors.json").write_bytes(orjson.dumps(legacy))
    assert load_into(tmp_path, Pipeline(parse_config(CONFIG))) == 0


def test_user_vectors_of_another_dimension_are_counted_not_learned():
    pipeline = Pipeline(parse_config({**CONFIG, "signals": {"embedding": {"path": "emb"}}}))
    stats = InputStats("t", "test")
    values = []
    for i in range(120):
        record = samples.chat(text=f"answer {i}")
        if i % 10:  # every tenth record has no vector: it gets none, not a built-in one
            record["emb"] = [float((i + k) % 5) + 1.0 for k in range(8 if i != 55 else 4)]
        values.append(record)
    assert pipeline.ingest_values(values, stats).accepted == 120
    detectors = detectors_of(pipeline)
    assert detectors.detectors["embedding"].baseline_ready
    assert dict(detectors.errors) == {"embedding": 1}


HOLDER = """
import sys
from pathlib import Path
from exporter.streams.store import Changes, SqliteBackend
backend = SqliteBackend(Path(sys.argv[1]))
backend.commit(Changes(positions={"in": b"[1]"}, streams={"[\\\"x\\\"]": b"{}"}))
print("holding", flush=True)
sys.stdin.read()  # until the test closes it
"""


def test_a_store_held_by_another_process_is_neither_read_nor_overwritten(tmp_path):
    """Another exporter (or `baseline`) on the same state_dir: this one runs without saved
    state, reports it, and once the other lets go keeps what it left aside."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        store = StateStore(tmp_path)
        pipeline = fed_pipeline()
        assert store.open(pipeline) == ({}, [])
        assert not store.writable and store.load_failures == 0
        assert not store.save(pipeline) and store.save_failures == 1
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    assert store.save(pipeline) and store.writable
    store.close()
    kept = list(tmp_path.glob(f"{DATABASE}.unread-*"))
    assert len(kept) == 1 and not list(tmp_path.glob(f"{DATABASE}.corrupt-*"))
    assert load_into(tmp_path, Pipeline(parse_config(CONFIG))) == 1
