"""Faults of the state store, made for real: a damaged or foreign `state.db`, a process
SIGKILLed in the middle of a commit (the store's own fault injection, in a child process),
a store that cannot be written (a file-size limit, SQLite's page limit, a state_dir under a
regular file), and a part row missing from the database. Each must cost what it damaged,
never the exporter, and the next commit that can be made must save everything again."""

from __future__ import annotations

import functools
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.streams.checkpoint import stream_key
from exporter.streams.pipeline import Pipeline
from exporter.streams.state import StateStore
from exporter.streams.store import DATABASE, FAULT_ENV
from tests.state_helpers import snapshots
from tests.test_state_store import STREAMS, check_tables, feed, keyed, make_pipeline, restored

ROOT = Path(__file__).resolve().parent.parent


def step(pipeline: Pipeline, k: int) -> None:
    """The k-th step of the series the child processes commit (deterministic: calibration
    inline), so the test can rebuild the state as of any checkpoint."""
    if k == 1:
        feed(pipeline, STREAMS[0], 35, kind=1)
        feed(pipeline, STREAMS[2], 10)
    elif k == 2:
        feed(pipeline, STREAMS[0], 10, kind=1, start=35)
        feed(pipeline, STREAMS[1], 20)
        pipeline.streams.reset_matching({"route": "/b"}, ("output_tokens",))
    else:  # a big one: every stream, baselines completing and growing
        for n, stream in enumerate(STREAMS):
            feed(pipeline, stream, 60 + 10 * n, kind=3, start=100 * k)


def state_after(steps: int) -> Pipeline:
    pipeline = make_pipeline()
    for k in range(1, steps + 1):
        step(pipeline, k)
    return pipeline


@functools.lru_cache
def expected(steps: int) -> dict[tuple[str, ...], Any]:
    """The streams' state after `steps` steps, by labels (read only: it is shared)."""
    return keyed(snapshots(state_after(steps)))


def child_main() -> None:
    """In a child process: commit steps 1..N to argv[1]; with argv[3] == "fsize", commit
    step 2 under a file-size limit (RLIMIT_FSIZE at the WAL's size: appending fails with
    EFBIG), twice, then lift it and commit once more. Prints what each commit returned."""
    state_dir, steps, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    store, pipeline = StateStore(state_dir), make_pipeline()
    results = []
    for k in range(1, steps + 1):
        step(pipeline, k)
        if mode == "fsize" and k == 2:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a signal
            limit = max(os.path.getsize(f"{store.path}{suffix}") for suffix in ("", "-wal"))
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
            results.append(store.commit(store.checkpoint(pipeline, {"in": k})))
            results.append(store.commit(store.checkpoint(pipeline, {"in": k})))
            results.append([store.save_failures, store.writable])
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        results.append(store.commit(store.checkpoint(pipeline, {"in": k})))
        print(json.dumps(results), flush=True)
    store.close()


