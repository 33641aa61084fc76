"""Seasonal and rolling baselines keep per-phase references that must survive what a
running exporter does to a stream's state: checkpoints (plain snapshots, and the SQLite
store's incremental parts), restarts, any batching of the records, and a baseline reset.

A restored stream must go on *exactly* as the original (events, scores, the phase table,
what it says it compares with), whatever the cut points; the phase table of a week of
hours must stay small; the saved settings of a fixed baseline must be those of the
versions before seasonal baselines (their states restore), and a change of mode must
re-learn. The streams cycle by the time of day (`benchmarks/seasonal_streams.py`), their
day squeezed into an hour so that a few periods take a few hundred records."""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import parse_config
from exporter.detectors.calibration import CalibrationCache
from exporter.detectors.factory import DetectorFactory
from exporter.detectors.references import MAX_VALUES, FeatureMean, Quantiles, Rates
from exporter.detectors.seasonal import EMPTY
from exporter.inputs.stats import InputStats
from exporter.signals.embedding import FEATURES_VERSION
from exporter.signals.measure import Measurements
from exporter.streams.checkpoint import Checkpointer, saved_streams, stream_key
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore, settings_of
from exporter.streams.store import Saved
from exporter.streams.stream_detectors import StreamDetectors
from exporter.streams.table import StreamState
from exporter.streams.view import signal_view
from tests import samples
from tests.state_helpers import plain, snapshots
from tests.test_state_store import check_tables, keyed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from seasonal_streams import DAY, Change, Shape, records

# Thresholds are pure functions of their keys: one cache for the whole module, so each
# reference size is simulated once.
CACHE = CalibrationCache()
SCALE = 48.0  # the generator's day becomes 30 minutes: a period of "30m" is a day
PHASED = ("output_tokens", "refusal", "embedding")  # the signals the cyclic stream feeds
SEASONAL = {"mode": "seasonal", "period": "30m", "phase": "15m"}  # day and night halves
ROLLING = {"mode": "rolling", "period": "15m"}


def section(baseline: dict[str, Any]) -> dict[str, Any]:
    """A small detectors section (baselines of 20, short windows) with `baseline`."""
    return {"baseline_size": 20, "window_size": 20, "expected_run_time": 500,
            "baseline": baseline}


def factory(baseline: dict[str, Any] = SEASONAL) -> DetectorFactory:
    made = DetectorFactory.from_config(section(baseline))
    made.cache = CACHE
    return made


@functools.cache
def stream() -> tuple[list[Measurements], list[float]]:
    """Three periods of a day/night stream (about 200 records a period), with timestamp
    jitter, stragglers an hour or more late (a few minutes here) and, in the third period,
    a change of length, refusals and topics. Every ninth record has no embedding, so the
    embedding detector gets its own subsequence of the records and of their times; one in
    53 is stamped centuries ahead (misdated: taken at the stream's latest time)."""
    out = list(records(Shape("halves", per_day=200, jitter=600.0, late_share=0.02,
                             refusal=0.1), days=3.0, seed=3,
                       change=Change(at=2 * DAY, length=1.8, refusal_odds=4.0,
                                     topic_shift=0.5)))
    measured = [dataclasses.replace(m, embedding=None) if i % 9 == 4 else m
                for i, (_, m, _) in enumerate(out)]
    return measured, [FUTURE if i % 53 == 26 else t / SCALE for i, (t, _, _) in enumerate(out)]


FUTURE = 4e10  # the year 3237


def index_at(seconds: float) -> int:
    """The first record stamped at or after `seconds` (the stream's time; misdated records
    are not where a cut is put)."""
    return next(i for i, t in enumerate(stream()[1]) if seconds <= t < FUTURE)


def feed(detectors: StreamDetectors, start: int, end: int) -> None:
    ms, ts = stream()
    detectors.update_many(ms[start:end], ts[start:end])


