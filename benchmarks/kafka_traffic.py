"""Keyed LLM traffic for the Kafka tests and benchmarks: records of many streams (OpenAI Chat
Completions lines with usage), each keyed by its stream-label values so that all of a
stream lands in one partition, as the docs ask producers to do. Some streams drift halfway
(longer answers, more refusals, another topic), so detectors have something to find."""

from __future__ import annotations

import random
from collections.abc import Iterator

import orjson

TOPICS = (
    "invoice payment refund account billing charge receipt balance statement card",
    "deploy cluster node latency error restart config rollout metrics alert",
    "recipe oven flour butter sugar bake minutes dough salt pepper",
    "contract clause party liability notice term agreement signature court law",
)
REFUSAL = "I'm sorry, but I can't help with that request."


def stream_labels(index: int) -> tuple[str, str]:
    return f"model-{index % 5}", f"/route-{index // 5}"


def stream_key(index: int) -> bytes:
    """The record key: the stream-label values (model, route), as JSON."""
    return orjson.dumps(list(stream_labels(index)))


def records(count: int, streams: int, seed: int = 1, drift_after: float = 0.6
            ) -> Iterator[tuple[bytes, bytes]]:
    """(key, JSON line) pairs, streams interleaved at random."""
    rng = random.Random(seed)
    words = [topic.split() for topic in TOPICS]
    for n in range(count):
        index = rng.randrange(streams)
        model, route = stream_labels(index)
        drifted = n >= drift_after * count and index % 3 == 0
        length = max(1, int(rng.gauss(90 if drifted else 60, 15)))
        topic = words[(index + (1 if drifted and index % 2 else 0)) % len(words)]
        refusal = rng.random() < (0.12 if drifted else 0.02)
        text = REFUSAL if refusal else " ".join(rng.choice(topic) for _ in range(length))
        record = {
            "route": route,
            "request": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
            "response": {
                "object": "chat.completion",
                "model": f"{model}-2026-01-01",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 10 if refusal else length,
                          "total_tokens": 22 if refusal else 12 + length},
            },
        }
        yield stream_key(index), orjson.dumps(record)
