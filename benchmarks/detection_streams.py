"""Synthetic record streams for the detection benchmark (benchmarks/bench_detection.py).

Every stream is a function of (stream kind, purpose, seed): the same arguments give the same
values in every process, so work can be split across processes freely.

Streams (the change, when asked for, starts at record `change_at`, 0-based):

- ``tokens``: output lengths, lognormal with median 200 tokens and sigma 0.5, rounded to whole
  tokens (at least 1). Change: every length x1.3.
- ``tokens_heavy``: the same body for 90% of records, and a Pareto tail (alpha 1.5, infinite
  variance, from 400 tokens up) for the other 10%. Change: x1.3.
- ``tokens_x4``: ``tokens`` times 4, as if lengths were measured in characters, from the same
  random draws as ``tokens`` (so any difference between the two is the scale's). Change: x1.3.
- ``refusal``: Bernoulli, 2% -> 6%. ``refusal_10``: Bernoulli 10% (calibration only).
- ``validity``: True marks an INVALID record: 1% -> 5% (validity 99% -> 95%).
- ``embedding``: replies written from three topic vocabularies plus filler words, embedded with
  `exporter.signals.embedding.TextEmbedder` (256 dimensions). Topic mix uniform -> 60/20/20.
  Texts are embedded once per process into a pool (`pool_size` per topic); a stream draws a
  topic per record from the mix and a text of that topic from the pool, uniformly.

More shapes for the per-stream section (benchmarks/bench_detection_trust.py), the same way:

- ``tokens_07`` / ``tokens_13``: lognormal lengths, median 200, sigma 0.7 / 1.3 (heavy tail).
  Change: x1.3. ``tokens_pareto``: Pareto lengths (alpha 1.5) from 50 tokens (median ~79).
- ``tokens_const``: near-constant lengths, as a JSON route: 12 tokens, 11 or 13 for 0.5% each.
- ``json_tokens`` / ``json_validity``: the two signals of ONE JSON route (same draws, same
  records): valid replies as ``tokens_const``, invalid ones (1%) 13 to 16 tokens long (a
  trailing remark). Change: 1% -> 5% invalid, which moves the mean length by +0.8%
  (12.025 -> 12.125 tokens): a real but negligible length change on top of a format change.
- ``refusal_05``, ``refusal_1``, ``refusal_5``: refusal rates 0.5%, 1%, 5%;
  ``validity_03``, ``validity_5``: 0.3% and 5% invalid.
- ``embedding_skewed`` (70/25/5) and ``embedding_rare`` (94/5/1): other topic mixes.

`blocks` yields a stream in fixed-size blocks, as long as the caller needs (a detector may
take more than `baseline_size` records to learn its baseline); `values` is its first block.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from exporter.signals.embedding import TextEmbedder

MEDIAN_TOKENS = 200.0
TAIL_SHARE, TAIL_START, TAIL_ALPHA = 0.10, 400.0, 1.5
TOPIC_WORD_SHARE = 0.3
WORDS_PER_TEXT = (15, 60)
EMBEDDING_DIMENSION = 256
CONST_TOKENS, CONST_SIDE_SHARE = 12.0, 0.005  # near-constant lengths: 12, and 11 or 13 rarely
PARETO_START = 50.0
BLOCK = 10_000

TOPICS = (
    # billing
    "invoice refund charge payment card subscription billing receipt credit balance plan price "
    "discount renewal tax statement checkout transaction fee account upgrade downgrade trial "
    "coupon prorated monthly annual paypal bank chargeback dispute",
    # shipping
    "package delivery tracking courier warehouse shipment address parcel dispatch carrier "
    "customs pallet freight arrival postage label route depot box signature doorstep express "
    "delayed returned pickup locker weight international estimated",
    # technical support
    "error server install update login password browser crash driver network firmware reboot "
    "cache version settings database timeout configuration log endpoint certificate proxy "
    "permissions plugin memory disk restart token deploy",
)
FILLER = (
    "the a an to and of you your we is are please can will this that it for with on in be "
    "have help thanks sorry let me know here there if any more some would like check now today "
    "again also just need sure happy able see our team case request issue question information "
    "details follow steps below above next first then once after before soon usually however"
)


@dataclass(frozen=True)
class StreamSpec:
    key: str
    label: str  # as in the tables
    signal: str  # the detector factory's signal name
    kind: str  # "tokens" | "binary" | "embedding"
    change: str  # what the change-point does, for the tables
    heavy: bool = False
    lengths: str = "lognormal"  # "lognormal" | "pareto" | "const" | "json" (see the docstring)
    sigma: float = 0.5
    scale: float = 1.0
    factor: float = 1.3
    p0: float = 0.0
    p1: float = 0.0
    mix0: tuple[float, ...] = (1 / 3, 1 / 3, 1 / 3)
    mix1: tuple[float, ...] = (0.6, 0.2, 0.2)
    draws: str = ""  # another stream whose random draws this one reuses (rescaled copies)


SPECS: dict[str, StreamSpec] = {
    s.key: s
    for s in (
        StreamSpec("tokens", "output_tokens (lognormal sigma 0.5)", "output_tokens", "tokens",
                   "length x1.3"),
        StreamSpec("tokens_heavy", "output_tokens (heavy tail: 10% Pareto a=1.5)",
                   "output_tokens", "tokens", "length x1.3", heavy=True),
        StreamSpec("tokens_x4", "output_tokens x4 (as characters)", "output_tokens", "tokens",
                   "length x1.3", scale=4.0, draws="tokens"),
        StreamSpec("refusal", "refusal (2%)", "refusal", "binary", "rate 2% -> 6%",
                   p0=0.02, p1=0.06),
        StreamSpec("refusal_10", "refusal (10%)", "refusal", "binary", "none", p0=0.10,
                   p1=0.10),
        StreamSpec("validity", "format_validity (1% invalid)", "format_validity", "binary",
                   "valid 99% -> 95%", p0=0.01, p1=0.05),
        StreamSpec("embedding", "embedding (3 topics)", "embedding", "embedding",
                   "topic mix 1/3 each -> 60/20/20"),
        StreamSpec("tokens_07", "output_tokens (lognormal sigma 0.7)", "output_tokens",
                   "tokens", "length x1.3", sigma=0.7),
        StreamSpec("tokens_13", "output_tokens (lognormal sigma 1.3)", "output_tokens",
                   "tokens", "length x1.3", sigma=1.3),
        StreamSpec("tokens_pareto", "output_tokens (Pareto a=1.5 from 50)", "output_tokens",
                   "tokens", "length x1.3", lengths="pareto"),
        StreamSpec("tokens_const", "output_tokens (near-constant: 12, rarely 11/13)",
                   "output_tokens", "tokens", "none", lengths="const"),
        StreamSpec("json_tokens", "output_tokens (JSON route, 12 tokens, 1% invalid)",
                   "output_tokens", "tokens", "invalid 1% -> 5%: mean +0.8%", lengths="json",
                   p0=0.01, p1=0.05, draws="json_route"),
        StreamSpec("json_validity", "format_validity (JSON route, 12 tokens, 1% invalid)",
                   "format_validity", "binary", "valid 99% -> 95%", lengths="json", p0=0.01,
                   p1=0.05, draws="json_route"),
        StreamSpec("refusal_05", "refusal (0.5%)", "refusal", "binary", "none", p0=0.005,
                   p1=0.005),
        StreamSpec("refusal_1", "refusal (1%)", "refusal", "binary", "none", p0=0.01, p1=0.01),
        StreamSpec("refusal_5", "refusal (5%)", "refusal", "binary", "none", p0=0.05, p1=0.05),
        StreamSpec("validity_03", "format_validity (0.3% invalid)", "format_validity", "binary",
                   "none", p0=0.003, p1=0.003),
        StreamSpec("validity_5", "format_validity (5% invalid)", "format_validity", "binary",
                   "none", p0=0.05, p1=0.05),
        StreamSpec("embedding_skewed", "embedding (topics 70/25/5)", "embedding", "embedding",
                   "none", mix0=(0.7, 0.25, 0.05), mix1=(0.7, 0.25, 0.05)),
        StreamSpec("embedding_rare", "embedding (topics 94/5/1)", "embedding", "embedding",
                   "none", mix0=(0.94, 0.05, 0.01), mix1=(0.94, 0.05, 0.01)),
    )
}


def rng_for(key: str, purpose: str, seed: int) -> np.random.Generator:
    """Independent generator per (stream, purpose, seed), the same in every process."""
    return np.random.default_rng([seed, zlib.crc32(key.encode()), zlib.crc32(purpose.encode())])


def token_lengths(spec: StreamSpec, rng: np.random.Generator, n: int,
                  change_at: int | None = None) -> np.ndarray:
    if spec.lengths == "const":
        return near_constant(rng, n)
    if spec.lengths == "json":
        return json_route(spec, rng, n, change_at)[0]
    if spec.lengths == "pareto":
        lengths = PARETO_START * (1.0 + rng.pareto(TAIL_ALPHA, n))
    else:
        lengths = rng.lognormal(np.log(MEDIAN_TOKENS), spec.sigma, n)
    if spec.heavy:
        tail = rng.random(n) < TAIL_SHARE
        lengths[tail] = TAIL_START * (1.0 + rng.pareto(TAIL_ALPHA, int(tail.sum())))
    if change_at is not None:
        lengths[change_at:] *= spec.factor
    return np.maximum(1.0, np.rint(lengths)) * spec.scale


def near_constant(rng: np.random.Generator, n: int) -> np.ndarray:
    side = rng.random(n)
    lengths = np.full(n, CONST_TOKENS)
    lengths[side < CONST_SIDE_SHARE] -= 1.0
    lengths[side > 1.0 - CONST_SIDE_SHARE] += 1.0
    return lengths


def json_route(spec: StreamSpec, rng: np.random.Generator, n: int,
               change_at: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, invalid) of one JSON route: invalid replies are 13 to 16 tokens long."""
    invalid = bernoulli(spec, rng, n, change_at)
    lengths = near_constant(rng, n)
    long = rng.integers(13, 17, size=n).astype(np.float64)
    return np.where(invalid, long, lengths), invalid


