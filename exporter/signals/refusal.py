"""Refusal signal: did the model decline the request instead of doing it?

Each record gets one of these kinds, or None:

* ``structured``: the provider said so (``Record.structured_refusal``: Chat
  ``message.refusal``, Responses refusal parts, Anthropic ``stop_reason:
  refusal``, a content filter). The finish reasons ``refusal`` and
  ``content_filter`` count too, so a record from an adapter that does not set
  the flag is judged the same way. Exclude patterns never veto this kind: the
  provider's word beats a guess from the text.
* ``phrase``: the text opens with a refusal from the shipped, versioned list
  (``refusal_phrases.yaml``: English plus de, fr, es, it, pt, nl, pl, ru, zh,
  ja; and English capability and knowledge declines, "I don't have access to
  real-time information", "I'm not aware of any product called X", the bulk of
  refusals in real traffic: docs/refusal.md) and, judged as a whole, declines
  instead of delivering (below).
* ``custom``: a user ``extra_patterns`` regex matched the start of the text.

Why judge the whole reply: in real logs most replies that open with "I
apologize", "As an AI..." or "I cannot..." go on to do the task. Counting those
would make the refusal rate follow the model's manners, not its willingness.
The heuristic:

1. Normalize the head of the text: lower case, curly apostrophes and quotes
   made straight, whitespace collapsed, leading markdown and persona tags
   ("[🔒CLASSIC]", "BasedGPT:") removed.
2. An opening from the list must start within the first ``WINDOW`` normalized
   characters. Openings need a verb of doing the task ("I can't *help*",
   "je ne peux pas *aider*"), so "I can't stress enough" or "I cannot
   guarantee" are not openings, and broad words ("illegal", "never") never are.
3. The text after the opening decides. It *delivers* if, before any offer of
   alternatives, help line or moral verdict ("instead", "if your goal is", "I
   can help with", "illegal"), it has a code block or, with at least
   ``MIN_DELIVERY`` characters left, a delivery marker of the opening's
   language ("but here is the code", "voici", "step 1", "but I can explain how
   it works: ..."), or, at any length, such a marker in a "but" clause of the
   opening's own sentence ("I can't browse the internet, but here's what I
   know"); or if it is long (``LONG_TAIL``) and has no offer at all.
   Otherwise the reply declines: a short apology is a refusal, and so is "I
   can't do X, but here are safe alternatives: ...", even with an example.
   In a two-persona jailbreak reply the unlocked persona's part ("[🔓...]")
   is judged on its own, since that is the answer the user gets.

Cost: each language lists trigger substrings, one of which every opening
contains. The common case (no refusal) pays for step 1 on the first
``HEAD_CHARS`` characters plus one scan with the combined trigger regex of
its script (latin; for non-ASCII text also cyrillic and cjk, each skipped when
none of its triggers' first characters occurs: refusal_prefilter.py), a few
microseconds; the scan stops at the first trigger. Only
languages whose trigger occurs run their combined opening regex, and step 3
only runs after an opening matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from exporter.records.record import Record
from exporter.signals.refusal_normalize import normalize
from exporter.signals.refusal_normalize import straighten as _straighten
from exporter.signals.refusal_prefilter import first_characters, may_contain

__all__ = [
    "KINDS",
    "PhraseList",
    "RefusalDetector",
    "load_phrase_list",
    "normalize",
    "parse_phrase_list",
]

KINDS = ("structured", "phrase", "custom")

HEAD_CHARS = 300  # raw characters normalized for every record
WINDOW = 240  # an opening must start within this many normalized characters
CUSTOM_CHARS = 1000  # raw characters user patterns are matched against
TAIL_CHARS = 2000  # raw characters examined after an opening matched
MIN_DELIVERY = 160  # characters after the opening before a delivery marker counts
LONG_TAIL = 900  # a tail this long with no offer in it is taken as delivered

_STRUCTURED_FINISH = frozenset({"refusal", "content_filter"})
_SCRIPTS = ("latin", "cyrillic", "cjk")
_WORD_START = {"latin": r"\b", "cyrillic": r"\b", "cjk": ""}
_DATA_FILE = "refusal_phrases.yaml"

_FENCE = "'''"  # a code fence after normalize (refusal_normalize.py)
_UNLOCKED = "🔓"  # the "jailbroken" persona of DAN-style prompts


def _trie_regex(words: Iterable[str]) -> str:
    """An alternation of literals shaped as a trie, which `re` scans far faster than a flat one."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + build(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        if len(branches) == 1 and "" not in node:
            return branches[0]
        return "(?:" + "|".join(branches) + ")" + ("?" if "" in node else "")

    return build(trie)


