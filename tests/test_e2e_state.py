"""The state store of the real exporter process: a SIGKILL in the middle of a commit, the
final save at SIGTERM, the upgrade from a `detectors.json`, and a corrupt `state.db`.

Each test runs `python -m exporter run` on a file input (as `tests/torture.py` does) and
reads the store as `run` reads it: `SqliteBackend` + `saved_streams`, on a copy of the
state directory, so that reading it (SQLite checkpoints the WAL when its last reader
closes) never does the recovery the next exporter process is there to do.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest

from exporter.streams.checkpoint import saved_streams
from exporter.streams.store import DATABASE, FAULT_ENV, SqliteBackend
from tests.process import ExporterProcess, wait_for
from tests.state_helpers import as_saved_before
from tests.torture import record

pytestmark = pytest.mark.e2e

BASELINE = 50  # records a baseline takes: small, so a stream is ready within seconds


@dataclass
class Stored:
    """What the store under a state_dir holds, as the next process would load it."""

    records: int  # records the saved streams have counted
    offsets: dict[str, int]  # file path -> saved offset
    entries: list[dict[str, Any]]
    positions: dict[str, Any]
    settings: dict[str, Any]


def stored(state: Path, scratch: Path) -> Stored:
    copy = scratch / f"copy-{time.monotonic_ns()}"
    shutil.copytree(state, copy)
    backend = SqliteBackend(copy)
    try:
        saved = backend.load()  # (opening it checks it: quick_check, schema)
    finally:
        backend.close()
    entries, failures = saved_streams(saved)
    assert failures == 0, "a saved stream cannot be read"
    positions = {k: orjson.loads(v) for k, v in saved.positions.items()}
    offsets = {p["path"]: p["offset"] for files in positions.values() for p in files}
    return Stored(sum(e["detectors"]["records"] for e in entries), offsets, entries, positions,
                  orjson.loads(saved.settings) if saved.settings else {})


class Run:
    """A workdir with a log directory, a state_dir and a config; exporters started on it."""

    def __init__(self, workdir: Path, routes: int = 1) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir()
        self.state = workdir / "state"
        self.live = self.logs / "app.jsonl"
        self.written = 0
        self.routes = routes
        self.config = workdir / "config.yaml"
        self.config.write_text(
            f'inputs: [{{type: file, paths: ["{self.logs}/app.jsonl*"], start_at: beginning, '
            f"poll_interval: 0.02}}]\nstate_dir: {self.state}\n"
            f"detectors: {{baseline_size: {BASELINE}, window_size: 20}}\n"
        )
        self.starts = 0

    def start(self, env: dict[str, str] | None = None) -> ExporterProcess:
        self.starts += 1
        # ExporterProcess hands the child this process's environment
        with mock.patch.dict("os.environ", env or {}):
            exporter = ExporterProcess(["run", "--config", str(self.config)],
                                       self.workdir / f"exporter-{self.starts}.log")
        exporter.wait_ready(timeout=30)
        return exporter

    def append(self, count: int) -> None:
        lines = []
        for n in range(self.written, self.written + count):
            line = orjson.loads(record(n))
            line["route"] = f"/route-{n % self.routes}"
            lines.append(orjson.dumps(line) + b"\n")
        with open(self.live, "ab") as handle:
            handle.write(b"".join(lines))
        self.written += count

    def sizes(self) -> dict[str, int]:
        return {str(p): p.stat().st_size for p in self.logs.glob("app.jsonl*")}

    def caught_up(self, exporter: ExporterProcess, timeout: float = 20.0) -> None:
        """Every file read to its end."""
        def done() -> bool:
            offsets = {dict(labels)["path"]: value
                       for (name, labels), value in exporter.samples().items()
                       if name == "llm_exporter_file_offset_bytes"}
            return all(offsets.get(path) == size for path, size in self.sizes().items())
        assert wait_for(done, timeout=timeout, interval=0.02), self.workdir

    def stored(self) -> Stored:
        return stored(self.state, self.workdir)


def metric(exporter: ExporterProcess, name: str) -> float:
    """The sum of a metric's samples (0 when it has none)."""
    return sum(v for (n, _), v in exporter.samples().items() if n == name)


@contextmanager
def running(run: Run, env: dict[str, str] | None = None) -> Iterator[ExporterProcess]:
    exporter = run.start(env)
    try:
        yield exporter
    finally:
        if exporter.process.poll() is None:  # a failed test must not leave it behind
            exporter.kill()


def lines_before(path: Path, offset: int) -> int:
    with open(path, "rb") as handle:
        head = handle.read(offset)
    assert head == b"" or head.endswith(b"\n"), "a saved offset inside a line"
    return head.count(b"\n")


