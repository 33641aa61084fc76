"""The built-in embedding against its plain reference, and its packed path against single texts.

tests/reference_embedding.py computes each vector one text at a time with plain loops; it is the
oracle. It adds every feature's weight to its bucket in the same order as the module, so the
bucket sums are the same float64 numbers; only the norm is summed differently (math.fsum, where
the module uses numpy's pairwise `add.reduce`). Those two sums of squares differ by at most a few
float64 ulps (2**-52 relative), a million times finer than a float32 ulp, so after the division
and the cast to float32 a component can differ by at most one float32 ulp, and only when the
float64 quotient lies next to a float32 rounding boundary (in practice: never). Anything else,
a feature lost, a bucket or sign wrong, moves components by far more.

`embed_many` packs up to 64 texts into one numpy pass and must give every text the same bits as
`embed` alone: batches spanning several passes, texts cut to head+tail inside a batch, empty and
blank texts between others (bigrams must not cross them), and the extreme dimensions 16 and 4096
(the bucket is read from the tf slot's top bits). The pinned digests were computed before the
packed path was reworked.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.signals.embedding import _CLASSES, _FOLD, MAX_CHARS, TextEmbedder
from tests.reference_embedding import CLASS_SPANS, char_class, fold, reference_embedding

# words, punctuation runs, CJK, emoji, combining marks, digits, blanks, a lone surrogate
PIECES = [
    *"refund Refunded ship İstanbul straße Привет мир 中文 退款已处理 😀 👍🏽 42".split(),
    *["2024-05-01", "e\u0301", '{"a": 1}', "```", "\n", "\n- ", " ", "  ", "\t", "\u3000"],
    *[".", "...", "?!", "_x_", "a", "\ud800", "ｱｲｳ", "한국어"],
]


def corpus(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    sizes = [0, 1, 2, 5, 20, 80, 300, MAX_CHARS - 1, MAX_CHARS + 1, 2000]
    texts = []
    for _ in range(n):
        size = rng.choice(sizes)
        text = ""
        while len(text) < size:
            text += rng.choice(PIECES) + rng.choice(["", " ", " ", ", "])
        texts.append(text[:size])
    return texts


def bits(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32).view(np.uint32)


def assert_matches_reference(
    vectors: np.ndarray, texts: list[str], dimension: int, seed: int = 0x11D
) -> None:
    """Equal to the reference to one float32 ulp (the module docstring says why)."""
    expected = [reference_embedding(text, dimension, seed) for text in texts]
    expected_array = np.array(expected, dtype=np.float32).reshape(len(texts), dimension)
    np.testing.assert_array_max_ulp(vectors.reshape(len(texts), dimension), expected_array, 1)


# sha256 of embed_many(corpus(7, 400)) per (dimension, seed), from the pre-rework module
GOLDEN = {
    (16, 0x11D): "815f3a9f59f331ac69778df9f006ad659c8e1d35b2b08395bfabaf8beff0c2cb",
    (256, 0x11D): "08ec392fb0d2b976e3732f56fb3f6986feceb7f90bfa0ac85e899375ae17e7f6",
    (4096, 3): "9a4d0c40c5ec130cee40ff6e956d41020227c6cbc458f3a159cdedf2ca8fcc68",
}


@pytest.mark.parametrize(("dimension", "seed"), list(GOLDEN))
def test_multi_pass_batches_are_bit_identical_and_pinned(dimension: int, seed: int) -> None:
    texts = corpus(7, 400)  # 400 texts, 130 K chars: passes end at both limits
    embedder = TextEmbedder(dimension=dimension, seed=seed)
    many = embedder.embed_many(texts)
    single = np.stack([embedder.embed(t) for t in texts])
    assert np.array_equal(bits(many), bits(single))
    assert_matches_reference(many, texts, dimension, seed)
    assert hashlib.sha256(bits(many).tobytes()).hexdigest() == GOLDEN[dimension, seed]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.lists(st.sampled_from([*PIECES, " "]), max_size=120).map("".join),
            st.sampled_from(["", " ", "\n", "x" * (MAX_CHARS + 7)]),
        ),
        max_size=150,
    ),
    st.sampled_from([16, 4096]),
)
def test_any_batch_matches_single_embeddings_at_extreme_dimensions(
    texts: list[str], dimension: int
) -> None:
    embedder = TextEmbedder(dimension=dimension)
    many = embedder.embed_many(texts).reshape(len(texts), dimension)
    single = np.array([embedder.embed(t) for t in texts], dtype=np.float32)
    assert np.array_equal(bits(many), bits(single.reshape(len(texts), dimension)))
    assert_matches_reference(many, texts, dimension)


def test_character_tables_follow_the_plain_rules() -> None:
    """The module's lookup tables: the fold of every code point, the class at every span's
    edges (where a table built off by one would differ)."""
    assert all(fold(chr(code_point)) == _FOLD[code_point] for code_point in range(0x110000))
    edges = {c + d for _, first, last in CLASS_SPANS for c in (first, last) for d in (-1, 0, 1)}
    assert all(char_class(c) == _CLASSES[c] for c in sorted(edges) if 0 <= c < 0x110000)


texts = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=60),  # any code point
    st.text(alphabet=st.characters(exclude_categories=()), min_size=MAX_CHARS - 3, max_size=600),
    st.lists(st.sampled_from([*PIECES, " "]), max_size=150).map("".join),
    st.sampled_from(["", " ", "\n\t", "a", "ab", "\u0130", "x" * (MAX_CHARS + 7)]),
)


@settings(max_examples=300, deadline=None)
@given(texts, st.sampled_from([16, 256, 4096]), st.sampled_from([0x11D, 0, 3, 2**40 + 1]))
def test_any_text_matches_the_reference(text: str, dimension: int, seed: int) -> None:
    vector = TextEmbedder(dimension=dimension, seed=seed).embed(text)
    assert_matches_reference(vector, [text], dimension, seed)
