"""Fuzz the inputs in-process: random bytes, random JSON, and mutated valid records.

Every input goes through the same entry points the file tailer and the HTTP
push use (`Pipeline.ingest_lines`, `HttpPushInput` body parsing). The run
fails if anything raises, or if a line is neither accepted nor counted as
rejected under some reason.

    python -m tests.fuzz --inputs 1000000
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterator
from typing import Any

import orjson

from exporter.config import parse_config
from exporter.inputs.http import HttpPushInput
from exporter.inputs.stats import InputStats
from exporter.streams.pipeline import Pipeline
from tests import samples

SEEDS = [samples.chat(), samples.responses(), samples.anthropic(), samples.otel_span(),
         samples.litellm()]
SCALARS: list[Any] = [None, True, False, 0, -1, 2**63, 1.5e308, "", "x" * 50, "\udcff", [], {}]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 4 or roll < 0.4:
        extra = [rng.random(), rng.randint(-10, 10**6), chr(rng.randint(0, 0x10FFFF))]
        return rng.choice([*SCALARS, *extra])
    if roll < 0.7:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["choices", "output", "content", "response", "request", "model", "usage", "type",
            "gen_ai.output.messages", "attributes", "stop_reason", "status", "message", "text"]
    return {rng.choice([*keys, str(rng.random())]): random_json(rng, depth + 1)
            for _ in range(rng.randint(0, 5))}


def mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    if isinstance(value, dict) and value:
        value = dict(value)
        key = rng.choice(list(value))
        roll = rng.random()
        if roll < 0.3:
            del value[key]
        elif roll < 0.6:
            value[key] = random_json(rng, depth + 1)
        else:
            value[key] = mutate(rng, value[key], depth + 1)
        return value
    if isinstance(value, list) and value:
        value = list(value)
        index = rng.randrange(len(value))
        value[index] = mutate(rng, value[index], depth + 1) if rng.random() < 0.7 else None
        return value
    return random_json(rng, depth)


def encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return b'{"unencodable": true}'


def inputs(rng: random.Random) -> Iterator[bytes]:
    while True:
        roll = rng.random()
        if roll < 0.25:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(0, 120)))
        elif roll < 0.5:
            yield encode(random_json(rng))
        elif roll < 0.9:
            data = encode(mutate(rng, rng.choice(SEEDS)))
            if rng.random() < 0.3 and data:
                position = rng.randrange(len(data))
                data = data[:position] + bytes([rng.randrange(256)]) + data[position + 1:]
            yield data
        else:
            yield encode(rng.choice(SEEDS))


def run(count: int, seed: int = 0) -> dict[str, int]:
    pipeline = Pipeline(parse_config({"detectors": {"baseline_size": 50}}))
    stats = InputStats("fuzz", "file")
    push = HttpPushInput(parse_config({"inputs": [{"type": "http"}]}).http_inputs[0],
                         pipeline, InputStats("push", "http"))
    rng = random.Random(seed)
    source = inputs(rng)
    lines = accepted_lines = rejected_lines = 0
    for _ in range(count // 10):
        batch = [next(source) for _ in range(10)]
        if rng.random() < 0.5:
            for line in batch:
                pieces = [p for p in line.split(b"\n") if p.strip()]
                result = pipeline.ingest_lines(line.split(b"\n"), stats)
                lines += len(pieces)
                rejected_lines += result.rejected
                accepted_lines += len(pieces) - result.rejected
        else:
            body = b"\n".join(batch)
            content_type = rng.choice(["application/json", "application/x-ndjson"])
            if body.strip():
                for result in push.ingest_slices(body, content_type):  # noqa: B007
                    pass
                rejected_lines += result.rejected
    counted = sum(pipeline.rejections.values())
    assert counted == rejected_lines, (pipeline.rejections, rejected_lines)
    assert stats.rejected + push.stats.rejected == rejected_lines
    return {"inputs": count, "lines": lines, "rejected": rejected_lines,
            "records": pipeline.records, **{k: v for k, v in pipeline.rejections.items() if v}}


def main() -> None:
    parser = argparse.ArgumentParser(description="fuzz the exporter's inputs in-process")
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.monotonic()
    summary = run(args.inputs, args.seed)
    print(f"{summary} in {time.monotonic() - started:.0f}s: no crash, every rejection counted")


if __name__ == "__main__":
    main()
