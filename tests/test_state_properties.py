"""Incremental checkpoints, whatever happened between them: hypothesis interleaves batches to
several streams, baseline resets, calibrations held in progress and let finish, commits
through one long-lived store, and restores (some of them taken over as the live pipeline,
as a restart does). Every restore from a fresh store must give back exactly the streams as
they were at the last commit, and the database must hold no more than they reference.

Calibrations run on a one-thread executor whose thread waits on a gate (as in
test_sharding_calibration_edges.py): a baseline completed since the last release is still
calibrating, its observations held, until the gate opens and the pipeline settles. The gate
is closed at every other moment, so each example runs the same way every time."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from exporter.streams.checkpoint import stream_key
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore
from exporter.streams.table import StreamState
from tests.state_helpers import snapshots
from tests.test_state_store import STREAMS as ALL_STREAMS
from tests.test_state_store import Gate, check_tables, feed, keyed, make_pipeline, parts_of

STREAMS = ALL_STREAMS[:3]  # fewer streams, more records each: baselines complete
MATCHERS = [{"model": "m0"}, {"route": "/a"}, {"route": "/b"}, {"model": "absent"}]
SIGNALS = [None, ("output_tokens",), ("embedding",), ("refusal", "format_validity")]


def ingest(low: int, high: int) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(st.just("ingest"), st.integers(0, len(STREAMS) - 1),
                     st.integers(low, high), st.integers(0, 3))


operations = st.lists(st.one_of(
    # most of what happens; a baseline is 30 records (distinct strategies: one_of would
    # merge equal ones)
    ingest(1, 12), ingest(12, 30), ingest(30, 40), ingest(20, 40),
    st.tuples(st.just("reset"), st.integers(0, len(MATCHERS) - 1),
              st.integers(0, len(SIGNALS) - 1)),
    st.tuples(st.just("settle")),
    st.tuples(st.just("commit")),
    st.tuples(st.just("restore"), st.booleans()),  # True: the restored pipeline goes on
), min_size=4, max_size=18)


def learned(stream: StreamState) -> frozenset[str] | None:
    """The signals whose baseline the stream has, when every other detector of it has not
    had an observation yet (so none is learning); None while one is learning or calibrating."""
    detectors = stream.detectors
    assert detectors is not None
    if detectors.calibrating() or not all(
            d.baseline_ready or d.observations == 0 for d in detectors.detectors.values()):
        return None
    return frozenset(s for s, d in detectors.detectors.items() if d.baseline_ready)


@dataclass
class Run:
    """The live side: a pipeline, its gate, the store it commits through, and what the
    last commit saved."""

    directory: Path
    threaded: bool
    baseline_size: int
    pipeline: Pipeline = field(init=False)
    gate: Gate | None = field(init=False)
    store: StateStore = field(init=False)
    gates: list[Gate] = field(default_factory=list)  # every one made, closed at the end
    records: int = 0
    saved: tuple[dict[str, Any], dict[tuple[str, ...], Any]] | None = None
    touched: set[tuple[str, ...]] = field(default_factory=set)  # changed since the commit
    # streams learned at the commit (see `learned`)
    learned: dict[tuple[str, ...], frozenset[str]] = field(default_factory=dict)
    resets: set[tuple[str, ...]] = field(default_factory=set)  # reset since the commit

    def __post_init__(self) -> None:
        self.pipeline, self.gate = self.fresh_pipeline()
        self.store = StateStore(self.directory)

    def fresh_pipeline(self) -> tuple[Pipeline, Gate | None]:
        gate = Gate() if self.threaded else None
        if gate is not None:
            self.gates.append(gate)
        executor = None if gate is None else gate.executor
        return make_pipeline(self.baseline_size, calibration=executor), gate

    def ingest(self, stream: int, count: int, kind: int) -> None:
        """`count` records in 30ths of a baseline (the strategies' counts are for 30)."""
        count = count * self.baseline_size // 30
        feed(self.pipeline, STREAMS[stream], count, kind, start=self.records)
        self.records += count
        self.touched.add(STREAMS[stream])

    def reset(self, matcher: int, signals: int) -> None:
        labels = self.pipeline.streams.reset_matching(MATCHERS[matcher], SIGNALS[signals])
        self.touched.update(labels)
        self.resets.update(labels)

    def settle(self) -> None:
        self.touched.update(s.labels for s in self.pipeline.streams
                            if s.detectors is not None and s.detectors.calibrating())
        if self.gate is None:
            self.pipeline.settle(wait=True)
        else:
            self.gate.open_and_settle(self.pipeline)

    def commit(self) -> None:
        positions = {"logs/*.jsonl": [{"records": self.records}]}
        changes = self.store.checkpoint(self.pipeline, positions)
        now = {s.labels: ready for s in self.pipeline.streams
               if (ready := learned(s)) is not None}
        if not changes.replace_all:
            # a stream that got nothing is not in it; one learned before and since writes
            # its running state only
            assert set(changes.streams) <= {stream_key(labels) for labels in self.touched}
            for labels, ready in now.items():
                if self.learned.get(labels) != ready or labels in self.resets:
                    continue
                assert parts_of(changes, labels) == [], f"{labels} learned, parts written"
        assert self.store.commit(changes)
        self.saved = (positions, keyed(snapshots(self.pipeline)))
        self.touched.clear()
        self.resets.clear()
        self.learned = now
        check_tables(self.directory, self.pipeline)

    def restore(self, take_over: bool) -> None:
        """A new process: a fresh store and pipeline get back the last commit exactly
        (calibrations in progress included, still in progress)."""
        store = StateStore(self.directory)
        pipeline, gate = self.fresh_pipeline()
        try:
            positions, entries = store.open(pipeline)
            restored = store.restore(pipeline, entries)
            assert store.load_failures == 0
            if self.saved is None:
                assert (positions, entries, restored) == ({}, [], 0)
            else:
                assert positions == self.saved[0]
                assert restored == len(self.saved[1])
                assert keyed(snapshots(pipeline)) == self.saved[1]
        finally:
            if not take_over:
                store.close()
        note(pipeline, restored)
        if not take_over:
            return
        self.store.close()
        self.pipeline, self.gate, self.store = pipeline, gate, store
        self.records = self.saved[0]["logs/*.jsonl"][0]["records"] if self.saved else 0
        self.touched = {s.labels for s in pipeline.streams}
        self.learned, self.resets = {}, set()

    def close(self) -> None:
        self.store.close()
        for gate in self.gates:
            gate.close()


def note(pipeline: Pipeline, restored: int) -> None:
    """What a restore covered, in hypothesis' statistics (--hypothesis-show-statistics)."""
    if currently_in_test_context():
        done = sum(1 for stream in pipeline.streams if learned(stream))
        event(f"restored {restored} stream(s), {done} learned")
        if pipeline.calibrating():
            event("restored a calibration in progress")
        for entry in snapshots(pipeline):
            embedding = entry["detectors"]["detectors"].get("embedding", {})
            if embedding.get("state", {}).get("reservoir") and not embedding.get("calibrating"):
                event("restored an embedding reservoir being learned")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# 30: the embedding's first vectors are its whole baseline; 120: past its bandwidth sample
# (BANDWIDTH_SAMPLE, 64) the baseline features go to a reservoir, saved as it grows
@given(ops=operations, threaded=st.booleans(), baseline_size=st.sampled_from([30, 120]))
def test_any_interleaving_restores_the_last_commit(ops: list[tuple[Any, ...]], threaded: bool,
                                                   baseline_size: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        run = Run(Path(directory), threaded, baseline_size)
        try:
            for op, *args in [*ops, ("commit",), ("restore", False)]:
                getattr(run, op)(*args)
        finally:
            run.close()
