"""Where checkpoints go: a small interface, and its local backend, SQLite in WAL mode.

A checkpoint is a `Changes`: the input positions and, for the streams that changed since the
last one, their running state and the new slots of their large parts (see
`exporter.detectors.parts`). A backend commits one atomically, or not at all, so positions
and detector state always describe the same moment. The interface is what a Kafka changelog
backend implements too (a record per stream and per part slot, keyed by them, compacted).

Why SQLite (Python's `sqlite3`) rather than a directory of per-stream files: one transaction
covers the positions and every changed stream, which per-stream files only get with a
manifest and a rename protocol of our own; WAL mode appends a commit to one file (a second
of changes costs a sequential write, not a file per stream), readers never block it, and a
commit torn by a crash is rolled back by SQLite's own journal when the file is next opened,
checksums included. It is what Fluent Bit keeps its tail offsets in. `synchronous=NORMAL`:
a commit is safe from the process dying at any instant (the kernel has it) and the database
is never corrupted; a power cut may lose the last commits, which are then re-read.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)
# a slot's data: bytes, or an array whose buffer is its bytes (numpy float64 rows and
# `array("d")` blocks, written as they are: SQLite copies them, on the committing thread)
Buffer = Any
DATABASE = "state.db"
LOCK = "state.lock"  # held while a process uses the store: one exporter per state_dir
SCHEMA_VERSION = 1
# test-only: `kill-before-commit:N` SIGKILLs the process before its Nth commit (see tests)
FAULT_ENV = "LLM_DRIFT_EXPORTER_FAULT"


class StoreError(Exception):
    """A checkpoint could not be read or written (the message says why). `corrupt`: the
    file itself is unusable (not a database, damaged, another schema), as opposed to out
    of reach (permissions, a full disk, a lock), which may pass."""

    def __init__(self, message: str, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


@dataclass
class PartChange:
    """A large part of one stream's state: its length now and the slots written anew."""

    stream: str
    part: str
    length: int
    slots: dict[int, Buffer]
    shrunk: bool = False  # slots from `length` on are to be deleted


@dataclass
class Changes:
    """One checkpoint. `replace_all`: these streams are the whole state (the rest goes)."""

    positions: dict[str, bytes]  # input -> its positions (JSON)
    streams: dict[str, bytes] = field(default_factory=dict)  # stream key -> running state
    parts: list[PartChange] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    settings: bytes | None = None  # what the states were made with, when it changed
    replace_all: bool = False

    @cached_property
    def size(self) -> int:
        """Bytes to write (about), once the checkpoint is complete: read to choose where
        to commit it and to count what the WAL holds."""
        return (sum(map(len, self.streams.values())) + sum(map(len, self.positions.values()))
                + sum(memoryview(data).nbytes for part in self.parts
                      for data in part.slots.values()))


@dataclass
class Saved:
    """Everything a backend holds, as committed last."""

    settings: bytes | None = None
    positions: dict[str, bytes] = field(default_factory=dict)
    streams: dict[str, bytes] = field(default_factory=dict)
    parts: dict[tuple[str, str], list[bytes]] = field(default_factory=dict)  # slots in order