def _but_clause(tail: str, marker: re.Match[str]) -> bool:
    """Whether a delivery marker is a "but" clause of the opening's own sentence.

    "I'm not able to browse the internet, but here's what I know: ..." or "I don't have
    real-time data, but as of 2021 ..." says in one breath that the reply delivers, however
    short the rest is; "I can't. Here's why" does not.
    """
    prefix = tail[: marker.start()]
    if any(mark in prefix for mark in ".!?"):
        return False
    return prefix.rstrip().endswith(" but") or marker.group().startswith(("but ", "however"))


@dataclass(frozen=True, slots=True)
class _Language:
    name: str
    opening: re.Pattern[str]
    delivery: re.Pattern[str] | None
    offers: re.Pattern[str] | None

    def delivers(self, tail: str) -> bool:
        """Whether the text after an opening goes on to do the task (module docstring)."""
        offer = self.offers.search(tail) if self.offers is not None else None
        limit = offer.start() if offer is not None else len(tail)
        if tail.find(_FENCE, 0, limit) >= 0:
            return True
        if self.delivery is not None:
            marker = self.delivery.search(tail)
            if (
                marker is not None
                and marker.start() < limit
                and (len(tail) >= MIN_DELIVERY or _but_clause(tail, marker))
            ):
                return True
        return offer is None and len(tail) >= LONG_TAIL


@dataclass(frozen=True, slots=True)
class _Script:
    anchor: str  # " " where triggers start a word (latin, cyrillic), "" for cjk
    triggers: re.Pattern[str]
    languages: dict[str, tuple[_Language, ...]]  # matched trigger text -> languages to try
    firsts: str | None  # see refusal_prefilter.py

    def candidates(self, head: str, into: dict[str, _Language]) -> None:
        if not may_contain(self.firsts, head):
            return
        for hit in self.triggers.finditer(self.anchor + head if self.anchor else head):
            for language in self.languages.get(hit.group(), ()):
                into[language.name] = language

    def occurs(self, head: str) -> bool:
        """Whether `candidates` would find a language: any hit will do (each is a trigger)."""
        if not may_contain(self.firsts, head):
            return False
        return self.triggers.search(self.anchor + head if self.anchor else head) is not None


@dataclass(frozen=True, slots=True)
class PhraseList:
    """The compiled shipped list."""

    version: str
    scripts: dict[str, _Script]

    def _scripts_for(self, head: str) -> list[_Script]:
        """The scripts whose triggers may occur in `head`: latin alone for ASCII text."""
        names = ("latin",) if head.isascii() else _SCRIPTS
        return [self.scripts[name] for name in names if name in self.scripts]

    def candidates(self, head: str) -> dict[str, _Language]:
        """Languages whose triggers occur in `head` (lower case, straight quotes)."""
        found: dict[str, _Language] = {}
        for script in self._scripts_for(head):
            script.candidates(head, found)
        return found

    def has_trigger(self, head: str) -> bool:
        """Whether `candidates(head)` is not empty, without collecting every hit."""
        return any(script.occurs(head) for script in self._scripts_for(head))

    def opening(self, normalized: str) -> tuple[_Language, re.Match[str]] | None:
        """The earliest refusal opening that starts within the window of `normalized`."""
        window = normalized[:WINDOW]
        best: tuple[_Language, re.Match[str]] | None = None
        for language in self.candidates(window).values():
            match = language.opening.search(window)
            if match is not None and (best is None or match.start() < best[1].start()):
                best = (language, match)
        return best

    def declines(self, normalized: str) -> bool:
        """Whether normalized text opens with a refusal and does not go on to deliver."""
        while True:
            found = self.opening(normalized)
            if found is None:
                return False
            language, match = found
            unlocked = normalized.find(_UNLOCKED)
            if unlocked < 0:
                return not language.delivers(normalized[match.end() :])
            # Two personas: the unlocked one's part (up to the next locked one) is the answer.
            normalized = normalize(normalized[unlocked + 1 :].split("\U0001f512", 1)[0])


def _definitions(raw: Any) -> dict[str, str]:
    defs = {}
    for name, value in (raw or {}).items():
        text = "(?:" + "|".join(map(str, value)) + ")" if isinstance(value, list) else str(value)
        defs[str(name)] = text
    return defs


def _combine(where: str, entries: Any, defs: dict[str, str]) -> str | None:
    """One alternation of a language's entries; each is compiled alone first for its error."""
    if not entries:
        return None
    parts = []
    for index, entry in enumerate(entries):
        pattern = str(entry["re"])
        for name, value in defs.items():
            pattern = pattern.replace("{{" + name + "}}", value)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{where}.{index}: invalid regex {pattern!r}: {exc}") from exc
        parts.append(f"(?:{pattern})")
    return "|".join(parts)


