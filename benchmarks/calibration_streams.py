"""Streams of varied shapes for the calibration benchmark (benchmarks/bench_calibration.py).

Calibration is per stream, so its cost must be measured on streams that differ the way real
ones do, not on copies of one: a stream that shares nothing with the others is what a cache
cannot help. Each stream draws its own shape (from the seed and its index, the same in every
process):

- output tokens: lognormal (sigma 0.5) with a median of 30 to 1,500 tokens, or the same body
  with a heavy Pareto tail (`detection_streams.py`'s ``tokens_heavy``), or near-constant
  lengths (a JSON route: 12 tokens, now and then 11 or 13);
- refusals at 1% to 5%; invalid replies (format validity) at 0.5% to 3%;
- a topic mix of its own over `detection_streams.TOPICS` (Dirichlet(1, 1, 1)), embedded by the
  exporter's built-in embedding.

Observations come in blocks of `BLOCK` records, each block from its own generator, so a stream
can be extended as far as a baseline needs without changing what came before.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import detection_streams as ds
import numpy as np

from exporter.signals.embedding import TextEmbedder

BLOCK = 1000
LENGTH_SHAPES = ("lognormal", "heavy", "constant")
POOL_PER_TOPIC = 400  # texts per topic a stream draws its valid replies from
INVALID_PER_TOPIC = 40  # and its invalid ones (a valid one with a reference number)
FORMAT_PATTERN = "[A-Za-z ,.]+"  # the format rule every stream gets: valid = only words
REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I cannot assist with that request.",
    "Sorry, I can't do that.",
    "I apologize, but I cannot fulfill that request.",
    "I'm unable to provide that information.",
)


@dataclass(frozen=True)
class StreamShape:
    index: int
    seed: int
    lengths: str  # one of LENGTH_SHAPES
    median_tokens: float
    refusal_rate: float
    invalid_rate: float
    mix: tuple[float, ...]


@dataclass(frozen=True)
class Block:
    """Records [first, first + BLOCK) of a stream: what each record says, signal by signal."""

    tokens: np.ndarray  # int, >= 1
    refused: np.ndarray  # bool
    invalid: np.ndarray  # bool (a refused record is never format-checked)
    texts: np.ndarray  # the reply of each record: an index into `texts()`


def shapes(streams: int, seed: int) -> list[StreamShape]:
    out = []
    for index in range(streams):
        rng = np.random.default_rng([seed, index, 0x5A])
        out.append(StreamShape(
            index=index, seed=seed,
            lengths=LENGTH_SHAPES[int(rng.choice(3, p=[0.5, 0.3, 0.2]))],
            median_tokens=float(np.exp(rng.uniform(np.log(30), np.log(1500)))),
            refusal_rate=float(rng.uniform(0.01, 0.05)),
            invalid_rate=float(rng.uniform(0.005, 0.03)),
            mix=tuple(float(p) for p in rng.dirichlet(np.ones(len(ds.TOPICS)))),
        ))
    return out


def _lengths(shape: StreamShape, rng: np.random.Generator, n: int) -> np.ndarray:
    if shape.lengths == "constant":
        return 12 + rng.choice([-1, 0, 1], size=n, p=[0.05, 0.9, 0.05])
    spec = ds.SPECS["tokens_heavy" if shape.lengths == "heavy" else "tokens"]
    spec = dataclasses.replace(spec, scale=shape.median_tokens / ds.MEDIAN_TOKENS)
    return np.maximum(1, np.rint(ds.token_lengths(spec, rng, n))).astype(int)


def block(shape: StreamShape, number: int) -> Block:
    """The stream's `number`-th block of BLOCK records."""
    rng = np.random.default_rng([shape.seed, shape.index, number, 0xB1])
    tokens = _lengths(shape, rng, BLOCK)
    refused = rng.random(BLOCK) < shape.refusal_rate
    invalid = (rng.random(BLOCK) < shape.invalid_rate) & ~refused
    topics = rng.choice(len(shape.mix), size=BLOCK, p=shape.mix)
    valid = topics * POOL_PER_TOPIC + rng.integers(POOL_PER_TOPIC, size=BLOCK)
    topic_count = len(shape.mix)
    wrong = (topic_count * POOL_PER_TOPIC + topics * INVALID_PER_TOPIC
             + rng.integers(INVALID_PER_TOPIC, size=BLOCK))
    declined = topic_count * (POOL_PER_TOPIC + INVALID_PER_TOPIC) + rng.integers(
        len(REFUSALS), size=BLOCK)
    texts = np.where(refused, declined, np.where(invalid, wrong, valid))
    return Block(tokens, refused, invalid, texts)


@functools.lru_cache(maxsize=1)
def texts() -> tuple[str, ...]:
    """Every reply a stream can give: POOL_PER_TOPIC valid ones per topic (lower-case words,
    spaces and a full stop), then INVALID_PER_TOPIC invalid ones per topic, then REFUSALS."""
    rng = ds.rng_for("calibration", "texts", 0)
    vocabularies = [t.split() for t in ds.TOPICS]
    filler = ds.FILLER.split()
    valid = [ds.topic_text(rng, topic, vocabularies, filler)
             for topic in range(len(ds.TOPICS)) for _ in range(POOL_PER_TOPIC)]
    invalid = [valid[topic * POOL_PER_TOPIC + k][:-1] + f" ref {4000 + k}."
               for topic in range(len(ds.TOPICS)) for k in range(INVALID_PER_TOPIC)]
    return (*valid, *invalid, *REFUSALS)


@functools.lru_cache(maxsize=1)
def text_vectors() -> np.ndarray:
    """The exporter's built-in embedding (default dimension) of each of `texts()`."""
    vectors = TextEmbedder(ds.EMBEDDING_DIMENSION).embed_many(list(texts()))
    vectors.flags.writeable = False
    return vectors


def observations(shape: StreamShape, signal: str, number: int) -> list[object]:
    """What the `signal` detector of the stream sees from its `number`-th block, as the
    exporter hands it (floats, bools, float32 vectors); format validity skips refusals."""
    b = block(shape, number)
    if signal == "output_tokens":
        return b.tokens.astype(float).tolist()
    if signal == "refusal":
        return b.refused.tolist()
    if signal == "format_validity":
        return b.invalid[~b.refused].tolist()
    if signal == "embedding":
        return list(text_vectors()[b.texts])
    raise ValueError(f"no observations for signal {signal!r}")
