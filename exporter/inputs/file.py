"""Tail JSON-lines files matched by globs.

The input only discovers files (globs re-scanned every poll); each `FileTail`
follows one file and notices the two ways a log file is replaced under a
reader: rename+create rotation (the path now names another inode: the old
handle is drained to its end first, so no line written before the rename is
lost) and truncation (copytruncate: the file is shorter than our offset, so
reading restarts at 0). Durable checkpoints build on `FileTail.offset`.
"""

from __future__ import annotations

import asyncio
import errno
import glob
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from exporter.config import FileInputConfig
from exporter.inputs.lines import LineSplitter
from exporter.inputs.stats import InputStats

log = logging.getLogger(__name__)
READ_CHUNK = 256 * 1024
# Bytes read per file per poll before yielding to the event loop, so one busy
# file cannot starve scrapes or other files.
READ_BUDGET = 4 * 1024 * 1024

LineHandler = Callable[[list[bytes]], None]
OversizeHandler = Callable[[int], None]


@dataclass(frozen=True)
class FileIdentity:
    device: int
    inode: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileIdentity:
        return cls(stat.st_dev, stat.st_ino)


class FileTail:
    """Follows one path. Owned by FileInput; not thread-safe."""

    def __init__(self, path: str, offset: int, max_line_bytes: int, stats: InputStats) -> None:
        self.path = path
        self.offset = offset
        self.size = 0
        self.stats = stats
        self.splitter = LineSplitter(max_line_bytes)
        self._handle = open(path, "rb")  # noqa: SIM115 - held open across polls on purpose
        self.identity = FileIdentity.of(os.fstat(self._handle.fileno()))

    def close(self) -> None:
        self._handle.close()

    def _read_available(self, on_lines: LineHandler, on_oversize: OversizeHandler) -> int:
        self._handle.seek(self.offset)
        total = 0
        while total < READ_BUDGET:
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
        return total

    def poll(self, on_lines: LineHandler, on_oversize: OversizeHandler) -> bool:
        """Read what is new; returns False once the path is gone and the handle drained."""
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            self._read_available(on_lines, on_oversize)
            return False
        if FileIdentity.of(current) != self.identity:
            self._read_available(on_lines, on_oversize)  # drain the rotated-away file
            self.close()
            self.stats.rotations += 1
            log.info("rotation detected on %s; following the new file", self.path)
            self._handle = open(self.path, "rb")  # noqa: SIM115
            self.identity = FileIdentity.of(os.fstat(self._handle.fileno()))
            self.offset = 0
            self.splitter.reset()
        size = os.fstat(self._handle.fileno()).st_size
        if size < self.offset:
            self.stats.truncations += 1
            log.info(
                "truncation detected on %s (size %d < offset %d)", self.path, size, self.offset
            )
            self.offset = 0
            self.splitter.reset()
        self._read_available(on_lines, on_oversize)
        self.size = max(size, self.offset)
        return True


class FileInput:
    def __init__(
        self,
        config: FileInputConfig,
        on_lines: LineHandler,
        on_oversize: OversizeHandler,
        stats: InputStats,
    ) -> None:
        self.config = config
        self.stats = stats
        self._on_lines = on_lines
        self._on_oversize = on_oversize
        self.tails: dict[str, FileTail] = {}
        self._first_scan = True

    def _discover(self) -> None:
        for pattern in self.config.paths:
            for path in sorted(glob.glob(pattern)):
                if path in self.tails or not os.path.isfile(path):
                    continue
                try:
                    size = os.path.getsize(path)
                    at_end = self._first_scan and self.config.start_at == "end"
                    self.tails[path] = FileTail(
                        path, size if at_end else 0, self.config.max_line_bytes, self.stats
                    )
                except OSError as exc:
                    self.stats.read_errors[_reason(exc)] += 1
                    log.warning("cannot open %s: %s", path, exc)
        self._first_scan = False

    def poll_once(self) -> None:
        """One discovery + read pass over every file; errors on one file never stop the rest."""
        self._discover()
        for path, tail in list(self.tails.items()):
            try:
                alive = tail.poll(self._on_lines, self._on_oversize)
            except OSError as exc:
                self.stats.read_errors[_reason(exc)] += 1
                log.warning("error reading %s: %s", path, exc)
                continue
            if not alive:
                tail.close()
                del self.tails[path]
        self.stats.files_watched = len(self.tails)

    async def run(self) -> None:
        while True:
            self.poll_once()
            await asyncio.sleep(self.config.poll_interval)

    def close(self) -> None:
        for tail in self.tails.values():
            tail.close()
        self.tails.clear()


def _reason(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "oserror").lower()
