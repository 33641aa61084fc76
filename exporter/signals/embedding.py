"""Built-in text embedding for the ``embedding`` drift signal: numpy only, no model download.

Features: word unigrams and bigrams, punctuation runs as tokens (``{"``, ``":``, ``\\n-``), and
character 3-5-grams of words with start/end marks (fastText style: "refund", "refunds" and
"refunded" share most). CJK has no spaces, so each CJK character is a word and neighbours a
bigram. Text is lowercased, digits fold to 0 (numbers vary per request, their shape does not).
Weights: sqrt of term frequency; bigrams and n-grams x0.5 (a word has ~10 n-grams).

It sees vocabulary and topic mix, language and script, style (hedging, markdown, code), format
(JSON vs prose), new boilerplate; length only weakly (unit norm; long texts cut to head+tail).
It misses paraphrase that keeps the meaning, synonyms, and changed facts in the same words: that
needs a semantic model, whose vectors users can supply per record (`vector_from_record`). Good
enough as a first tier: it costs about what counting the text's tokens does, is the same
everywhere, and the drifts seen in practice (a new model snapshot, a prompt or template change,
a broken tool, a language switch) change wording or format.

Design: features are hashed straight into `dimension` signed buckets (the hashing trick) rather
than multiplied by a projection matrix: signed hashing is itself a sparse random projection
(inner products kept in expectation), stores nothing, and the seed only sets hash constants.
The hash is a polynomial over code points mod 2**32 for all substrings at once, from numpy
prefix sums, plus one xorshift-multiply: integer arithmetic with defined wrap-around, so the
same in every process, platform and numpy version (never Python's salted ``hash()``), and far
cheaper than ``zlib.crc32`` or ``blake2b`` per feature (``benchmarks/bench_embedding.py``).
sqrt and division are correctly rounded and sums use numpy's fixed-order ``add.reduce``, not
BLAS, so the floats are bit-identical too. Empty or whitespace-only text gives the fixed unit
vector `TextEmbedder.empty` (1/sqrt(dim) everywhere): all embeddings have norm 1, and a surge of
empty replies is itself a visible shift.

``tests/reference_embedding.py`` computes the same vectors one text at a time with plain loops:
read it first. It is the tests' oracle, and its numbered steps (1 prepare, 2 fold and classify,
3 features, 4 mix, 5 tf weight, 6 bucket sums, 7 normalise) are marked in `_embed_packed`.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np

__all__ = [
    "FEATURES_VERSION", "MAX_CHARS", "FeatureShift", "TextEmbedder", "top_features",
    "vector_from_record",
]

# Longer texts: the first 3/4 and the last 1/4 of this. The opening shows topic, language and
# format, the end sign-offs and a closing "}"; length has its own signal. Cost is linear in it.
MAX_CHARS = 512
# Changes whenever the same text may embed differently (saved embedding baselines must then be
# learned again): 2 = the 512-character sample; 1 (0.1.0) read up to 4,096 characters.
FEATURES_VERSION = 2
_PASS_CHARS = 16384  # chars per numpy pass in embed_many: large enough that per-call costs vanish
_PACK = 64  # texts per numpy pass at most (the tf table below takes 2**_SLOT_BITS slots each)
_TABLE = _PASS_CHARS + 2 * MAX_CHARS + 16  # powers of base: enough for any pass
_BIGRAM_WEIGHT, _NGRAM_WEIGHT = 0.5, 0.5  # vs words; best topic/language separation measured
_SLOT_BITS = 13  # hash bits of the per-text table that counts occurrences for tf weighting
_RSQRT = 1.0 / np.sqrt(np.maximum(np.arange(8 * MAX_CHARS, dtype=np.float64), 1.0))
_SPACE, _WORD, _CJK, _PUNCT = 0, 1, 2, 3
_U = np.uint32


# Character classes as inclusive hex ranges, applied in order; anything else is a word char.
_CLASS_RANGES = (
    (_PUNCT, "a1-bf d7 f7 2010-205f 20a0-20ff 2190-2bff 3001-303f fe10-fe1f fe30-fe6f ff01-ff0f"),
    (_PUNCT, "ff1a-ff20 ff3b-ff40 ff5b-ff65 1f000-1faff"),  # ... fullwidth forms, emoji
    (_CJK, "2e80-2fdf 3040-30ff 31f0-31ff 3400-4dbf 4e00-9fff f900-faff ff66-ff9f 20000-3ffff"),
    (_SPACE, "0-20 7f-a0 2000-200f 202f 205f-2064 3000 fe00-fe0f feff"),  # incl. controls
    (_PUNCT, "21-2f 3a-40 5b-5e 60 7b-7e a"),  # ASCII punctuation ("_" stays a word char), "\n"
)


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Per code point, its class and its folded form (lowercase, digits as 0) as lookups:
    ``str.lower`` on non-ASCII text costs more than all the rest of the tokenizing. Cased
    characters all lie below U+1F000; U+0130, the one that lowers to two characters, becomes i.
    Classes are fixed ranges, not `unicodedata`, whose tables change with the Python version."""
    classes = np.full(0x110000, _WORD, dtype=np.uint8)
    for kind, spans in _CLASS_RANGES:
        for span in spans.split():
            lo, _, hi = span.partition("-")
            classes[int(lo, 16) : int(hi or lo, 16) + 1] = kind
    fold = np.arange(0x110000, dtype=np.uint32)
    chars = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x1F000)))
    lowered = chars.replace("\u0130", "I").lower().encode("utf-32-le")
    fold[np.r_[0:0xD800, 0xE000:0x1F000]] = np.frombuffer(lowered, dtype=np.uint32)
    fold[0x31:0x3A] = 0x30
    return classes, fold


