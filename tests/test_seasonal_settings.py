"""Seasonal baselines' memory (a week of hourly phases within 64 KiB per stream and
signal) and saved settings (a fixed baseline saves what it saved before, so older
states restore; a change of mode re-learns)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from exporter.config import parse_config
from exporter.detectors.factory import DetectorFactory
from exporter.detectors.references import MAX_VALUES, FeatureMean, Quantiles, Rates
from exporter.signals.embedding import FEATURES_VERSION
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore, settings_of
from exporter.streams.stream_detectors import StreamDetectors
from tests.state_helpers import snapshots
from tests.test_state_store import keyed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from tests.seasonal_helpers import (
    CACHE,
    SEASONAL,
    STORE_CONFIG,
    ingest,
    restored_from,
    section,
    store_pipeline,
    stored,
)


# --- memory ---------------------------------------------------------------------------
def footprint(objects: list[Any]) -> int:
    """Bytes of distinct objects: `sys.getsizeof` (for a numpy array that owns its data,
    that includes the data; a view's data, `nbytes`, is added, as its owner is not
    counted here)."""
    seen: set[int] = set()
    total = 0
    for item in objects:
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, np.ndarray) and not item.flags.owndata:
            total += item.nbytes
    return total


@pytest.mark.parametrize(("signal", "kind"), [
    ("output_tokens", Quantiles), ("refusal", Rates), ("embedding", FeatureMean),
])
def test_a_week_of_hourly_phases_stays_within_64_kib(signal: str, kind: type) -> None:
    """7d of 1h phases (168, the most a config may ask for), every one with a reference,
    and the current phase's summary at its largest (a quantile summary holds up to
    MAX_VALUES - 1 values before it thins them): the table's rows, the table itself and
    the current summary take at most 64 KiB per detector, for each kind of summary, and
    still do once restored from the store (its rows come back as float64), counting
    `Seasons.taken`, the phase each row was taken in (an array of 8-byte ints: as a list
    of Python ints it took the quantile and feature-mean tables past 64 KiB)."""
    made = DetectorFactory.from_config(section({"mode": "seasonal", "period": "7d",
                                                "phase": "1h"}))
    made.cache = CACHE
    detector = made.make(signal)
    assert detector is not None and detector.seasons is not None
    rng = np.random.default_rng(5)
    # a baseline takes the first 10 hours (the Bernoulli one up to 30: it waits for enough
    # events), whose phases have their reference from the second week
    hours = 8 * 24 + 12
    count = 2 * hours
    times = [1800.0 * i for i in range(count)]  # two records an hour
    if signal == "output_tokens":
        values: list[Any] = [float(10 + (i * 7) % 50) for i in range(count)]
    elif signal == "refusal":
        values = [i % 5 == 0 for i in range(count)]
    else:
        values = list(rng.normal(size=(count, 32)))
    position = 0
    while position < count:
        position = detector.update_run(values, position, None, times)
    seasons = detector.seasons
    assert detector.baseline_ready and len(seasons.table) == 168
    assert all(row.size for row in seasons.table), "every phase must have its reference"
    # the current phase at its largest
    now = 3600.0 * hours
    more = [values[i % count] for i in range(MAX_VALUES - 1)]
    position = 0
    while position < len(more):
        position = detector.update_run(more, position, None, [now] * len(more))
    summary = seasons.summary
    assert isinstance(summary, kind)
    current: list[Any] = []
    if isinstance(summary, Quantiles):
        assert len(summary.values) == MAX_VALUES - 1  # one more would halve them
        current.append(summary.values)
    if isinstance(summary, FeatureMean):
        current.append(summary.total)
    size = footprint([seasons.table, *seasons.table, seasons.taken, *current])
    assert size <= 64 * 1024, f"{signal}: {size} bytes"
    assert all(row.dtype == np.float32 for row in seasons.table)

    back = restored_from(stored(StreamDetectors(detectors={signal: detector})), made)
    again = back.detectors[signal].seasons
    assert again is not None
    assert [row.tolist() for row in again.table] == [row.tolist() for row in seasons.table]
    size = footprint([again.table, *again.table, again.taken, *current])
    assert size <= 64 * 1024, f"{signal} restored: {size} bytes"


# --- saved settings ---------------------------------------------------------------------
def settings_bytes(detectors: dict[str, Any]) -> bytes:
    return orjson.dumps(settings_of(Pipeline(parse_config({"detectors": detectors}))))


# what `settings_of` wrote before rolling and seasonal baselines existed (made by that
# version, 052f03a's parent, for these two configs): a store saved then must restore
OLD_DEFAULT = (
    b'{"embedding":{},"builtin_embedding":%d,"detector_settings":{"expected_run_time":100000,'
    b'"baseline_size":1000,"window_size":200,"seed":0},"methods":{"output_tokens":{"method":'
    b'"rank_cusum","params":{},"enabled":true},"refusal":{"method":"bernoulli_cusum","params":'
    b'{},"enabled":true},"format_validity":{"method":"bernoulli_cusum","params":{},"enabled":'
    b'true},"embedding":{"method":"mmd","params":{},"enabled":true}},"label_names":["model",'
    b'"route"]}' % FEATURES_VERSION)
OLD_TUNED = (
    b'{"embedding":{},"builtin_embedding":%d,"detector_settings":{"expected_run_time":100000,'
    b'"baseline_size":50,"window_size":200,"seed":0},"methods":{"output_tokens":{"method":'
    b'"adwin","params":{"delta":0.01},"enabled":true},"refusal":{"method":"bernoulli_cusum",'
    b'"params":{},"enabled":true},"format_validity":{"method":"bernoulli_cusum","params":{},'
    b'"enabled":true},"embedding":{"method":"mmd","params":{},"enabled":false}},'
    b'"label_names":["model","route"]}' % FEATURES_VERSION)


@pytest.mark.parametrize(("detectors", "before"), [
    ({}, OLD_DEFAULT),
    ({"baseline": {"mode": "fixed"}}, OLD_DEFAULT),
    ({"output_tokens": {"method": "adwin", "delta": 0.01}, "embedding": {"enabled": False},
      "baseline_size": 50}, OLD_TUNED),
    ({"output_tokens": {"method": "adwin", "delta": 0.01, "baseline": {"mode": "fixed"}},
      "embedding": {"enabled": False}, "baseline_size": 50}, OLD_TUNED),
], ids=["default", "fixed-said", "tuned", "tuned-fixed-said"])
def test_fixed_baselines_save_the_settings_they_saved_before(detectors: dict[str, Any],
                                                             before: bytes) -> None:
    """Byte for byte what the version before seasonal baselines saved (no `baseline` key),
    so the state of every existing install restores after the upgrade; saying `fixed`
    explicitly changes nothing."""
    assert settings_bytes(detectors) == before


def test_seasonal_signals_save_their_mode_and_fixed_ones_do_not() -> None:
    """Each signal saves its own mode with its durations; the fixed one beside them has
    no `baseline` key."""
    saved = orjson.loads(settings_bytes({
        "baseline": {"mode": "seasonal", "period": "24h", "phase": "1h"},
        "refusal": {"baseline": {"mode": "rolling", "period": "6h", "min_records": 100}},
        "embedding": {"baseline": {"mode": "fixed"}},
    }))["methods"]
    assert saved["output_tokens"] == {"method": "rank_cusum", "params": {}, "enabled": True,
                                      "baseline": {"mode": "seasonal", "period": "24h",
                                                   "phase": "1h", "min_records": 64}}
    assert saved["refusal"]["baseline"] == {"mode": "rolling", "period": "6h",
                                            "min_records": 100}
    assert "baseline" not in saved["embedding"]
    assert saved["embedding"] == {"method": "mmd", "params": {}, "enabled": True}


@pytest.mark.parametrize("later", [
    {"mode": "seasonal", "period": "1h", "phase": "30m"},
    {"mode": "seasonal", "period": "2h", "phase": "30m"},
    {"mode": "seasonal", "period": "1h", "phase": "15m"},
    {"mode": "seasonal", "period": "1h", "phase": "30m", "min_records": 100},
    {"mode": "rolling", "period": "1h"},
    {"mode": "fixed"},
], ids=["same", "other-period", "other-phase", "other-min-records", "rolling", "fixed"])
def test_a_change_of_baseline_mode_relearns(tmp_path: Path, later: dict[str, Any]) -> None:
    """A store saved with one baseline mode is restored only by the same one: any other
    period, phase, minimum or mode starts the streams afresh (their references were made
    for other phases), keeping the input positions."""
    pipeline = store_pipeline()
    ingest(pipeline, 0, 150)
    store = StateStore(tmp_path)
    assert store.save(pipeline, {"in": 5})
    store.close()
    config = {"detectors": {**STORE_CONFIG["detectors"], "baseline": later}}
    reader = StateStore(tmp_path)
    back = store_pipeline(config)
    positions, entries = reader.open(back)
    assert positions == {"in": 5}
    same = later == STORE_CONFIG["detectors"]["baseline"]
    assert (len(entries) == 1) is same
    reader.close()


def test_a_store_saved_before_seasonal_baselines_restores(tmp_path: Path) -> None:
    """A store whose settings are the old version's bytes (OLD_DEFAULT with this test's
    detector settings) is restored by a fixed-baseline pipeline of today, and re-learnt
    by a seasonal one."""
    config = {"detectors": {"baseline_size": 20, "window_size": 20, "expected_run_time": 1000}}
    pipeline = store_pipeline(config)
    ingest(pipeline, 0, 60)
    old = orjson.loads(OLD_DEFAULT)
    old["detector_settings"].update(baseline_size=20, window_size=20, expected_run_time=1000)
    store = StateStore(tmp_path)
    assert store.commit(store.checkpointer.changes(list(pipeline.streams), {"in": 1}, old))
    store.close()
    for baseline, restores in (({"mode": "fixed"}, True), (SEASONAL, False)):
        reader = StateStore(tmp_path)
        back = store_pipeline({"detectors": {**config["detectors"], "baseline": baseline}})
        _, entries = reader.open(back)
        assert (reader.restore(back, entries) == 1) is restores
        if restores:
            assert keyed(snapshots(back)) == keyed(snapshots(pipeline))
        reader.close()


