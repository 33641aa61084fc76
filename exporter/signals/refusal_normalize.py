"""Normalization of a reply's text before the refusal phrase list reads it.

Split out of refusal.py (which keeps the phrase list and the judgement) so that each stays a
readable size. The phrase list is written against this form: lower case, ASCII quotes,
single spaces, no leading markdown or persona tags (refusal_phrases.yaml's header).
"""

from __future__ import annotations

import re

__all__ = ["normalize", "straighten"]

# Models write apostrophes and quotes in several code points; patterns use the ASCII ones.
# Backticks become apostrophes too, so a code fence reads as ''' after normalizing.
_QUOTES = (
    ("\u2019", "'"),  # right single quotation mark: the usual curly apostrophe
    ("\u2018", "'"),
    ("\u201b", "'"),
    ("\u02bc", "'"),  # modifier letter apostrophe
    ("\uff07", "'"),  # fullwidth apostrophe
    ("\u00b4", "'"),
    ("`", "'"),
    ("\u201c", '"'),
    ("\u201d", '"'),
    ("\u201e", '"'),
    ("\u00ab", '"'),
    ("\u00bb", '"'),
    ("\uff02", '"'),
)
# What a reply may start with before its first word: whitespace, markdown marks, quotes,
# a bracketed tag, emoji; and separately a short "Name:" label such as "BasedGPT:".
_MARKUP = re.compile(
    r"(?:\s+|[#>*_~'\"|=+-]+|\[[^\]\n]{0,40}\]|\([^)\n]{0,40}\)"
    r"|[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F\u200D]+)+"
)
_LABEL = re.compile(r"[^\s:\[\]()]{1,24}(?: [^\s:\[\]()]{1,24})?:(?=\s)")


def _strip_lead(text: str) -> str:
    start = 0
    while True:
        markup = _MARKUP.match(text, start)
        if markup is not None:
            start = markup.end()
        label = _LABEL.match(text, start) if ":" in text[start : start + 50] else None
        if label is None:
            return text[start:] if start else text
        start = label.end()


def straighten(text: str) -> str:
    """Curly and fullwidth quotes and backticks made ASCII (cheap for ASCII text)."""
    if text.isascii():
        return text.replace("`", "'") if "`" in text else text
    for old, new in _QUOTES:
        if old in text:
            text = text.replace(old, new)
    return text


def normalize(text: str) -> str:
    """Lower case, straight quotes, one space between words, leading tags removed."""
    return " ".join(_strip_lead(straighten(text.lower())).split())