def state_of(detectors: StreamDetectors) -> dict[str, Any]:
    """Everything a stream's detectors would show or save, as plain data: the snapshot
    (events, each detector's state and its seasons: table, clock, current summary), what
    the API says each compares with, and the failures counted."""
    return {
        "snapshot": plain(detectors.snapshot()),
        "described": {s: d.seasons.describe(d) for s, d in detectors.detectors.items()
                      if d.seasons is not None},
        "ready": {s: d.reference_ready for s, d in detectors.detectors.items()},
        "errors": dict(detectors.errors),
    }


def restored_from(saved: dict[str, Any], made: DetectorFactory) -> StreamDetectors:
    """A fresh stream's detectors with `saved` restored into them, as a restart does."""
    fresh = StreamDetectors.create(made)
    fresh.restore(saved, made)
    return fresh


def stored(detectors: StreamDetectors) -> dict[str, Any]:
    """`detectors`' snapshot after the store's encoding (running state as JSON, the phase
    table as `Rows` slots, the current phase's values as `Growing` blocks), without a disk."""
    changes = Checkpointer().changes([StreamState(labels=("s",), detectors=detectors)], {}, {})
    saved = Saved(streams=changes.streams)
    for part in changes.parts:
        saved.parts[(part.stream, part.part)] = [part.slots[i] for i in range(part.length)]
    entries, failures = saved_streams(saved)
    assert failures == 0 and len(entries) == 1
    saved_detectors: dict[str, Any] = entries[0]["detectors"]
    return saved_detectors


@functools.cache
def one_go(mode: str) -> dict[str, Any]:
    """The state after the whole stream in one batch (`state_of`)."""
    detectors = StreamDetectors.create(factory(SEASONAL if mode == "seasonal" else ROLLING))
    feed(detectors, 0, len(stream()[0]))
    return state_of(detectors)


def test_the_stream_exercises_what_the_other_tests_rely_on() -> None:
    """A guard on the data, not on the product: fed in one go, the cyclic stream learns,
    leaves a first period uncompared, compares afterwards, has late and misdated records
    and raises events; otherwise the restore and batching tests below would prove little."""
    state = one_go("seasonal")
    assert state["errors"] == {}
    for signal in PHASED:
        described = state["described"][signal]
        assert described["late_records"] > 0, described
        assert described["misdated_records"] > 0, described
        assert described["uncompared_records"] > 0, described
        assert "compared_with" in described, described
    assert state["snapshot"]["events"].get("output_tokens"), state["snapshot"]["events"]


# --- snapshot and restore -------------------------------------------------------------
@pytest.mark.parametrize("at", [
    60.0,  # learning the baselines
    600.0,  # the first period: summarised, not compared
    1800.0 + 30.0,  # just into the second period: rebased on the first one's phase
    1800.0 + 900.0 + 200.0,  # the second period's other phase, a few minutes in
    3600.0 + 900.0 + 100.0,  # the third period, after the change
], ids=["learning", "first-period", "second-period-start", "second-period-night",
        "after-the-change"])
@pytest.mark.parametrize("how", ["plain", "stored"])
def test_a_restored_stream_goes_on_exactly_as_the_original(at: float, how: str) -> None:
    """Snapshot at `at`, restore into fresh detectors (directly, or through the store's
    encoding), then feed both the rest: the same events, scores, observations, phase
    table, current summary and description at every step."""
    made = factory()
    original = StreamDetectors.create(made)
    cut = index_at(at)
    feed(original, 0, cut)
    saved = original.snapshot() if how == "plain" else stored(original)
    back = restored_from(saved, made)
    assert state_of(back) == state_of(original)
    end = len(stream()[0])
    for low in range(cut, end, 97):  # the same batches for both
        feed(original, low, min(end, low + 97))
        feed(back, low, min(end, low + 97))
        assert state_of(back) == state_of(original), low
    for signal in PHASED:
        ours, theirs = original.detectors[signal], back.detectors[signal]
        assert ours.seasons is not None and theirs.seasons is not None
        assert len(theirs.seasons.table) == 2
        for mine, other in zip(ours.seasons.table, theirs.seasons.table, strict=True):
            assert mine.dtype == other.dtype == np.float32
            assert np.array_equal(mine, other)
        assert theirs.event_log == ours.event_log and theirs.score == ours.score
    assert state_of(back)["snapshot"]["events"] == one_go("seasonal")["snapshot"]["events"]


