"""Built-in synthetic LLM traffic that drifts, so a newcomer sees detection work.

Three streams in three provider shapes (OpenAI Chat, Anthropic Messages,
OpenAI Responses with JSON output), with realistic usage blocks, occasional
refusals, truncations and tool calls. Baselines are learned in the first
~30 seconds; then, on a schedule (DRIFTS, seconds since start), each signal
drifts on one stream, the way real incidents look: a prompt change makes
answers longer, a silent model update starts refusing, the extraction route
starts wrapping JSON in prose, the topic mix of summaries shifts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from exporter.config import Config, parse_config

if TYPE_CHECKING:
    from exporter.service import RecordSink

TOPICS = {
    "billing": [
        "invoice",
        "refund",
        "charge",
        "payment",
        "card",
        "subscription",
        "plan",
        "renewal",
    ],
    "shipping": ["package", "delivery", "tracking", "courier", "address", "parcel", "warehouse"],
    "account": ["password", "login", "email", "profile", "settings", "security", "verification"],
    "outage": ["outage", "incident", "degraded", "restore", "status", "engineers", "apologize"],
}
FILLER = [
    "the",
    "a",
    "your",
    "we",
    "can",
    "please",
    "this",
    "that",
    "to",
    "of",
    "and",
    "for",
    "with",
    "is",
    "will",
    "be",
    "it",
]
REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "I cannot assist with that.",
    "I'm unable to help with this request.",
)
# seconds since start -> what changes (printed at start, documented in the README)
DRIFTS = {
    "chat_longer": 60.0,  # /chat answers 60% longer, served as a new gpt-4o snapshot
    "extract_prose": 90.0,  # /extract wraps 12% of its JSON in prose
    "summarize_topics": 120.0,  # /summarize topic mix moves to an outage
    "chat_refusals": 150.0,  # /chat refusals 2% -> 12%
}

DEMO_CONFIG: Config = parse_config(
    {
        "inputs": [{"type": "http"}],
        "signals": {"format_validity": [{"match": {"route": "/extract"}, "expect": "json"}]},
        "detectors": {"baseline_size": 300, "window_size": 100},
    }
)


class TrafficGenerator:
    """Produces provider-shaped log lines (the envelope an application would write)."""

    def __init__(self, seed: int = 7, clock: Callable[[], float] = time.time) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.started = clock()
        self.counter = 0

    def drifted(self, name: str) -> bool:
        return self.clock() - self.started >= DRIFTS[name]

    def _sentence(self, topic: str, words: int) -> str:
        vocab = TOPICS[topic]
        picked = [
            self.rng.choice(vocab) if self.rng.random() < 0.35 else self.rng.choice(FILLER)
            for _ in range(max(words, 1))
        ]
        return " ".join(picked).capitalize() + "."

    def _answer(self, mean_words: float, topics: list[str], weights: list[float]) -> str:
        topic = self.rng.choices(topics, weights)[0]
        words = max(3, int(self.rng.lognormvariate(0, 0.5) * mean_words))
        sentences = []
        while words > 0:
            length = min(words, self.rng.randint(6, 18))
            sentences.append(self._sentence(topic, length))
            words -= length
        return " ".join(sentences)

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter:010d}"

    def chat(self) -> dict[str, Any]:
        refusal_rate = 0.12 if self.drifted("chat_refusals") else 0.02
        longer = self.drifted("chat_longer")
        refused = self.rng.random() < refusal_rate
        truncated = not refused and self.rng.random() < 0.01
        mean_words = 130 if longer else 80
        text = (
            self.rng.choice(REFUSALS)
            if refused
            else self._answer(mean_words, ["billing", "shipping", "account"], [1, 1, 1])
        )
        completion = max(1, round(len(text.split()) * 1.3))
        prompt = self.rng.randint(200, 600)
        return {
            "timestamp": self.clock(),
            "route": "/chat",
            "request": {"model": "gpt-4o", "max_tokens": 512},
            "response": {
                "id": self._id("chatcmpl-"),
                "object": "chat.completion",
                "created": int(self.clock()),
                "model": "gpt-4o-2024-11-20" if longer else "gpt-4o-2024-08-06",
                "system_fingerprint": "fp_demo02" if longer else "fp_demo01",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "finish_reason": "length" if truncated else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            },
        }

    def anthropic(self) -> dict[str, Any]:
        use_tool = self.rng.random() < 0.1
        weights = [1, 1, 1, 6] if self.drifted("summarize_topics") else [1, 1, 1, 0]
        text = self._answer(120, list(TOPICS), weights)
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if use_tool:
            content.append(
                {
                    "type": "tool_use",
                    "id": self._id("toolu_"),
                    "name": "lookup_order",
                    "input": {"order_id": str(self.rng.randint(1000, 9999))},
                }
            )
        return {
            "timestamp": self.clock(),
            "route": "/summarize",
            "request": {"model": "claude-sonnet-4-5", "max_tokens": 1024},
            "response": {
                "id": self._id("msg_"),
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": content,
                "stop_reason": "tool_use" if use_tool else "end_turn",
                "usage": {
                    "input_tokens": self.rng.randint(500, 2000),
                    "output_tokens": max(1, round(len(text.split()) * 1.3)),
                },
            },
        }

    def responses_json(self) -> dict[str, Any]:
        document = {
            "customer": self.rng.choice(["Ada", "Grace", "Linus", "Ken"]),
            "topic": self.rng.choice(list(TOPICS)),
            "priority": self.rng.choice(["low", "normal", "high"]),
            "order_id": self.rng.randint(1000, 9999),
        }
        text = orjson.dumps(document).decode()
        prose_rate = 0.12 if self.drifted("extract_prose") else 0.01
        if self.rng.random() < prose_rate:
            text = "Here is the extracted data: " + text
        return {
            "timestamp": self.clock(),
            "route": "/extract",
            "request": {"model": "gpt-4.1-mini"},
            "response": {
                "id": self._id("resp_"),
                "object": "response",
                "created_at": int(self.clock()),
                "status": "completed",
                "model": "gpt-4.1-mini-2025-04-14",
                "output": [
                    {
                        "type": "message",
                        "id": self._id("msg_"),
                        "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}],
                    }
                ],
                "usage": {
                    "input_tokens": self.rng.randint(300, 900),
                    "output_tokens": max(1, len(text) // 4),
                },
            },
        }

    def records(self) -> Iterator[dict[str, Any]]:
        makers = (self.chat, self.chat, self.anthropic, self.responses_json)
        while True:
            yield self.rng.choice(makers)()


def schedule_text() -> str:
    return "; ".join(f"{name} at {int(at)}s" for name, at in DRIFTS.items())


async def feed(sink: RecordSink, rate_per_second: float = 40.0, seed: int = 7) -> None:
    """Feed generated records into the sink at roughly `rate_per_second`: the demo's source,
    for `Exporter.add_source`. One record per call, each with its own clock reading."""
    generator = TrafficGenerator(seed=seed)
    records = generator.records()
    batch = max(1, int(rate_per_second / 10))
    while True:
        for _ in range(batch):
            sink([next(records)])
        await asyncio.sleep(batch / rate_per_second)
