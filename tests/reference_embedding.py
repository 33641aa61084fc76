"""A plain, one-text-at-a-time reference for the built-in embedding (exporter.signals.embedding).

The module computes every feature of up to 64 texts in a few numpy passes; this file computes
the same vector the obvious way, with loops over characters, tokens and n-grams and Python
integers for the hashes, so that the tests can use it as the oracle and a reader can use it as
the specification. The steps, as in the module docstring:

1. prepare: whitespace-only text counts as empty; a text over MAX_CHARS characters keeps its
   first 3/4 of MAX_CHARS, a space and its last 1/4;
2. fold and classify each character: lowercase, ASCII digits 1-9 as 0; the class (space, word,
   CJK, punctuation) of the folded character, from the module's fixed ranges (`_CLASS_RANGES`,
   data shared with the module, not computation);
3. features, each a 32-bit polynomial hash of code points with the seed's odd `base`:
   tokens (runs of word or of punctuation characters; each CJK character alone), bigrams of
   neighbouring tokens, and the character 3-, 4- and 5-grams of each word with "<" and ">"
   marks (code point 1) around it. Listed in that order, n-grams by length then position:
   the order their weights are added in, as in the module, so the sums are the same floats;
4. mix each hash (xorshift-multiply): its top bit is the sign, the next log2(dimension) bits
   the bucket, its top 13 bits the "slot" that counts occurrences;
5. weight: 1/sqrt(features of the text in the same slot), so a feature seen k times adds
   sqrt(k) in all (features colliding in 13 bits count together: that is the algorithm);
   bigrams and n-grams x0.5;
6. sum the weights per bucket, positive and negative contributions apart, then subtract;
7. divide by the Euclidean norm; a text without features gets the fixed vector 1/sqrt(dim).
"""

from __future__ import annotations

import hashlib
import math
from itertools import pairwise

import numpy as np

from exporter.signals.embedding import _CJK, _CLASS_RANGES, _SPACE, _WORD, MAX_CHARS

MASK = 0xFFFFFFFF  # hashes are integers mod 2**32
SLOT_BITS = 13
BIGRAM_WEIGHT = NGRAM_WEIGHT = 0.5
MARK = 1  # the code point standing for the "<" and ">" around a word in its n-grams


def prepare(text: str) -> str:
    if text.isspace():
        return ""
    if len(text) > MAX_CHARS:
        return text[: MAX_CHARS * 3 // 4] + " " + text[-MAX_CHARS // 4 :]
    return text


def fold(char: str) -> int:
    """The code point the hashes see: lowercase (U+0130, whose lowercase is two characters, as
    "i"), ASCII digits 1-9 as "0"."""
    if "1" <= char <= "9":
        return ord("0")
    lowered = "i" if char == "\u0130" else char.lower()
    return ord(lowered)


# (class, first, last code point) in the module's order: where ranges overlap, the later wins
CLASS_SPANS = [
    (kind, int(low, 16), int(high or low, 16))
    for kind, spans in _CLASS_RANGES
    for low, _, high in (span.partition("-") for span in spans.split())
]


def char_class(code_point: int) -> int:
    """The class of the last span that holds the code point; word where none does."""
    kind = _WORD
    for span_kind, first, last in CLASS_SPANS:
        if first <= code_point <= last:
            kind = span_kind
    return kind


def hash_constants(seed: int) -> tuple[int, int, int]:
    """(base, token multiplier, bigram multiplier): odd 32-bit words from the seed's digest."""
    digest = hashlib.blake2b(str(seed).encode(), digest_size=64, person=b"llm-drift-emb").digest()
    words = [int.from_bytes(digest[i : i + 4], "little") | 1 for i in range(0, 64, 4)]
    return words[0], words[1], words[2]


def polynomial(code_points: list[int], base: int) -> int:
    """sum(c[k] * base**(k+1)) mod 2**32."""
    return sum(c * pow(base, k + 1, 1 << 32) for k, c in enumerate(code_points)) & MASK


def tokens_and_words(text: str) -> tuple[list[list[int]], list[list[int]]]:
    """Folded code points of each token and of each word (maximal run of word characters)."""
    tokens: list[list[int]] = []
    words: list[list[int]] = []
    previous = _SPACE
    for char in text:
        code_point = fold(char)
        kind = char_class(code_point)
        if kind != _SPACE:
            if kind != previous or kind == _CJK:
                tokens.append([])
            tokens[-1].append(code_point)
        if kind == _WORD:
            if previous != _WORD:
                words.append([])
            words[-1].append(code_point)
        previous = kind
    return tokens, words


def features(text: str, seed: int) -> list[tuple[int, float]]:
    """(unmixed hash, weight before tf) of every feature of a prepared text, in order."""
    base, token_multiplier, pair_multiplier = hash_constants(seed)
    tokens, words = tokens_and_words(text)
    token_hashes = [polynomial(token, base) * token_multiplier & MASK for token in tokens]
    found = [(h, 1.0) for h in token_hashes]
    for left, right in pairwise(token_hashes):
        found.append(((left * pair_multiplier + right) & MASK, BIGRAM_WEIGHT))
    for n in (3, 4, 5):
        for word in words:
            marked = [MARK, *word, MARK]
            for start in range(len(marked) - n + 1):
                found.append((polynomial(marked[start : start + n], base), NGRAM_WEIGHT))
    return found


def mix(h: int) -> int:
    h ^= h >> 15
    return h * 0x2C1B3C6D & MASK


def reference_embedding(text: str, dimension: int = 256, seed: int = 0x11D) -> np.ndarray:
    """The embedding of one text: float32, shape (dimension,), unit norm."""
    mixed = [(mix(h), weight) for h, weight in features(prepare(text), seed)]
    slot_counts: dict[int, int] = {}
    for h, _ in mixed:
        slot_counts[h >> (32 - SLOT_BITS)] = slot_counts.get(h >> (32 - SLOT_BITS), 0) + 1
    bucket_bits = dimension.bit_length() - 1
    positive, negative = [0.0] * dimension, [0.0] * dimension
    for h, weight in mixed:
        tf_weight = 1.0 / math.sqrt(slot_counts[h >> (32 - SLOT_BITS)]) * weight
        bucket = (h >> (31 - bucket_bits)) & (dimension - 1)
        if h >> 31:
            negative[bucket] += tf_weight
        else:
            positive[bucket] += tf_weight
    vector = [p - n for p, n in zip(positive, negative, strict=True)]
    norm = math.sqrt(math.fsum(v * v for v in vector))
    if norm == 0:
        return np.full(dimension, 1 / math.sqrt(dimension), dtype=np.float32)
    return np.array([v / norm for v in vector], dtype=np.float32)