def parse_phrase_list(data: dict[str, Any]) -> PhraseList:
    """Compile the YAML structure (described at the top of the data file)."""
    defs = _definitions(data.get("defs"))
    by_script: dict[str, dict[str, list[_Language]]] = {}
    for name, spec in (data.get("languages") or {}).items():
        where = f"languages.{name}"
        script = spec.get("script", "latin")
        if script not in _SCRIPTS:
            raise ValueError(f"{where}.script: must be one of {', '.join(_SCRIPTS)}")
        triggers = [str(t).lstrip() for t in spec.get("triggers") or ()]
        openings = _combine(f"{where}.openings", spec.get("openings"), defs)
        if openings is None or not triggers:
            raise ValueError(f"{where}: needs openings and triggers")
        delivery = _combine(f"{where}.delivery", spec.get("delivery"), defs)
        offers = _combine(f"{where}.offers", spec.get("offers"), defs)
        language = _Language(
            name=str(name),
            opening=re.compile(f"{_WORD_START[script]}(?:{openings})"),
            delivery=re.compile(delivery) if delivery else None,
            offers=re.compile(offers) if offers else None,
        )
        table = by_script.setdefault(script, {})
        for trigger in triggers:
            table.setdefault(trigger, []).append(language)
    scripts = {}
    for script, table in by_script.items():
        anchor = " " if _WORD_START[script] else ""
        # The trie regex matches the longest trigger at a place, so a hit also stands for
        # every shorter trigger it starts with ("refuser" for "refuse").
        languages = {
            anchor + key: tuple(
                {
                    lang.name: lang
                    for k, langs in table.items()
                    if key.startswith(k)
                    for lang in langs
                }.values()
            )
            for key in table
        }
        scripts[script] = _Script(
            anchor=anchor,
            triggers=re.compile(re.escape(anchor) + _trie_regex(table)),
            languages=languages,
            firsts=first_characters(table),
        )
    return PhraseList(version=str(data.get("version", "unknown")), scripts=scripts)


@lru_cache(maxsize=1)
def load_phrase_list() -> PhraseList:
    """The list shipped inside the package, compiled once per process."""
    text = resources.files("exporter.signals").joinpath(_DATA_FILE).read_text(encoding="utf-8")
    return parse_phrase_list(yaml.safe_load(text))


def _compile_user(patterns: Iterable[str], what: str) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except (re.error, TypeError) as exc:
            raise ValueError(f"invalid refusal {what} pattern {pattern!r}: {exc}") from exc
    return tuple(compiled)


class RefusalDetector:
    """Classify records as refusals; the rules are in the module docstring.

    User patterns are Python regexes matched case-insensitively (``search``)
    against the normalized first ``CUSTOM_CHARS`` characters: straight quotes,
    single spaces, leading persona tags removed. A user pattern is trusted as
    is: no delivery check. Exclude patterns veto phrase and custom matches,
    never structured ones.
    """

    def __init__(
        self,
        extra_patterns: Sequence[str] = (),
        exclude_patterns: Sequence[str] = (),
        phrases: PhraseList | None = None,
    ) -> None:
        self._extra = _compile_user(extra_patterns, "extra")
        self._exclude = _compile_user(exclude_patterns, "exclude")
        self._phrases = phrases if phrases is not None else load_phrase_list()

    @property
    def phrases_version(self) -> str:
        """Version of the phrase list in use, for the info metric."""
        return self._phrases.version

    def classify(self, record: Record) -> str | None:
        """``structured``, ``phrase``, ``custom`` or None (not a refusal)."""
        if record.structured_refusal or record.finish_reason in _STRUCTURED_FINISH:
            return "structured"
        return self.classify_text(record.output_text)

    def classify_text(self, text: str | None) -> str | None:
        """The text part of `classify`: ``phrase``, ``custom`` or None."""
        if not text:
            return None
        kind = "phrase" if self._phrase(text) else None
        if not self._extra and not self._exclude:
            return kind
        head = normalize(text[:CUSTOM_CHARS])
        if kind is None and any(pattern.search(head) for pattern in self._extra):
            kind = "custom"
        if kind is not None and any(pattern.search(head) for pattern in self._exclude):
            return None
        return kind

    def _phrase(self, text: str) -> bool:
        phrases = self._phrases
        head = text[:HEAD_CHARS].lower()
        if not phrases.has_trigger(_straighten(head).replace("\n", " ")):
            return False  # the common case: no trigger word in the head
        if phrases.opening(normalize(head)) is None:
            return False
        return phrases.declines(normalize(text[:TAIL_CHARS]))
