"""Cheap tests that let the refusal signal skip a trigger scan that cannot hit.

A script's combined trigger regex (refusal.py) costs time at every place it
could start: every space for cyrillic, every character for cjk. In a reply
without a single character of that script the scan can only fail, so it is
worth a few `in` tests first: every match of a trigger regex starts with its
anchor and then the first character of one of the triggers, so if none of
those first characters occurs in the text, the regex cannot match it.

The test only pays where those first characters are rare in other text: the
non-Latin scripts, whose first characters are all non-ASCII. A script with an
ASCII first character (latin) gets no prefilter, and is always scanned.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["first_characters", "may_contain"]


def first_characters(triggers: Iterable[str]) -> str | None:
    """The first characters of `triggers` (without their anchor), or None where testing for
    them would not pay: one of them is ASCII, so nearly every text has it."""
    triggers = list(triggers)
    if not triggers or not all(triggers):  # an empty trigger matches the bare anchor
        return None
    firsts = sorted({trigger[0] for trigger in triggers})
    if any(char.isascii() for char in firsts):
        return None
    return "".join(firsts)


def may_contain(firsts: str | None, text: str) -> bool:
    """False only if a trigger whose first characters are `firsts` cannot occur in `text`."""
    if firsts is None:
        return True
    # `in` on a str is a C scan, and costs nothing when `text` holds no characters that wide;
    # map() keeps the loop in C too (a generator would cost more than the scans).
    return any(map(text.__contains__, firsts))