def test_a_snapshot_of_the_other_mode_restores_without_failing() -> None:
    """A snapshot saved with a seasonal baseline restored by a fixed-baseline factory (or
    the reverse) must not fail: a detector without seasons ignores them, one with seasons
    starts its table anew (not ready until a period has passed). The store never gets
    here (a change of settings re-learns, see the settings tests); a caller of
    `StreamDetectors.restore` might."""
    seasonal = StreamDetectors.create(factory())
    feed(seasonal, 0, index_at(1800.0 + 60.0))
    fixed = factory({"mode": "fixed"})
    back = restored_from(seasonal.snapshot(), fixed)
    assert all(d.seasons is None for d in back.detectors.values())
    assert back.detectors["output_tokens"].baseline_ready
    plain_fixed = StreamDetectors.create(fixed)
    feed(plain_fixed, 0, 40)
    into_seasonal = restored_from(plain_fixed.snapshot(), factory())
    detector = into_seasonal.detectors["output_tokens"]
    assert detector.seasons is not None
    assert all(row is EMPTY for row in detector.seasons.table)
    assert detector.baseline_ready and not detector.reference_ready


# --- through the SQLite store, as the service saves --------------------------------------
T0 = 1735689600.0  # 2025-01-01T00:00:00Z (in the past: a record ahead of the clock is misdated)
PHASE = 1800.0
PER_PHASE = 100
STORE_CONFIG: dict[str, Any] = {
    "detectors": {"baseline_size": 20, "window_size": 20, "expected_run_time": 1000,
                  "baseline": {"mode": "seasonal", "period": "1h", "phase": "30m"}},
}
LABELS = ("gpt-4o", "/chat")