def bernoulli(spec: StreamSpec, rng: np.random.Generator, n: int,
              change_at: int | None = None) -> np.ndarray:
    rate = np.full(n, spec.p0)
    if change_at is not None:
        rate[change_at:] = spec.p1
    return rng.random(n) < rate


def topic_text(rng: np.random.Generator, topic: int, vocabularies: list[list[str]],
               filler: list[str]) -> str:
    n = int(rng.integers(*WORDS_PER_TEXT))
    from_topic = rng.random(n) < TOPIC_WORD_SHARE
    words = [
        vocabularies[topic][rng.integers(len(vocabularies[topic]))] if hit
        else filler[rng.integers(len(filler))]
        for hit in from_topic.tolist()
    ]
    return " ".join(words).capitalize() + "."


@functools.lru_cache(maxsize=2)
def embedding_pool(pool_size: int) -> np.ndarray:
    """(topics * pool_size, dimension) float32 embeddings; rows [t*pool_size, (t+1)*pool_size)
    are texts of topic t. Built once per process and size, read-only."""
    rng = rng_for("embedding", "pool", 0)
    vocabularies = [t.split() for t in TOPICS]
    filler = FILLER.split()
    texts = [topic_text(rng, topic, vocabularies, filler)
             for topic in range(len(TOPICS)) for _ in range(pool_size)]
    pool = TextEmbedder(EMBEDDING_DIMENSION).embed_many(texts)
    pool.flags.writeable = False
    return pool


