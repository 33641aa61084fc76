"""Large, slowly changing parts of a detector snapshot, marked so a store can save them
incrementally.

A detector's running state (CUSUM sums, the current window) is small and changes with every
record; its baseline sample and learned arrays are large and, once learned, never change.
Saving the whole snapshot every second would rewrite the large parts every time. These
wrappers say how a part changes, so a state store writes only what is new:

- `Rows`: a sample of rows that are never written to once added (a slot may be given a new
  row, the list may grow or be emptied). A store compares row *objects* with those it last
  saved and writes only the slots that hold a new object.
- `Growing`: an array that only grows while it is the same object (a baseline being learned);
  a store writes only what was appended since it last saved it.

Restored, both come back as numpy float64 arrays (`Rows` as a list of rows); `restore` code
accepts them as it accepts plain lists.

A calibration in progress is saved too, as the observations held meanwhile (`held_state`),
and resumed on restore (`AT_ONCE` runs it where no executor is set).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # numpy is imported where arrays are made: the config reads this module
    import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Rows:
    rows: Sequence[Any]  # numpy arrays


@dataclass(frozen=True)
class Growing:
    values: array  # of "d"


def one_row(value: np.ndarray | None) -> Rows:
    """A learned array, set once and never written to (a sorted baseline, a mean); no rows
    while there is none (a detector's large parts are always under the same keys)."""
    return Rows(() if value is None else (value,))


def the_row(saved: Rows | Sequence[float] | None) -> np.ndarray | None:
    """`one_row`'s array again, from a snapshot or a store (rows), or from a state saved as
    a plain list by an older version."""
    import numpy as np

    if saved is None:
        return None
    if isinstance(saved, Rows):
        return np.asarray(saved.rows[0], dtype=np.float64) if saved.rows else None
    return np.asarray(saved, dtype=np.float64)


def rows_of(saved: Rows | Sequence[Sequence[float]]) -> list[np.ndarray]:
    import numpy as np

    rows = saved.rows if isinstance(saved, Rows) else saved
    return [np.asarray(v, dtype=np.float64) for v in rows]


def values_of(saved: Growing | Sequence[float]) -> array:
    return array("d", saved.values if isinstance(saved, Growing) else saved)


def held_state(held: Sequence[tuple[Any, int]], start: int, completed: int | None,
               appended: int) -> dict[str, Any]:
    """The observations a detector holds while its threshold is simulated, as saved:
    vectors (the embedding's) as rows, numbers as they are. `held` keeps the latest ones
    (`appended` so far): saved as a ring, each in the slot of its sequence number, so the
    rows already saved keep their slots as the oldest give way (see `Rows`)."""
    size = len(held)
    base = (appended - size) % size if size else 0  # the ring slot of the oldest
    ring: list[Any] = [None] * size
    records = [0] * size
    for index, (x, record) in enumerate(held):
        slot = (base + index) % size
        ring[slot], records[slot] = x, record
    return {
        "from": start,
        "completed": completed,
        "oldest": base,
        "records": records,
        "values": Rows(ring) if ring and hasattr(ring[0], "shape")
        else [float(x) for x in ring],
    }


def held_of(saved: dict[str, Any]) -> tuple[list[tuple[Any, int]], int | None]:
    """`held_state` read back: the (observation, record) pairs, oldest first, and the
    record that completed the baseline."""
    values = saved["values"]
    values = list(values.rows if isinstance(values, Rows) else values)
    records = [int(r) for r in saved["records"]]
    if len(values) != len(records):
        raise ValueError(f"{len(values)} held values for {len(records)} records")
    base = int(saved.get("oldest", 0))  # absent: saved oldest first
    order = [(base + index) % len(values) for index in range(len(values))]
    return [(values[i], records[i]) for i in order], saved.get("completed")


class _AtOnce(Executor):
    """Runs a job when it is submitted: a calibration resumed without an executor."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # the future carries it to `settle`
            future.set_exception(exc)
        return future


AT_ONCE = _AtOnce()
