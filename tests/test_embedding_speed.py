"""Guards for the packed (`embed_many`) fast path of exporter.signals.embedding.

tests/test_embedding.py pins four single texts and checks small batches (under one numpy pass,
dimensions 32 and 256). These cover what its speed-ups could break unseen: batches spanning
several passes, texts cut to head+tail inside a batch, empty and blank texts between others
(bigrams must not cross them), and the extreme dimensions 16 and 4096 (the bucket is read from
the tf slot's top bits). The pinned digest was computed before the packed path was reworked.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.signals.embedding import MAX_CHARS, TextEmbedder

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