_CLASSES, _FOLD = _tables()


def _powers(base: int) -> np.ndarray:  # base**i mod 2**32
    return np.r_[_U(1), np.multiply.accumulate(np.full(_TABLE - 1, base, _U), dtype=_U)]


def _prepare(text: str) -> str:
    """Step 1: the part of a text that is embedded."""
    if text.isspace():  # newlines are tokens (format), but newlines alone are no reply
        return ""
    if len(text) > MAX_CHARS:
        return text[: MAX_CHARS * 3 // 4] + " " + text[-MAX_CHARS // 4 :]
    return text


def _codepoints(text: str) -> np.ndarray:
    """Step 2: folded code points (lone surrogates pass through); `_CLASSES.take` classifies."""
    return _FOLD.take(np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32))


class TextEmbedder:
    """Deterministic hashed n-gram embedding (see the module docstring). `dimension` is a power
    of two (16..4096) so that a bucket is a plain shift of the hash. Immutable, thread-safe."""

    def __init__(self, dimension: int = 256, seed: int = 0x11D) -> None:
        if dimension < 16 or dimension > 4096 or dimension & (dimension - 1):
            raise ValueError(f"dimension must be a power of two in [16, 4096], got {dimension}")
        self.dimension = dimension
        self.seed = seed
        digest = hashlib.blake2b(str(seed).encode(), digest_size=64, person=b"llm-drift-emb")
        words = [int(w) | 1 for w in np.frombuffer(digest.digest(), dtype="<u4")]  # odd
        base = words[0]  # odd, so invertible mod 2**32
        self._pow = _powers(base)  # base**i
        self._inv = _powers(pow(base, -1, 1 << 32))  # base**-i
        self._inv1 = self._inv * _U(base)  # base**(1-i): a hash's first char gets base**1
        self._inv_uni = self._inv * _U(words[1])  # tokens: words[1]*base**k, apart from n-grams
        self._pair = _U(words[2])
        self.empty = np.full(dimension, 1 / math.sqrt(dimension), dtype=np.float32)
        self.empty.flags.writeable = False  # the vector of empty and whitespace-only text

    def embed(self, text: str) -> np.ndarray:
        """Embedding of one text: shape ``(dimension,)``, float32, unit norm."""
        return self._embed_packed([_prepare(text)])[0]

    def embed_many(self, texts: Iterable[str]) -> np.ndarray:
        """Embeddings of many texts, shape ``(n, dimension)``, bit-identical to `embed` on each.
        Texts share numpy passes (up to 16 K chars and 64 texts a pass), so the fixed cost of
        a numpy call, most of `embed` on a short text, is paid once per pass: the pipeline
        embeds each read chunk this way (``benchmarks/bench_embedding.py``)."""
        out, batch, size = [], [], 0
        for text in map(_prepare, texts):
            if batch and (size + len(text) > _PASS_CHARS or len(batch) == _PACK):
                out.append(self._embed_packed(batch))
                batch, size = [], 0
            batch.append(text)
            size += len(text) + 1
        if batch:
            out.append(self._embed_packed(batch))
        return np.concatenate(out) if out else np.zeros((0, self.dimension), np.float32)

    def _embed_packed(self, texts: list[str]) -> np.ndarray:
        """Embed prepared texts joined by spaces in one numpy pass; no feature crosses two texts.

        The reference's loops become array operations over the joined code points `code`:
        a substring's hash sum(char[k] * base**(k+1)) mod 2**32 is a difference of prefix sums
        of ``code[i] * base**i`` (`weighted`) rescaled by base**-start, so that it does not
        depend on where the substring sits; an n-gram's is the sum of 3, 4 or 5 neighbouring
        `weighted` values, rescaled the same way. All features go into one uint32 buffer `x`:
        tokens, bigrams, then 3-, 4- and 5-grams, each in text order (the order `bincount` adds
        their weights in, hence bit-identical to the reference's sums). With several texts,
        a feature's text number is added to its slot above the 13 hash bits, so that one
        `bincount` counts and sums per text."""
        n_docs, dim = len(texts), self.dimension
        # step 2; a space first so that every word has a start; 4 at the end so n-gram rows align
        code = _codepoints(" " + " ".join(texts) + "    ")
        cls = _CLASSES.take(code)
        weighted = code * self._pow[: code.size]
        # where each text's chars begin, less one: where its tokens and n-grams may begin
        begin = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]], dtype=np.intp)
        # step 3, n-grams: grams[n - 3, i] hashes code[i : i + n], any non-word char counted
        # as char 1 (the "<" and ">" marks); valid where the chars between the ends are word chars
        word = cls == _WORD
        marked = np.where(word, weighted, self._pow[: code.size])
        m = code.size - 4
        grams = np.empty((3, m), dtype=np.uint32)
        np.add(marked[:m], marked[1 : m + 1], out=grams[0])
        grams[0] += marked[2 : m + 2]
        np.add(grams[0], marked[3 : m + 3], out=grams[1])
        np.add(grams[1], marked[4:], out=grams[2])
        grams *= self._inv1[:m]
        valid = np.empty((3, m), dtype=bool)  # all chars but the first and last are word chars
        valid[0] = word[1 : m + 1]
        np.logical_and(valid[0], word[2 : m + 2], out=valid[1])
        np.logical_and(valid[1], word[3 : m + 3], out=valid[2])
        at = np.flatnonzero(valid)  # one pass; a take beats a boolean mask over (3, m)
        # features in one buffer, in the order the weighted sums below depend on
        n_uni, n_bi, counts, x = self._token_features(cls, weighted, begin, at.size)
        np.take(grams.ravel(), at, out=x[n_uni + n_bi :])
        # step 4: the polynomial is linear; one xorshift-multiply evens out the buckets
        x ^= x >> _U(15)
        x *= _U(0x2C1B3C6D)
        slot = (x >> _U(32 - _SLOT_BITS)).astype(np.intp)  # step 5 counts per slot
        if n_docs > 1:  # keep texts apart: offset by text number, slot += text << _SLOT_BITS
            # n-gram i starts at char i + 1, so text t's n-grams begin at index begin[t]
            edges = (np.arange(0, 3 * m, m)[:, None] + begin).ravel()
            counts.append(np.diff(np.searchsorted(at, edges), append=at.size))
            offset = np.arange(n_docs, dtype=np.intp) << _SLOT_BITS  # features come by text
            slot += np.tile(offset, 5).repeat(np.concatenate(counts))
        # the slot's top bits are the bucket and sign (dimension <= 4096): text * 2 * dim added
        index = slot >> (_SLOT_BITS - dim.bit_length())
        # step 5, sublinear tf: an occurrence weighs 1/sqrt(count), so k of them add sqrt(k)
        weight = _RSQRT.take(np.bincount(slot, minlength=n_docs << _SLOT_BITS).take(slot))
        weight[n_uni : n_uni + n_bi] *= _BIGRAM_WEIGHT
        weight[n_uni + n_bi :] *= _NGRAM_WEIGHT
        # step 6: bins[t, 0] sums text t's positive contributions, bins[t, 1] its negative ones
        bins = np.bincount(index, weight, minlength=n_docs * 2 * dim).reshape(n_docs, 2, dim)
        vec = bins[:, 0] - bins[:, 1]  # the top hash bit is the sign
        # step 7; numpy's pairwise add.reduce: fixed order on every CPU, no BLAS
        totals = np.sqrt(np.add.reduce(vec * vec, axis=1))
        if n_docs == 1:  # same arithmetic as below, less bookkeeping
            return (vec / totals[0]).astype(np.float32) if totals[0] else self.empty[None].copy()
        vec = (vec / np.where(totals > 0, totals, 1.0)[:, None]).astype(np.float32)
        vec[totals == 0] = self.empty
        return vec

    def _token_features(
        self, cls: np.ndarray, weighted: np.ndarray, begin: np.ndarray, n_grams: int
    ) -> tuple[int, int, list[np.ndarray], np.ndarray]:
        """Step 3 for tokens (word and punctuation runs; each CJK character is a token of its
        own) and bigrams of neighbouring tokens in the same text: their hashes, written to the
        front of a new feature buffer with room for `n_grams` more; with their counts per text.

        A token starts at char i + 1 (`before` holds i) where that char is not a space and
        either its class differs from char i's or it is CJK, and ends at char j (`last`) on
        the mirror condition; the k-th start pairs with the k-th end."""
        change = cls[1:] != cls[:-1]
        cjk = cls == _CJK
        filled = cls != _SPACE
        before = ((change | cjk[1:]) & filled[1:]).nonzero()[0]  # code[0] is " "
        last = ((change | cjk[:-1]) & filled[:-1]).nonzero()[0]
        prefix = weighted.cumsum(dtype=np.uint32)
        n_uni = before.size
        # each text's first token (texts hold no token across the joining space)
        first = np.searchsorted(before, begin)
        cut = first[(first > 0) & (first < n_uni)] - 1  # bigrams across two texts
        keep = None
        n_bi = max(n_uni - 1, 0)
        if cut.size:
            keep = np.ones(n_bi, dtype=bool)
            keep[cut] = False
            n_bi = np.count_nonzero(keep)
        x = np.empty(n_uni + n_bi + n_grams, dtype=np.uint32)
        uni = x[:n_uni]
        np.multiply(prefix.take(last) - prefix.take(before), self._inv_uni.take(before), out=uni)
        bi = uni[:-1] * self._pair
        bi += uni[1:]
        if keep is not None:
            np.compress(keep, bi, out=x[n_uni : n_uni + n_bi])
        else:
            x[n_uni : n_uni + n_bi] = bi
        per_text = np.diff(first, append=n_uni)
        return n_uni, n_bi, [per_text, np.maximum(per_text - 1, 0)], x


