"""Tail JSON-lines files matched by globs, like a log shipper.

`FileInput` only discovers files (globs re-scanned every poll) and keeps one
`FileTail` per *file*, keyed by identity (device, inode) and checked with a
fingerprint of the first bytes, not per path:

- rename+create rotation: the path now names another file, which gets its own
  tail from offset 0, while the renamed file keeps being read through its
  open handle until it has been quiet for `ROTATED_GRACE_SECONDS` (a writer
  may still be flushing into it), so nothing written before the rename is
  lost; if the rotated name matches the glob too, it is recognized as the
  same file and never read twice;
- truncation (copytruncate, or a file rewritten while we were stopped): the
  file is shorter than our offset, so reading restarts at 0;
- inode reuse: a file whose first bytes no longer match the fingerprint is a
  new file, even on a recycled inode;
- a deleted file is drained through its handle and released.

Offsets in a checkpoint exclude a held partial line, so after a restart that
line is read again from its start; nothing half-read is ever emitted.
"""

from __future__ import annotations

import asyncio
import errno
import glob
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from exporter.config import FileInputConfig
from exporter.inputs.lines import LineSplitter
from exporter.inputs.stats import InputStats

log = logging.getLogger(__name__)
READ_CHUNK = 64 * 1024
# Bytes read per file per poll before yielding to the event loop, so one busy
# file cannot starve scrapes or other files; a poll that hit the budget is
# followed at once by the next one, so throughput does not suffer.
READ_BUDGET = 128 * 1024
# ... and the time: records are not all equally cheap (while 1,000 streams learn their
# baselines, 100-200 us each), and 128 KiB of them held the loop, with a scrape waiting on
# it, for 40-60 ms. A poll stops after the chunk that took it past this many seconds.
READ_SECONDS = 0.005
FINGERPRINT_BYTES = 1024
ROTATED_GRACE_SECONDS = 5.0

LineHandler = Callable[[list[bytes]], None]
OversizeHandler = Callable[[int], None]
FileKey = tuple[int, int]  # (device, inode)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


@dataclass
class Fingerprint:
    """Hash of the first `length` bytes; grows with the file up to FINGERPRINT_BYTES."""

    length: int
    digest: str

    @classmethod
    def read(cls, handle: Any, length: int = FINGERPRINT_BYTES) -> Fingerprint:
        handle.seek(0)
        head = handle.read(length)
        return cls(len(head), _digest(head))

    def matches(self, handle: Any) -> bool:
        handle.seek(0)
        head = handle.read(self.length)
        return len(head) == self.length and _digest(head) == self.digest


