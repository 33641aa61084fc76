"""Split a byte stream into complete lines.

A partial last line is held until its newline arrives (a writer may be in the
middle of it), and a line longer than `max_line_bytes` is dropped up to its
next newline and reported once, so one runaway line can neither exhaust
memory nor be emitted as a truncated record.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SplitResult:
    lines: list[bytes]
    oversized: int


class LineSplitter:
    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._pending = bytearray()
        self._skipping = False
        self._skipped = 0  # bytes of the line being skipped, so far
        self._discard_first = False  # started mid-line: drop up to the first newline, uncounted

    @property
    def pending_bytes(self) -> int:
        """Bytes of the current, unfinished line: held back, or being skipped as oversized.
        A reader must not checkpoint past them, or a restart would resume mid-line."""
        return len(self._pending) + self._skipped

    def start_mid_line(self) -> None:
        """The reader starts inside a line (start_at: end while a writer is mid-line):
        the rest of that line is not a record."""
        self._skipping = True
        self._discard_first = True

    def feed(self, chunk: bytes) -> SplitResult:
        lines: list[bytes] = []
        oversized = 0
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                break
            if self._skipping:
                self._skipping = False
                self._skipped = 0
                self._discard_first = False
            elif len(self._pending) + newline - start > self.max_line_bytes:
                oversized += 1
                self._pending.clear()
            else:
                if self._pending:
                    self._pending += chunk[start:newline]
                    lines.append(bytes(self._pending))
                    self._pending.clear()
                else:
                    lines.append(chunk[start:newline])
            start = newline + 1
        if self._skipping:
            if not self._discard_first:
                self._skipped += len(chunk) - start
        else:
            self._pending += chunk[start:]
            if len(self._pending) > self.max_line_bytes:
                oversized += 1
                self._skipped = len(self._pending)
                self._pending.clear()
                self._skipping = True
        return SplitResult(lines=lines, oversized=oversized)

    def flush(self) -> bytes | None:
        """The held partial line, for a reader that knows the input is complete (replay)."""
        pending = None if self._skipping or not self._pending else bytes(self._pending)
        self.reset()
        return pending

    def reset(self) -> None:
        self._pending.clear()
        self._skipping = False
        self._skipped = 0
        self._discard_first = False