class StateBackend(Protocol):
    def load(self) -> Saved: ...

    def commit(self, changes: Changes) -> None: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS positions (input TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS streams (stream TEXT PRIMARY KEY, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS parts (
    stream TEXT NOT NULL, part TEXT NOT NULL, slot INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (stream, part, slot)
) WITHOUT ROWID;
"""


class SqliteBackend:
    """`state_dir/state.db`. Opening checks the file (`quick_check`) and the schema; a file
    that fails either is unusable: `open` raises StoreError and `set_aside` moves it away."""

    def __init__(self, directory: Path, read_only: bool = False) -> None:
        """`read_only`: to look at a store another process may be writing (tools, tests):
        no lock, nothing written; a WAL reader sees the last commit and never blocks it."""
        self.path = directory / DATABASE
        self.read_only = read_only
        self._db: sqlite3.Connection | None = None
        self._lock: int | None = None  # the lock file's descriptor, while held
        self._flusher: sqlite3.Connection | None = None  # see `flush`
        self._commits = 0
        self._fault = _fault_at()

    def _take_lock(self) -> None:
        """Two processes writing one store would overwrite each other's positions and mix
        their streams: the second is refused, visibly, until the first lets go. A POSIX
        record lock: held by the process (it goes with it, even on SIGKILL)."""
        if self._lock is not None:
            return
        path = self.path.with_name(LOCK)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            raise StoreError(f"{path} is held by another process (an exporter or the "
                             f"baseline command uses this state_dir)") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        self._lock = descriptor

    def open(self) -> None:
        if self.read_only:
            self._open_read_only()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            # autocommit mode: transactions are begun and committed here, explicitly; one
            # connection, used by one thread at a time (StateStore serialises)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA journal_size_limit=16777216")  # the WAL shrinks back after bursts
            # the WAL is copied into the database by `flush` (another connection, a thread
            # of its own), not by whichever commit crosses the threshold, on the loop
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute("PRAGMA busy_timeout=100")
            checked = db.execute("PRAGMA quick_check").fetchone()
            if checked is None or checked[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {checked}")
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() \
                if "meta" in tables else None
            if found is None and tables:  # someone else's database: never written into
                raise sqlite3.DatabaseError(f"not a state store (tables {sorted(tables)})")
            if found is not None and found[0] != str(SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema version {found[0]!r}, not {SCHEMA_VERSION}")
            db.executescript(_SCHEMA)
            if found is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"{self.path} is unusable: {exc}", _corrupt(exc)) from exc
        self._db = db

    def _open_read_only(self) -> None:
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.path}: {exc}", _corrupt(exc)) from exc
        if found is None or found[0] != str(SCHEMA_VERSION):
            db.close()
            raise StoreError(f"{self.path}: schema version {found!r}", corrupt=True)
        self._db = db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    def set_aside(self, why: str = "corrupt") -> Path:
        """Move the database (and its WAL) away, as `state.db.<why>-<time>`; the next open
        starts empty. The lock stays held."""
        if self._db is not None:
            self._db.close()
            self._db = None
        aside = self.path.with_name(f"{self.path.name}.{why}-{int(time.time())}")
        while aside.exists():  # two in one second: neither copy overwritten
            aside = aside.with_name(aside.name + "+")
        for suffix in ("", "-wal", "-shm"):
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                os.replace(source, aside.with_name(aside.name + suffix))
        return aside

    def is_new(self) -> bool:
        return self.db.execute("SELECT 1 FROM positions UNION ALL SELECT 1 FROM streams"
                               " LIMIT 1").fetchone() is None

    def load(self) -> Saved:
        try:
            db = self.db
            saved = Saved()
            row = db.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
            saved.settings = None if row is None else bytes(row[0])
            saved.positions = {k: bytes(v) for k, v in db.execute("SELECT * FROM positions")}
            saved.streams = {k: bytes(v) for k, v in db.execute("SELECT * FROM streams")}
            for stream, part, _, data in db.execute(
                "SELECT * FROM parts ORDER BY stream, part, slot"
            ):
                saved.parts.setdefault((stream, part), []).append(bytes(data))
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.path}: {exc}", _corrupt(exc)) from exc
        except (ValueError, TypeError) as exc:  # our tables' names, other columns or types
            raise StoreError(f"{self.path} is not a state store of this version: {exc}",
                             corrupt=True) from exc
        return saved

    def commit(self, changes: Changes) -> None:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                self._write(db, changes)
                self._commits += 1
                if self._fault is not None and self._commits >= self._fault:
                    log.error("%s: killing this process before commit %d", FAULT_ENV,
                              self._commits)
                    os.kill(os.getpid(), signal.SIGKILL)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite rolls back itself after some errors
                    with contextlib.suppress(sqlite3.Error):  # the cause is what matters
                        db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {self.path}: {exc}", _corrupt(exc)) from exc

    @staticmethod
    def _write(db: sqlite3.Connection, changes: Changes) -> None:
        if changes.replace_all:
            for table in ("positions", "streams", "parts"):
                db.execute(f"DELETE FROM {table}")
        if changes.settings is not None:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('settings', ?)", (changes.settings,))
        db.execute("DELETE FROM positions")
        _insert(db, "INSERT INTO positions VALUES", list(changes.positions.items()), 2)
        _insert(db, "INSERT INTO streams VALUES", list(changes.streams.items()), 2,
                " ON CONFLICT (stream) DO UPDATE SET state = excluded.state")
        _insert(db, "INSERT OR REPLACE INTO parts VALUES", list(_slots(changes)), 4)
        db.executemany("DELETE FROM parts WHERE stream = ? AND part = ? AND slot >= ?",
                       ((p.stream, p.part, p.length) for p in changes.parts if p.shrunk))
        db.executemany("DELETE FROM streams WHERE stream = ?", ((k,) for k in changes.deleted))
        db.executemany("DELETE FROM parts WHERE stream = ?", ((k,) for k in changes.deleted))

    def flush(self) -> None:
        """Copy the WAL's commits into the database and sync it (a passive WAL checkpoint:
        it waits for no one), on a connection of its own so it can run on another thread
        while commits go on. SQLite lets go of the GIL for the whole of it."""
        if self._flusher is None:
            self._flusher = sqlite3.connect(self.path, isolation_level=None,
                                            check_same_thread=False)
            self._flusher.execute("PRAGMA busy_timeout=1000")
        try:
            self._flusher.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot flush {self.path}: {exc}", _corrupt(exc)) from exc

    def size(self) -> int:
        """Bytes on disk: the database and its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += self.path.with_name(self.path.name + suffix).stat().st_size
        return total

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.close()
            self._flusher = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock)  # closing the descriptor lets go of the lock
            self._lock = None


ROWS_PER_STATEMENT = 500


def _insert(db: sqlite3.Connection, head: str, rows: list[tuple[Any, ...]], width: int,
            tail: str = "") -> None:
    """Rows inserted a few hundred per statement: SQLite lets go of the GIL once per
    statement step, and a thread that commits while the loop processes records waits up to
    a switch interval (5 ms) to get it back each time (`executemany` steps once a row)."""
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start:start + ROWS_PER_STATEMENT]
        marks = ",".join(["(" + ",".join("?" * width) + ")"] * len(chunk))
        db.execute(f"{head} {marks}{tail}", [value for row in chunk for value in row])


def _slots(changes: Changes) -> Iterator[tuple[str, str, int, Buffer]]:
    for part in changes.parts:
        for slot, data in part.slots.items():
            yield part.stream, part.part, slot, data


def _corrupt(exc: sqlite3.Error) -> bool:
    """Damage, not reach: OperationalError is how SQLite reports permissions, a full disk,
    a lock; DatabaseError otherwise (not a database, a malformed image)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def _fault_at() -> int | None:
    value = os.environ.get(FAULT_ENV, "")
    if not value.startswith("kill-before-commit:"):
        return None
    return int(value.split(":", 1)[1])
