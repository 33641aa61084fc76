from __future__ import annotations

import os

import orjson

from exporter.config import parse_config
from exporter.inputs.stats import InputStats
from exporter.signals.embedding import FEATURES_VERSION
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore
from tests import samples

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
    assert StateStore(tmp_path).load(restored) == 1
    a, b = detectors_of(original), detectors_of(restored)
    assert b.records == a.records == 80
    for signal, detector in a.detectors.items():
        twin = b.detectors[signal]
        assert twin.baseline_ready == detector.baseline_ready
        assert twin.score == detector.score
    assert b.detectors["output_tokens"].baseline_ready
    assert not list((tmp_path).glob(".*.tmp"))


def test_corrupt_file_is_set_aside_not_fatal(tmp_path):
    (tmp_path / "detectors.json").write_bytes(b'{"version": 1, "streams": [tru')
    store = StateStore(tmp_path)
    pipeline = Pipeline(parse_config(CONFIG))
    assert store.load(pipeline) == 0
    assert store.load_failures == 1
    assert not (tmp_path / "detectors.json").exists()
    assert len(list(tmp_path.glob("detectors.json.corrupt-*"))) == 1


def test_leftover_temp_file_is_removed(tmp_path):
    StateStore(tmp_path).save(fed_pipeline())
    (tmp_path / ".detectors.json.tmp").write_bytes(b"half a fi")
    pipeline = Pipeline(parse_config(CONFIG))
    assert StateStore(tmp_path).load(pipeline) == 1
    assert not (tmp_path / ".detectors.json.tmp").exists()


def test_changed_detector_settings_ignore_the_old_state(tmp_path):
    StateStore(tmp_path).save(fed_pipeline())
    other = {"detectors": {**CONFIG["detectors"], "expected_run_time": 5000}}
    pipeline = Pipeline(parse_config(other))
    assert StateStore(tmp_path).load(pipeline) == 0
    assert len(pipeline.streams) == 0


def test_unwritable_state_dir_counts_a_failure(tmp_path):
    target = tmp_path / "file-not-dir"
    target.write_text("x")
    store = StateStore(target)
    assert not store.save(fed_pipeline())
    assert store.save_failures == 1
    assert os.path.isfile(target)


def test_state_saved_while_learning_restores_all_detectors(tmp_path):
    """Thresholds are infinite while learning; JSON has no infinity."""
    config = {"detectors": {"baseline_size": 1000, "expected_run_time": 1000}}
    original = fed_pipeline(600, config)
    assert StateStore(tmp_path).save(original)
    restored = Pipeline(parse_config(config))
    store = StateStore(tmp_path)
    assert store.load(restored) == 1 and store.load_failures == 0
    for signal, detector in detectors_of(restored).detectors.items():
        assert detector.observations == detectors_of(original).detectors[signal].observations


def test_changed_embedding_settings_ignore_the_old_state(tmp_path):
    StateStore(tmp_path).save(fed_pipeline())
    other = {**CONFIG, "signals": {"embedding": {"dimension": 512}}}
    assert StateStore(tmp_path).load(Pipeline(parse_config(other))) == 0


def test_state_of_an_older_builtin_embedding_is_not_restored(tmp_path):
    """Saved baselines of embeddings computed another way would read as drift."""
    store = StateStore(tmp_path)
    store.save(fed_pipeline())
    document = orjson.loads(store.detectors_path.read_bytes())
    assert document["builtin_embedding"] == FEATURES_VERSION
    del document["builtin_embedding"]  # as 0.1.0 saved it
    store.detectors_path.write_bytes(orjson.dumps(document))
    assert StateStore(tmp_path).load(Pipeline(parse_config(CONFIG))) == 0


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