def vector_from_record(value: Any, dimension: int | None = None) -> np.ndarray | None:
    """A user-supplied embedding (the value the caller found at the configured record path),
    validated and L2-normalised to float32; None when the record has none (`value` is None).

    ValueError unless `value` is a non-empty flat list/tuple/array of finite real numbers, not
    all zero, of length `dimension` when given. Bools and numeric strings are refused, not
    coerced: they mean a wrong path, and a coerced vector would look like a drift.
    """
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = value.tolist()  # numpy scalars -> Python ones, checked below like a list
    if not isinstance(value, list | tuple):
        raise ValueError(f"embedding must be a list of numbers, got {type(value).__name__}")
    bad = [t for t in set(map(type, value)) if t is bool or not issubclass(t, numbers.Real)]
    if bad:
        raise ValueError(f"embedding must hold only numbers, found {bad[0].__name__}")
    try:
        vec = np.asarray(value, dtype=np.float64)
    except (OverflowError, TypeError, ValueError) as exc:
        raise ValueError(f"embedding is not a list of finite numbers: {exc}") from None
    if not vec.size or (dimension is not None and vec.size != dimension):
        raise ValueError(f"embedding has {vec.size} numbers, expected {dimension or 'some'}")
    if not np.isfinite(vec).all():
        raise ValueError("embedding contains NaN or infinity")
    if not (peak := np.abs(vec).max()):
        raise ValueError("embedding is all zeros")
    vec = vec / peak  # so that squaring huge values cannot overflow
    return (vec / math.sqrt(np.add.reduce(vec * vec))).astype(np.float32)


