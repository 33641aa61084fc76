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
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np

from exporter.signals.embedding import TextEmbedder

MEDIAN_TOKENS = 200.0
TAIL_SHARE, TAIL_START, TAIL_ALPHA = 0.10, 400.0, 1.5
TOPIC_WORD_SHARE = 0.3
WORDS_PER_TEXT = (15, 60)
EMBEDDING_DIMENSION = 256

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
    )
}


def rng_for(key: str, purpose: str, seed: int) -> np.random.Generator:
    """Independent generator per (stream, purpose, seed), the same in every process."""
    return np.random.default_rng([seed, zlib.crc32(key.encode()), zlib.crc32(purpose.encode())])


def token_lengths(spec: StreamSpec, rng: np.random.Generator, n: int,
                  change_at: int | None = None) -> np.ndarray:
    lengths = rng.lognormal(np.log(MEDIAN_TOKENS), 0.5, n)
    if spec.heavy:
        tail = rng.random(n) < TAIL_SHARE
        lengths[tail] = TAIL_START * (1.0 + rng.pareto(TAIL_ALPHA, int(tail.sum())))
    if change_at is not None:
        lengths[change_at:] *= spec.factor
    return np.maximum(1.0, np.rint(lengths)) * spec.scale


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
    rng = rng_for(spec.draws or key, purpose, seed)
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