def example_texts(k: int = 3) -> list[str]:
    rng = rng_for("embedding", "examples", 0)
    vocabularies = [t.split() for t in TOPICS]
    return [topic_text(rng, t % len(TOPICS), vocabularies, FILLER.split()) for t in range(k)]


def topic_indices(spec: StreamSpec, rng: np.random.Generator, n: int, pool_size: int,
                  change_at: int | None = None) -> np.ndarray:
    topics = rng.choice(len(spec.mix0), size=n, p=spec.mix0)
    if change_at is not None and change_at < n:
        topics[change_at:] = rng.choice(len(spec.mix1), size=n - change_at, p=spec.mix1)
    return topics * pool_size + rng.integers(pool_size, size=n)


def values(key: str, purpose: str, seed: int, n: int, change_at: int | None = None,
           pool_size: int = 20_000) -> np.ndarray:
    """The first `n` observations of one stream: float lengths, bools, or embedding rows."""
    spec = SPECS[key]
    return _draw(spec, rng_for(spec.draws or key, purpose, seed), n, change_at, pool_size)


def blocks(key: str, purpose: str, seed: int, change_at: int | None = None,
           pool_size: int = 20_000, size: int = BLOCK) -> Iterator[np.ndarray]:
    """One stream as successive `size`-record blocks, without end; `change_at` counts from
    the stream's first record."""
    spec = SPECS[key]
    rng = rng_for(spec.draws or key, purpose, seed)
    offset = 0
    while True:
        relative = None if change_at is None or change_at >= offset + size else max(
            0, change_at - offset)
        yield _draw(spec, rng, size, relative, pool_size)
        offset += size


def _draw(spec: StreamSpec, rng: np.random.Generator, n: int, change_at: int | None,
          pool_size: int) -> np.ndarray:
    if spec.kind == "binary" and spec.lengths == "json":
        return json_route(spec, rng, n, change_at)[1]
    if spec.kind == "tokens":
        return token_lengths(spec, rng, n, change_at)
    if spec.kind == "binary":
        return bernoulli(spec, rng, n, change_at)
    return embedding_pool(pool_size)[topic_indices(spec, rng, n, pool_size, change_at)]


def scalar_for_river(key: str, observations: np.ndarray, baseline_size: int) -> np.ndarray:
    """What a univariate river detector can be fed. Embeddings: the score on the first
    principal component of the stream's own first `baseline_size` vectors (its baseline)."""
    if SPECS[key].kind != "embedding":
        return observations
    base = observations[:baseline_size].astype(np.float64)
    centre = base.mean(axis=0)
    component = np.linalg.svd(base - centre, full_matrices=False)[2][0]
    return (observations - centre) @ component
