"""The refusal signal's shortcuts must never change an answer.

`refusal_prefilter` lets a script's trigger scan be skipped when none of the
triggers' first characters occurs in the text, and `PhraseList.has_trigger`
stops at the first trigger instead of collecting them all. Both are only
allowed to save time: the property tests below build texts from the real
trigger list (so hits are common), mixed with other scripts, case changes and
curly quotes, and check the shortcut against the full scan.
"""

# Non-Latin scripts and curly apostrophes are what is under test here.
# ruff: noqa: RUF001

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.signals.refusal import _straighten, load_phrase_list
from exporter.signals.refusal_prefilter import first_characters, may_contain

PHRASES = load_phrase_list()
TRIGGERS = sorted(
    key[len(script.anchor) :] for script in PHRASES.scripts.values() for key in script.languages
)
OTHER = [" ", "\n", "\t", "'", "’", "I ", "x", "不", "н", "é", "Ü", "部署", "Развертывание", "İ"]

pieces = st.one_of(
    st.sampled_from(TRIGGERS),
    st.sampled_from(TRIGGERS).map(str.upper),
    st.sampled_from(OTHER),
    st.text(max_size=4),
)
texts = st.one_of(
    st.tuples(st.sampled_from(["", *OTHER]), st.sampled_from(TRIGGERS), st.text(max_size=4)).map(
        "".join
    ),  # one trigger, little else: a prefilter that misses it has nothing else to hide behind
    st.lists(pieces, max_size=12).map("".join),
)


def head_of(text: str) -> str:
    """What the gate in `RefusalDetector._phrase` scans."""
    return _straighten(text.lower()).replace("\n", " ")


@settings(max_examples=2000, deadline=None)
@given(texts)
def test_prefilter_never_rejects_a_text_the_trigger_regex_hits(text: str) -> None:
    for head in (text, head_of(text)):
        for script in PHRASES.scripts.values():
            hit = script.triggers.search(script.anchor + head)
            if hit is not None:
                assert may_contain(script.firsts, head), (script.anchor, hit.group(), head)


def languages_without_shortcuts(head: str) -> set[str]:
    """What `PhraseList.candidates` found before the shortcuts: every hit of every scan."""
    found = set()
    for name in ("latin",) if head.isascii() else ("latin", "cyrillic", "cjk"):
        script = PHRASES.scripts[name]
        for hit in script.triggers.finditer(script.anchor + head):
            found.update(language.name for language in script.languages[hit.group()])
    return found


@settings(max_examples=1000, deadline=None)
@given(texts)
def test_shortcuts_agree_with_the_full_scan(text: str) -> None:
    head = head_of(text)
    expected = languages_without_shortcuts(head)
    assert set(PHRASES.candidates(head)) == expected
    assert PHRASES.has_trigger(head) == bool(expected)


def test_every_trigger_passes_its_own_prefilter() -> None:
    for script in PHRASES.scripts.values():
        for key in script.languages:
            assert may_contain(script.firsts, key[len(script.anchor) :]), key


def test_first_characters_only_where_they_pay() -> None:
    assert PHRASES.scripts["latin"].firsts is None  # ASCII first letters: nearly every text
    assert PHRASES.scripts["cyrillic"].firsts is not None
    assert PHRASES.scripts["cjk"].firsts is not None
    assert first_characters(["не мог", "отказ"]) == "но"
    assert first_characters(["отказ", ""]) is None  # an empty trigger matches the bare anchor
    assert first_characters([]) is None
    assert first_characters(["不能", "can't"]) is None


def test_may_contain() -> None:
    assert may_contain(None, "")
    assert may_contain("но", "я не могу")
    assert not may_contain("но", "I cannot help")
    assert not may_contain("不", "")