def run_child(state_dir: Path, steps: int, mode: str = "plain",
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    code = "from tests.test_state_faults import child_main; child_main()"
    return subprocess.run(
        [sys.executable, "-c", code, str(state_dir), str(steps), mode],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True, text=True, timeout=120, check=False)


def assert_holds(state_dir: Path, steps: int, positions: dict[str, int]) -> StateStore:
    store, back, found = restored(state_dir)
    assert store.load_failures == 0
    assert found == positions
    assert keyed(snapshots(back)) == expected(steps)
    check_tables(state_dir, back)
    return store


# --- a commit interrupted by SIGKILL -------------------------------------------------------
def test_sigkill_in_the_middle_of_a_commit_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    """The child dies holding the write transaction of its third checkpoint (the big one);
    the store holds checkpoint 2 exactly, and a new process goes on from there."""
    child = run_child(tmp_path, 3, env={FAULT_ENV: "kill-before-commit:3"})
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert json.loads(child.stdout.splitlines()[-1]) == [True, True]  # commits 1, 2
    store = assert_holds(tmp_path, 2, {"in": 2})
    pipeline = state_after(2)
    step(pipeline, 3)
    assert store.commit(store.checkpoint(pipeline, {"in": 3}))
    store.close()
    assert_holds(tmp_path, 3, {"in": 3})


# --- a store that cannot be written ----------------------------------------------------
def test_a_file_size_limit_fails_commits_until_it_is_lifted(tmp_path: Path) -> None:
    child = run_child(tmp_path, 2, mode="fsize")
    assert child.returncode == 0, child.stderr
    first, then = (json.loads(line) for line in child.stdout.splitlines())
    assert first == [True]
    # under the limit: both fail, counted, not writable; lifted: one whole commit
    assert then == [True, False, False, [2, False], True]
    assert_holds(tmp_path, 2, {"in": 2})


def test_a_full_database_fails_atomically_and_the_next_commit_saves_everything(
    tmp_path: Path,
) -> None:
    """`PRAGMA max_page_count` at the current size: the commit fails (SQLITE_FULL) and
    writes nothing of itself; lifted, the next commit is whole."""
    pipeline = state_after(1)
    store = StateStore(tmp_path)
    assert store.commit(store.checkpoint(pipeline, {"in": 1}))
    db = store.backend.db
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    step(pipeline, 3)
    assert not store.commit(store.checkpoint(pipeline, {"in": 3}))
    assert (store.save_failures, store.writable, store.saves) == (1, False, 1)
    assert_holds(tmp_path, 1, {"in": 1}).close()  # nothing of the failed commit
    db.execute("PRAGMA max_page_count = 1073741823")
    changes = store.checkpoint(pipeline, {"in": 3})
    assert changes.replace_all  # everything, whatever the failed one carried
    assert store.commit(changes)
    assert (store.save_failures, store.writable, store.saves) == (1, True, 2)
    store.close()
    store, back, positions = restored(tmp_path)
    assert positions == {"in": 3}
    assert keyed(snapshots(back)) == keyed(snapshots(pipeline))


def test_a_checkpoint_made_before_a_failure_is_not_committed_after_it(tmp_path: Path) -> None:
    """Checkpoints are made on the ingest thread and committed on the saver's: one made
    while a commit was under way is relative to what that commit carried. If that commit
    fails, committing it would save streams whose earlier changes were lost."""
    pipeline = state_after(1)
    store = StateStore(tmp_path)
    assert store.commit(store.checkpoint(pipeline, {"in": 1}))
    step(pipeline, 2)
    failing = store.checkpoint(pipeline, {"in": 2})
    step(pipeline, 3)
    later = store.checkpoint(pipeline, {"in": 3})  # relative to `failing`
    db = store.backend.db
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    assert not store.commit(failing)
    db.execute("PRAGMA max_page_count = 1073741823")
    committed = store.commit(later)  # refused or not, the store must stay consistent
    reader, back, positions = restored(tmp_path)
    assert reader.load_failures == 0
    assert positions == {"in": 3 if committed else 1}
    assert keyed(snapshots(back)) == (keyed(snapshots(pipeline)) if committed else expected(1))
    reader.close()
    whole = store.checkpoint(pipeline, {"in": 3})
    assert whole.replace_all and store.commit(whole)
    store.close()
    assert_holds(tmp_path, 3, {"in": 3})


def test_a_state_dir_under_a_regular_file_recovers_when_it_can_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "volume"
    blocker.write_text("not a directory")
    state_dir = blocker / "state"
    pipeline = state_after(1)
    store = StateStore(state_dir)
    assert store.open(make_pipeline()) == ({}, [])
    assert not store.writable and store.load_failures == 0  # unreachable is not corrupt
    for k in (1, 2):
        assert not store.commit(store.checkpoint(pipeline, {"in": k}))
        assert (store.save_failures, store.writable) == (k, False)
    blocker.unlink()  # the volume is mounted
    step(pipeline, 2)
    assert store.commit(store.checkpoint(pipeline, {"in": 2}))
    assert store.writable and store.saves == 1
    store.close()
    assert_holds(state_dir, 2, {"in": 2})


# --- a damaged or foreign database -------------------------------------------------------
def _truncate(path: Path, size: int) -> None:
    with path.open("r+b") as file:
        file.truncate(size)


def _foreign(path: Path, script: str) -> None:
    path.unlink()
    db = sqlite3.connect(path)
    db.executescript(script)
    db.close()


def _scramble_index(path: Path) -> None:
    """Overwrite the page of the streams' key index: reading the table does not touch it,
    writing a stream does."""
    db = sqlite3.connect(path)
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                         ("sqlite_autoindex_streams_1",)).fetchone()
    (size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with path.open("r+b") as file:
        file.seek((root - 1) * size)
        file.write(b"\xa5" * size)


DAMAGE = {
    "garbage": lambda path: path.write_bytes(bytes(range(256)) * 40),
    "sqlite-header-then-garbage": lambda path: path.write_bytes(
        b"SQLite format 3\x00" + b"\xa5" * 8000),
    "truncated-header": lambda path: _truncate(path, 60),
    "truncated-to-one-page": lambda path: _truncate(path, 4096),
    "truncated-by-half": lambda path: _truncate(path, path.stat().st_size // 2 // 4096 * 4096),
    "damaged-index": _scramble_index,
    "another-schema-version": lambda path: _foreign(path, """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
        INSERT INTO meta VALUES ('schema', '2');"""),
}
# A valid SQLite database that is not this store's: it must be set aside as well, not
# written into, and never stop the exporter.
FOREIGN = [
    # the tables' names, other columns: load() unpacks rows of 3 into 2 and calls bytes()
    # on TEXT; neither error is a StoreError, so open() raises and the exporter stops
    pytest.param("""
        CREATE TABLE positions (input TEXT, value BLOB, extra INTEGER);
        INSERT INTO positions VALUES ('in', x'7b7d', 1);""", id="our-tables-other-columns"),
    pytest.param("""
        CREATE TABLE streams (stream TEXT PRIMARY KEY, state TEXT);
        INSERT INTO streams VALUES ('["gpt-4o","/chat"]', 'state');""", id="our-tables-text-state"),
    # no meta table: taken for a new store, and our tables are created in someone's database
    pytest.param("""
        CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
        INSERT INTO users VALUES (1, 'ada');""", id="another-application"),
]


def saved_store(state_dir: Path) -> Pipeline:
    pipeline = state_after(2)
    store = StateStore(state_dir)
    assert store.save(pipeline, {"in": 2})
    store.close()  # the WAL is folded into state.db
    assert not Path(f"{state_dir / DATABASE}-wal").exists()
    assert (state_dir / DATABASE).stat().st_size >= 4 * 4096  # halving it cuts tables
    return pipeline


def assert_set_aside_and_fresh(state_dir: Path) -> None:
    store = StateStore(state_dir)
    pipeline = make_pipeline()
    assert store.open(pipeline) == ({}, [])
    assert store.load_failures == 1 and store.writable
    assert len(list(state_dir.glob(f"{DATABASE}.corrupt-*"))) == 1
    step(pipeline, 1)
    assert store.commit(store.checkpoint(pipeline, {"in": 1}))
    store.close()
    assert_holds(state_dir, 1, {"in": 1})


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_database_is_set_aside_and_the_store_starts_again(
    tmp_path: Path, damage: str
) -> None:
    saved_store(tmp_path)
    DAMAGE[damage](tmp_path / DATABASE)
    assert_set_aside_and_fresh(tmp_path)


@pytest.mark.parametrize("script", FOREIGN)
def test_a_database_of_another_schema_is_set_aside(tmp_path: Path, script: str) -> None:
    saved_store(tmp_path)
    _foreign(tmp_path / DATABASE, script)
    assert_set_aside_and_fresh(tmp_path)


# --- a part row gone ----------------------------------------------------------------------
@pytest.mark.parametrize(("victim", "part"), [
    (0, "sorted"),  # the learned rank baseline: one row
    (1, "bandwidth_sample"),  # the embedding's first vectors: a row each
    (1, "baseline"),  # the rank baseline being learned: a growing array
])
def test_a_missing_part_row_costs_only_its_stream(tmp_path: Path, victim: int,
                                                  part: str) -> None:
    """m0 /a learned, m1 /a learning: the first row of one of their parts deleted (the
    part found by the end of its name, however parts are named) makes that stream re-learn,
    counted; the others come back, and the next commit leaves a consistent store."""
    pipeline = make_pipeline()
    feed(pipeline, STREAMS[0], 40, kind=1)
    feed(pipeline, STREAMS[1], 20)
    feed(pipeline, STREAMS[3], 40, kind=2)
    assert StateStore(tmp_path).save(pipeline, {"in": 1})
    labels = STREAMS[victim]
    db = sqlite3.connect(tmp_path / DATABASE)
    with db:
        found = [name for (name,) in db.execute(
            "SELECT DISTINCT part FROM parts WHERE stream = ?", (stream_key(labels),))
            if name.endswith(part)]
        assert len(found) == 1, found
        deleted = db.execute("DELETE FROM parts WHERE stream = ? AND part = ? AND slot = 0",
                             (stream_key(labels), found[0])).rowcount
    db.close()
    assert deleted == 1
    store = StateStore(tmp_path)
    back = make_pipeline()
    positions, entries = store.open(back)
    assert positions == {"in": 1} and store.load_failures == 1
    assert store.restore(back, entries) == 2 and store.load_failures == 1
    want = {k: v for k, v in keyed(snapshots(pipeline)).items() if k != labels}
    assert keyed(snapshots(back)) == want
    assert store.save(back, {"in": 1})  # whole: the unusable stream's rows go
    store.close()
    check_tables(tmp_path, back)
    again, _, _ = restored(tmp_path)
    assert again.load_failures == 0
