"""Why a record was rejected; the reason becomes the `reason` label."""

from __future__ import annotations


class RejectedRecord(Exception):  # named as a verdict, not an error: it is expected
    """Raised by parsing and normalization; `reason` is a short snake_case label value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