def timed_records(first: int, end: int, change_from: int = 10**9) -> list[dict[str, Any]]:
    """Records first..end-1 of a stream of PER_PHASE records a phase, each stamped with its
    time: day phases short invoices, night phases long notes; from `change_from` on, every
    answer is 60 tokens longer."""
    out = []
    for i in range(first, end):
        stamp = T0 + i * PHASE / PER_PHASE
        night = (i // PER_PHASE) % 2
        text = f"Night note {i % 13} on tides." if night else f"Invoice {i % 11} attached."
        record = samples.chat(text=text)
        record["timestamp"] = stamp
        record["response"]["usage"]["completion_tokens"] = (
            (40 if night else 10) + (i * 7) % 9 + (60 if i >= change_from else 0))
        out.append(record)
    return out


def store_pipeline(config: dict[str, Any] = STORE_CONFIG) -> Pipeline:
    pipeline = Pipeline(parse_config(config))
    pipeline.detector_factory.cache = CACHE
    return pipeline


def ingest(pipeline: Pipeline, first: int, end: int, change_from: int = 10**9) -> None:
    batch = timed_records(first, end, change_from)
    assert pipeline.ingest_values(batch, InputStats("t", "test")).accepted == len(batch)


def seasons_parts(changes: Any) -> dict[str, Any]:
    """The checkpoint's part changes of the seasons (`<signal>.seasons.table|values`)."""
    return {p.part: p for p in changes.parts
            if p.stream == stream_key(LABELS) and ".seasons." in p.part}


def test_seasonal_state_through_the_store_is_incremental_and_restores_exactly(
        tmp_path: Path) -> None:
    """The service's path: checkpoints of a pipeline into the SQLite store. A checkpoint
    within a phase writes no row of the phase table, only what the current phase's values
    grew by; one across a phase boundary writes exactly the row of the phase that closed,
    and the current phase's values anew. Restored from the file by a fresh store, the
    stream is the same and goes on the same, through a change and its events."""
    pipeline = store_pipeline()
    store = StateStore(tmp_path)
    ingest(pipeline, 0, 350)  # two periods' phases 0, 1, 0, half of 1 (records 300-349)
    whole = store.checkpoint(pipeline, {"in": 1})
    assert whole.replace_all
    assert set(seasons_parts(whole)) >= {f"{s}.seasons.table" for s in PHASED}
    assert "output_tokens.seasons.values" in seasons_parts(whole)
    assert store.commit(whole)
    check_tables(tmp_path, pipeline)

    ingest(pipeline, 350, 380)  # the same phase
    within = seasons_parts(_commit(store, pipeline, 2))
    assert not any(part.endswith(".table") for part in within), sorted(within)
    grown = within["output_tokens.seasons.values"]
    assert grown.length == 2 and not grown.shrunk  # 80 values: two blocks of 64
    assert set(grown.slots) == {0, 1}  # the partial block again, and the new one
    check_tables(tmp_path, pipeline)

    ingest(pipeline, 380, 450)  # into the next phase (boundary at record 400)
    across = seasons_parts(_commit(store, pipeline, 3))
    for signal in PHASED:  # phase 1 (records 300-399) closed: its row, and only it
        table = across[f"{signal}.seasons.table"]
        assert table.length == 2 and set(table.slots) == {1}, (signal, table)
    values = across["output_tokens.seasons.values"]
    assert values.length == 1 and values.shrunk and set(values.slots) == {0}  # a new phase
    check_tables(tmp_path, pipeline)
    store.close()

    reader = StateStore(tmp_path)
    back = store_pipeline()
    positions, entries = reader.open(back)
    assert positions == {"in": 3}
    assert reader.restore(back, entries) == 1 and reader.load_failures == 0
    assert keyed(snapshots(back)) == keyed(snapshots(pipeline))
    ingest(pipeline, 450, 800, change_from=600)
    ingest(back, 450, 800, change_from=600)
    assert keyed(snapshots(back)) == keyed(snapshots(pipeline))
    ours = next(iter(pipeline.streams)).detectors
    theirs = next(iter(back.streams)).detectors
    assert ours is not None and theirs is not None
    assert state_of(theirs) == state_of(ours)
    assert ours.events.get("output_tokens"), "the change must raise an event to compare"
    reader.close()


def _commit(store: StateStore, pipeline: Pipeline, positions: int) -> Any:
    """Make and commit a checkpoint; the checkpoint."""
    changes = store.checkpoint(pipeline, {"in": positions})
    assert not changes.replace_all
    assert store.commit(changes)
    return changes


# --- any batching, any restore points ----------------------------------------------------
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(["seasonal", "rolling"]),
       steps=st.lists(st.tuples(st.integers(1, 160), st.sampled_from(["-", "plain", "stored"])),
                      max_size=10))
def test_any_batching_and_restores_give_the_state_of_one_go(
        mode: str, steps: list[tuple[int, str]]) -> None:
    """However the records are cut into `update_many` batches (a phase boundary or a late
    record anywhere in or at the edge of a batch), and wherever the stream is saved and
    restored (plainly or through the store's encoding), the end state is the one of
    feeding the whole stream at once."""
    made = factory(SEASONAL if mode == "seasonal" else ROLLING)
    detectors = StreamDetectors.create(made)
    end, at = len(stream()[0]), 0
    for size, restore in steps:
        feed(detectors, at, min(end, at + size))
        at = min(end, at + size)
        if restore == "plain":
            detectors = restored_from(detectors.snapshot(), made)
        elif restore == "stored":
            detectors = restored_from(stored(detectors), made)
    feed(detectors, at, end)
    assert state_of(detectors) == one_go(mode)


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


