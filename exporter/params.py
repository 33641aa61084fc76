"""A declared config parameter: type, default, bounds. The detectors' and the signals'
registries declare theirs with it, the config schema is built from them, and a detector's
constructor checks its own through them, so each is stated once. It lives apart from both
stages so that neither depends on the other to declare a parameter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Param:
    """One config parameter: its type (a Python type expression), default and bounds.

    config_schema.py turns it into JSON Schema; for a detector method's parameter,
    `error` is the check its constructor makes.
    """

    name: str
    type: Any
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[Any, ...] | None = None

    def error(self, value: Any) -> str | None:
        """Why `value` is not a valid number for this parameter (None when it is)."""
        low, high = self.minimum, self.maximum
        if self.type is int:  # bounded below only: counts
            assert low is not None and high is None
            if isinstance(value, int) and value >= low:
                return None
            return f"{self.name} must be >= {low:g}, got {value}"
        assert self.type is float and low is not None and high is not None
        if isinstance(value, int | float) and (
            (low < value if self.exclusive_minimum else low <= value)
            and (value < high if self.exclusive_maximum else value <= high)
        ):
            return None
        interval = (f"{'(' if self.exclusive_minimum else '['}{low:g}, "
                    f"{high:g}{')' if self.exclusive_maximum else ']'}")
        return f"{self.name} must be a number in {interval}, got {value!r}"

    def check(self, value: Any) -> None:
        """Raise the ValueError a detector's constructor raises for a bad value."""
        if (problem := self.error(value)) is not None:
            raise ValueError(problem)