@dataclass(frozen=True)
class FeatureShift:
    """Evidence for an embedding drift: "'refund' is in 12% of replies, was 2%"."""

    feature: str  # as the embedding sees it: lowercased, digits as 0, at most 64 chars
    share_a: float  # fraction of texts in the first (reference) sample containing it
    share_b: float  # same in the second (recent) sample

    @property
    def change(self) -> float:
        return self.share_b - self.share_a


def _token_set(text: str) -> set[str]:
    """Distinct words, punctuation runs and CJK character pairs, as the embedding splits them."""
    code = _codepoints(" " + _prepare(text) + " ")
    text = code.tobytes().decode("utf-32-le", "surrogatepass")  # folded, as the hash sees it
    cls = _CLASSES.take(code)
    bounds = ((cls[1:] != cls[:-1]).nonzero()[0] + 1).tolist()
    tokens = set()
    for start, end, kind in zip(bounds, bounds[1:], cls.take(bounds[:-1]).tolist(), strict=False):
        if kind == _CJK:
            tokens.update(text[i : i + 2] for i in range(start, max(end - 1, start + 1)))
        elif kind != _SPACE:
            tokens.add(text[start:end][:64])
    return tokens


def top_features(
    texts_a: Iterable[str], texts_b: Iterable[str], k: int = 10, max_texts: int = 500
) -> list[FeatureShift]:
    """The `k` tokens whose share of texts moved most from sample `texts_a` to `texts_b`.

    Counts texts containing a token, not occurrences, so one long reply repeating a word cannot
    dominate; ranks by the two-proportion z statistic, so a change seen in many texts beats a
    one-off. Bounded: the first `max_texts` texts per side, `MAX_CHARS` per text. For the small
    reference and recent samples kept with a detector, on demand, not per record.
    """
    a_texts, b_texts = list(islice(texts_a, max_texts)), list(islice(texts_b, max_texts))
    n_a, n_b = len(a_texts), len(b_texts)
    if not n_a or not n_b or k <= 0:
        return []
    count_a = Counter(token for text in a_texts for token in _token_set(text))
    count_b = Counter(token for text in b_texts for token in _token_set(text))
    scored = []
    for token in count_a.keys() | count_b.keys():
        share_a, share_b = count_a[token] / n_a, count_b[token] / n_b
        pooled = (count_a[token] + count_b[token]) / (n_a + n_b)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
        if share_a != share_b:
            scored.append((-abs(share_b - share_a) / spread, token, share_a, share_b))
    return [FeatureShift(token, a, b) for _, token, a, b in sorted(scored)[:k]]