# --- reset ------------------------------------------------------------------------------
def test_a_reset_forgets_the_phase_table_and_says_why_it_is_not_ready() -> None:
    """`reset_baseline` (the API's baseline reset) on a seasonal stream forgets every
    phase's reference with the fixed baseline: it is not ready and says it is learning;
    once the baseline is learned again, the rest of that period and the next period's
    phases not seen since the reset are still not compared (their references are gone,
    with a reason), and a phase seen since compares again."""
    made = DetectorFactory.from_config({**section(SEASONAL), "refusal": {"min_events": 0}})
    made.cache = CACHE  # (refusal baselines of 20 records, as the others')
    detectors = StreamDetectors.create(made)
    state = StreamState(labels=("s",), detectors=detectors)

    def views() -> dict[str, dict[str, Any]]:
        out = {}
        for signal in PHASED:
            view = signal_view(state, signal, with_evidence=False)
            assert view is not None
            out[signal] = view
        return out

    marks = [index_at(seconds) for seconds in (2700.0 - 30.0, 3600.0 - 30.0, 4500.0 - 30.0,
                                               4500.0 + 120.0)]
    feed(detectors, 0, marks[0])  # the second period's first phase: comparing
    assert all(view["baseline_ready"] for view in views().values()), views()

    assert sorted(state.reset_baselines()) == sorted(detectors.detectors)
    for signal, view in views().items():
        seasons = detectors.detectors[signal].seasons
        assert seasons is not None
        assert all(row is EMPTY for row in seasons.table) and list(seasons.taken) == [-1, -1]
        assert seasons.bin is None and seasons.summary is None
        assert view["baseline_ready"] is False
        assert view["baseline"]["reason"] == "learning the baseline's features and threshold"
        assert "compared_with" not in view["baseline"]

    feed(detectors, marks[0], marks[1])  # learned again; the rest of the period
    for signal, view in views().items():
        assert detectors.detectors[signal].baseline_ready
        assert view["baseline_ready"] is False, view
        assert view["baseline"]["reason"].startswith("no reference yet for 00:45-01:00 UTC")
    feed(detectors, marks[1], marks[2])  # a phase last seen before the reset
    for view in views().values():
        assert view["baseline_ready"] is False, view
        assert view["baseline"]["reason"].startswith("no reference yet for 01:00-01:15 UTC")
    feed(detectors, marks[2], marks[3])  # a phase seen since the reset
    for view in views().values():
        assert view["baseline_ready"] is True, view
        assert view["baseline"]["compared_with"].startswith("00:45-01:00 UTC on 1970-01-01")


# --- a checkpoint taken while a rebase's threshold is simulated ----------------------------
class Gate:
    """A one-thread calibration executor held shut until `open` (as test_state_store's)."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, "gated-rebase")
        self.event = threading.Event()
        self.executor.submit(self.event.wait)

    def open(self) -> None:
        self.event.set()

    def close(self) -> None:
        self.event.set()
        self.executor.shutdown(wait=True)


def test_a_checkpoint_during_a_rebase_restores_the_phase_reference() -> None:
    """The service simulates thresholds on a thread: entering a phase, a detector holds
    its records until the rebase's threshold is in. A checkpoint taken then and restored
    must give the detector rebased on that phase's reference, as the original ends up."""
    made = factory()
    learned = StreamDetectors.create(made)
    cut = index_at(1800.0 + 900.0 - 10.0)  # the second period, just before its night phase
    feed(learned, 0, cut)
    gate = Gate()
    try:
        gated = factory()
        gated.executor = gate.executor
        live = restored_from(learned.snapshot(), gated)
        feed(live, cut, cut + 30)  # into the night phase: rebased, its threshold pending
        assert live.calibrating() >= 2  # output_tokens and refusal wait for theirs
        saved = stored(live)  # (encoded at once, as a checkpoint is: live goes on below)
        gate.open()
        live.settle(wait=True)
        for detector in live.detectors.values():
            detector.executor = None
        back = restored_from(saved, made)
        back.settle(wait=True)
        assert state_of(back) == state_of(live)
    finally:
        gate.close()