def test_a_kill_inside_a_commit_keeps_the_previous_one_and_the_restart_catches_up(tmp_path):
    run = Run(tmp_path)
    run.append(500)
    kill_at = 4  # the 4th commit: after the first (whole) checkpoint and a few incremental ones
    with running(run, {FAULT_ENV: f"kill-before-commit:{kill_at}"}) as exporter:
        # new records make new checkpoints, until the one the fault kills the process in
        deadline = time.monotonic() + 20
        while exporter.process.poll() is None and time.monotonic() < deadline:
            run.append(100)
            time.sleep(0.05)
        assert exporter.process.wait(5) == -9  # SIGKILL, by the fault
        exporter.kill()  # (reaped: closes its log)
    assert f"killing this process before commit {kill_at}" in exporter.log_path.read_text()

    before = run.stored()  # the commit before: whole, and describing one moment
    assert list(before.offsets) == [str(run.live)]
    assert lines_before(run.live, before.offsets[str(run.live)]) == before.records
    assert 0 < before.records < run.written

    run.append(300)  # more while it is down
    with running(run) as exporter:
        run.caught_up(exporter)
        # it resumed at the saved position: every record after it read once, none before it
        # (its counters resume from the saved state: the records before it, counted once)
        assert metric(exporter, "llm_records_total") == run.written
        assert exporter.stop() == 0
    after = run.stored()
    assert after.records == run.written  # each record counted exactly once, none lost
    assert after.offsets == run.sizes()


def test_sigterm_saves_everything(tmp_path):
    """Many streams, so a checkpoint costs enough to be spaced out (2% of the time): the
    last records read are usually saved by the final checkpoint of SIGTERM, not a periodic
    one. After it, the store holds every record and every file's end."""
    run = Run(tmp_path, routes=60)
    with running(run) as exporter:
        run.append(3000)
        run.caught_up(exporter)
        run.live.rename(run.logs / "app.jsonl.1")  # a rotation: two files to resume
        run.append(3000)
        run.caught_up(exporter)
        assert exporter.stop() == 0
    after = run.stored()
    assert after.records == run.written == 6000
    assert len(after.entries) == 60
    assert after.offsets == run.sizes() and len(after.offsets) == 2


def ready_signals(exporter: ExporterProcess) -> set[str]:
    return {dict(labels)["signal"] for (name, labels), value in exporter.samples().items()
            if name == "llm_drift_baseline_ready" and value == 1}


def legacy_document(saved: Stored) -> dict[str, Any]:
    """The store's state as the one-document version (before the store, 36dab12) wrote
    `detectors.json`: `version`, `saved_at`, `positions`, the settings' keys at the top,
    `streams` as `{"labels", "detectors"}` entries with each detector's learned arrays as
    flat lists, no calibration in progress (`as_saved_before`) and its own copy of the
    stream's event log (checked against a file the previous version wrote: the same keys,
    types and shapes)."""
    streams = []
    for entry in saved.entries:
        detectors = entry["detectors"]
        old = {s: {**as_saved_before(d), "event_log": detectors["events"].get(s, [])}
               for s, d in detectors["detectors"].items()}
        streams.append({"labels": entry["labels"], "detectors": {**detectors, "detectors": old}})
    return {"version": 1, "saved_at": time.time(), "positions": saved.positions,
            **saved.settings, "streams": streams}


def test_a_detectors_json_of_the_previous_version_is_imported_on_first_start(tmp_path):
    run = Run(tmp_path)
    run.append(300)
    with running(run) as exporter:
        run.caught_up(exporter)
        # every signal that learns from these records: its baseline, then its threshold
        assert wait_for(lambda: len(ready_signals(exporter)) >= 3, timeout=15), tmp_path
        time.sleep(1.5)  # (a threshold simulated off-thread is taken in within a second)
        ready = ready_signals(exporter)
        assert exporter.stop() == 0
    saved = run.stored()
    assert saved.records == 300 and not any(  # (the previous version saved none)
        d.get("calibrating") for e in saved.entries for d in e["detectors"]["detectors"].values())
    shutil.rmtree(run.state)
    run.state.mkdir()
    (run.state / "detectors.json").write_bytes(
        orjson.dumps(legacy_document(saved), option=orjson.OPT_SERIALIZE_NUMPY))

    with running(run) as exporter:
        assert ready_signals(exporter) == ready  # at once, before any new record
        assert metric(exporter, "llm_records_total") == 0  # the imported positions hold
        run.append(100)
        run.caught_up(exporter)
        assert metric(exporter, "llm_records_total") == 100
        assert metric(exporter, "llm_exporter_state_load_failures_total") == 0
        assert exporter.stop() == 0
    assert (run.state / "detectors.json.imported").exists()
    assert not (run.state / "detectors.json").exists()
    after = run.stored()
    assert after.records == 400 and after.offsets == run.sizes()


def test_a_corrupt_store_at_start_is_set_aside_and_saving_goes_on(tmp_path):
    run = Run(tmp_path)
    run.append(200)
    with running(run) as exporter:
        run.caught_up(exporter)
        assert exporter.stop() == 0
    database = run.state / DATABASE
    assert not database.with_name(DATABASE + "-wal").exists()  # all in the file at close
    # damage a real store: every page after the first (the schema) overwritten
    with open(database, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"\xa5" * (database.stat().st_size - 4096))

    run.append(100)
    with running(run) as exporter:
        assert metric(exporter, "llm_exporter_state_load_failures_total") == 1
        run.caught_up(exporter)  # its positions are gone with it: read from the beginning
        assert metric(exporter, "llm_records_total") == 300
        assert wait_for(lambda: metric(exporter, "llm_exporter_state_saves_total") > 0)
        assert metric(exporter, "llm_exporter_state_writable") == 1
        assert exporter.stop() == 0
    assert len(list(run.state.glob(f"{DATABASE}.corrupt-*"))) == 1
    after = run.stored()
    assert after.records == 300 and after.offsets == run.sizes()
