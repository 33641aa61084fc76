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
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where arrays are made: the config reads this module
    import numpy as np


@dataclass(frozen=True)
class Rows:
    rows: Sequence[Any]  # numpy arrays


@dataclass(frozen=True)
class Growing:
    values: array  # of "d"


def one_row(value: np.ndarray | None) -> Rows | None:
    """A learned array, set once and never written to (a sorted baseline, a mean)."""
    return None if value is None else Rows((value,))


def the_row(saved: Rows | Sequence[float] | None) -> np.ndarray | None:
    """`one_row`'s array again, from a snapshot or a store (rows), or from a state saved as
    a plain list by an older version."""
    import numpy as np

    if saved is None:
        return None
    if isinstance(saved, Rows):
        return np.asarray(saved.rows[0], dtype=np.float64)
    return np.asarray(saved, dtype=np.float64)


def rows_of(saved: Rows | Sequence[Sequence[float]]) -> list[np.ndarray]:
    import numpy as np

    rows = saved.rows if isinstance(saved, Rows) else saved
    return [np.asarray(v, dtype=np.float64) for v in rows]


def values_of(saved: Growing | Sequence[float]) -> array:
    return array("d", saved.values if isinstance(saved, Growing) else saved)
