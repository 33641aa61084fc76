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

    @property
    def pending_bytes(self) -> int:
        """Bytes held back as an incomplete line (the reader must not checkpoint past them)."""
        return len(self._pending)

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
        if not self._skipping:
            self._pending += chunk[start:]
            if len(self._pending) > self.max_line_bytes:
                oversized += 1
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