class FileTail:
    """Follows one file through its open handle. Owned by FileInput."""

    def __init__(self, path: str, handle: Any, offset: int, max_line_bytes: int,
                 stats: InputStats, on_truncation: Callable[[], None] = lambda: None) -> None:
        self.path = path
        self._on_truncation = on_truncation
        self.stats = stats
        self.splitter = LineSplitter(max_line_bytes)
        self._handle = handle
        stat = os.fstat(handle.fileno())
        self.key: FileKey = (stat.st_dev, stat.st_ino)
        self.fingerprint = Fingerprint.read(handle)
        self.offset = offset
        self.size = stat.st_size
        self.matched = True  # does a glob still name this file?
        self.quiet_since: float | None = None

    @property
    def committed_offset(self) -> int:
        """Where a restart may resume: the end of the last complete line."""
        return self.offset - self.splitter.pending_bytes

    def close(self) -> None:
        self._handle.close()

    def _refresh_fingerprint(self) -> None:
        if self.fingerprint.length < FINGERPRINT_BYTES and self.size > self.fingerprint.length:
            self.fingerprint = Fingerprint.read(self._handle)

    def poll(self, on_lines: LineHandler, on_oversize: OversizeHandler) -> int:
        """Read what is new through the handle; returns bytes read."""
        self.size = os.fstat(self._handle.fileno()).st_size
        # Shorter than our offset, or different first bytes: truncated and (maybe already
        # refilled past our offset) rewritten; the size test alone misses a file that a
        # busy writer refilled between two polls.
        if self.size < self.offset or not self.fingerprint.matches(self._handle):
            self.stats.truncations += 1
            log.info("truncation detected on %s (size %d, offset %d); reading from the start",
                     self.path, self.size, self.offset)
            self.offset = 0
            self.splitter.reset()
            self.fingerprint = Fingerprint.read(self._handle)
            # What was read before the truncation exists nowhere we read any more: make the
            # state that counted it durable now, not at the next periodic checkpoint.
            self._on_truncation()
        self._refresh_fingerprint()
        self._handle.seek(self.offset)
        total, started = 0, time.monotonic()
        while total < READ_BUDGET and (not total or time.monotonic() - started < READ_SECONDS):
            chunk = self._handle.read(READ_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            self.offset += len(chunk)
            self.stats.bytes_read += len(chunk)
            result = self.splitter.feed(chunk)
            if result.oversized:
                on_oversize(result.oversized)
            if result.lines:
                on_lines(result.lines)
        self.size = max(self.size, self.offset)
        return total

    def unlinked(self) -> bool:
        return os.fstat(self._handle.fileno()).st_nlink == 0

    def checkpoint(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "device": self.key[0],
            "inode": self.key[1],
            "fingerprint_length": self.fingerprint.length,
            "fingerprint": self.fingerprint.digest,
            "offset": self.committed_offset,
        }


class FileInput:
    def __init__(
        self,
        config: FileInputConfig,
        on_lines: LineHandler,
        on_oversize: OversizeHandler,
        stats: InputStats,
        clock: Callable[[], float] = time.monotonic,
        on_truncation: Callable[[], None] = lambda: None,
        throttle: Callable[[], Awaitable[None]] | None = None,
        between_passes: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`throttle`: awaited before each read pass, so reading keeps pace with worker
        processes that handle the lines (they are handed over without waiting).
        `between_passes`: awaited after each read pass (a checkpoint when one is due: the
        positions are then the ends of the lines just processed, and no timer waits behind
        a busy pass)."""
        self.config = config
        self.throttle = throttle
        self.between_passes = between_passes
        self.on_truncation = on_truncation
        self.stats = stats
        self.clock = clock
        self._on_lines = on_lines
        self._on_oversize = on_oversize
        self.tails: dict[FileKey, FileTail] = {}
        self._saved: dict[FileKey, dict[str, Any]] = {}
        self._first_scan = True

    # --- checkpoints --------------------------------------------------------------
    def checkpoint(self) -> list[dict[str, Any]]:
        """Positions of open files, and of closed ones still on disk (a rotated file that
        reappears under a glob must resume, not be read again)."""
        for key, entry in list(self._saved.items()):
            try:
                stat = os.stat(entry["path"])
            except OSError:
                stat = None
            if stat is None or (stat.st_dev, stat.st_ino) != key:
                del self._saved[key]
        entries = dict(self._saved)
        entries.update({key: tail.checkpoint() for key, tail in self.tails.items()})
        return list(entries.values())

    def restore(self, entries: list[dict[str, Any]]) -> None:
        """Positions from a checkpoint; applied when each file is next discovered."""
        for entry in entries:
            self._saved[(int(entry["device"]), int(entry["inode"]))] = entry
        self._first_scan = False if entries else self._first_scan

    def _start_offset(self, key: FileKey, handle: Any, size: int) -> int:
        saved = self._saved.pop(key, None)
        if saved is not None:
            fingerprint = Fingerprint(int(saved["fingerprint_length"]), saved["fingerprint"])
            if fingerprint.matches(handle):
                offset = int(saved["offset"])
                if offset > size:
                    self.stats.truncations += 1
                    log.info("%s shrank while we were stopped; reading from the start",
                             handle.name)
                    return 0
                return offset
            log.info("%s: inode reused by a new file; reading from the start", handle.name)
            return 0
        if self._first_scan and self.config.start_at == "end":
            return size
        return 0

    @staticmethod
    def _mid_line(handle: Any, offset: int) -> bool:
        if offset == 0:
            return False
        handle.seek(offset - 1)
        return handle.read(1) != b"\n"

    # --- discovery ----------------------------------------------------------------
    def _open(self, path: str) -> None:
        handle = open(path, "rb")  # noqa: SIM115 - held open across polls on purpose
        try:
            stat = os.fstat(handle.fileno())
            key = (stat.st_dev, stat.st_ino)
            known = self.tails.get(key)
            if known is not None:
                if known.fingerprint.matches(handle):
                    if known.path != path:
                        known.path = path  # the same file under its rotated name
                    known.matched = True
                    handle.close()
                    return
                # inode reused: the old tail's file is gone
                known.close()
                del self.tails[key]
            offset = self._start_offset(key, handle, stat.st_size)
            tail = FileTail(path, handle, offset, self.config.max_line_bytes, self.stats,
                            self.on_truncation)
            if self._mid_line(handle, offset):
                tail.splitter.start_mid_line()
            self.tails[key] = tail
        except BaseException:
            handle.close()
            raise

    def _discover(self) -> None:
        for tail in self.tails.values():
            tail.matched = False
        for pattern in self.config.paths:
            for path in sorted(glob.glob(pattern)):
                try:
                    if not os.path.isfile(path):
                        continue
                    stat = os.stat(path)
                    known = self.tails.get((stat.st_dev, stat.st_ino))
                    if known is not None and known.path == path:
                        known.matched = True
                        continue
                    self._open(path)
                except OSError as exc:
                    self.stats.read_errors[_reason(exc)] += 1
                    log.warning("cannot open %s: %s", path, exc)
        self._first_scan = False

    def poll_once(self) -> bool:
        """One discovery + read pass over every file; errors on one file never stop the rest.

        Returns True when some file had more to read than one pass's budget."""
        self._discover()
        now = self.clock()
        behind = False
        for key, tail in list(self.tails.items()):
            try:
                got = tail.poll(self._on_lines, self._on_oversize)
                behind = behind or got >= READ_CHUNK  # a full chunk: maybe more to read
                if tail.matched:
                    tail.quiet_since = None
                    continue
                # renamed away or deleted: drained above; a renamed file stays open until it
                # has been quiet for a while (its writer may not have reopened yet)
                if tail.quiet_since is None:
                    self.stats.rotations += 1
                    log.info("%s was rotated or removed; draining it", tail.path)
                if got:
                    tail.quiet_since = now
                elif tail.unlinked() or (
                    tail.quiet_since is not None and now - tail.quiet_since >= ROTATED_GRACE_SECONDS
                ):
                    if not tail.unlinked():
                        self._saved[key] = tail.checkpoint()
                    tail.close()
                    del self.tails[key]
                elif tail.quiet_since is None:
                    tail.quiet_since = now
            except OSError as exc:
                self.stats.read_errors[_reason(exc)] += 1
                log.warning("error reading %s: %s", tail.path, exc)
        self.stats.files_watched = len(self.tails)
        return behind

    async def run(self) -> None:
        while True:
            if self.throttle is not None:
                await self.throttle()
            behind = self.poll_once()
            if self.between_passes is not None:
                await self.between_passes()
            await asyncio.sleep(0 if behind else self.config.poll_interval)

    def close(self) -> None:
        for tail in self.tails.values():
            tail.close()
        self.tails.clear()


def _reason(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "oserror").lower()
