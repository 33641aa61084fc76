"""Self-metrics of one input, owned by that input and read by the collector at scrape time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class InputStats:
    name: str
    kind: str
    records: int = 0
    rejected: int = 0
    bytes_read: int = 0
    last_record_timestamp: float | None = None
    read_errors: Counter[str] = field(default_factory=Counter)
    files_watched: int = 0
    rotations: int = 0
    truncations: int = 0
    pending: int = 0  # HTTP push: requests being read right now
    responses: Counter[int] = field(default_factory=Counter)  # HTTP push: by status code
