"""Evaluate the refusal signal against labelled responses.

Data (see tests/data/refusal_raw/PROVENANCE.md):

* PyRIT 1.1.0 ``refusal.csv`` and ``refusal_extra.csv``: human labels, 1 = refusal.
  The rows PyRIT labels 1 only because the answer is off topic (a non-sequitur,
  listed in ``pyrit_nonsequitur_rows.json``) are left out: no response-only
  detector can see them.
* PyRIT 1.1.0 ``objective/*.csv`` rows labelled 1 ("achieved the harmful
  objective"): genuine compliance, so they only measure false positives.
  Rows labelled 0 there are not refusal labels and are not used.
* ``tests/data/refusal_multilingual.jsonl``: a small multilingual set WRITTEN BY
  US (this project), not independent data: it checks the non-English lists do
  what they claim, it does not measure real-world accuracy.

The detector sees the response text only (no structured flags), as a record of
a provider that reports nothing. Run:

    python benchmarks/eval_refusal.py [--show 40] [--width 160] [--no-timing]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.records.record import Record
from exporter.signals.refusal import RefusalDetector

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
RAW = DATA / "refusal_raw"
PYRIT = "pyrit-1.1.0"
MULTILINGUAL = DATA / "refusal_multilingual.jsonl"

REFUSAL = "pyrit refusal.csv"
REFUSAL_EXTRA = "pyrit refusal_extra.csv"
OBJECTIVE = "pyrit objective/* label 1 (compliance)"
OURS = "multilingual (written by us)"
PRIMARY = (REFUSAL, REFUSAL_EXTRA)
PYRIT_ALL = (REFUSAL, REFUSAL_EXTRA, OBJECTIVE)


@dataclass(frozen=True, slots=True)
class Example:
    source: str
    row: str  # where it came from, for the listing of mistakes
    text: str
    refusal: bool


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a PyRIT CSV: skip only the LEADING '#' lines (a quoted field may start with '#')."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        start += 1
    return list(csv.DictReader(io.StringIO("".join(lines[start:]))))


def load_pyrit_primary() -> list[Example]:
    skipped = json.loads((RAW / "pyrit_nonsequitur_rows.json").read_text())["rows"]
    examples = []
    for source, name in ((REFUSAL, "refusal.csv"), (REFUSAL_EXTRA, "refusal_extra.csv")):
        relative = f"{PYRIT}/refusal_scorer/{name}"
        drop = set(skipped[relative])
        for index, row in enumerate(read_csv(RAW / relative)):
            if index in drop:
                continue
            examples.append(
                Example(
                    source,
                    f"{name}:{index}",
                    row["assistant_response"],
                    row["human_score"].strip() == "1",
                )
            )
    return examples


def load_pyrit_objective() -> list[Example]:
    examples = []
    for path in sorted((RAW / PYRIT / "objective").glob("*.csv")):
        for index, row in enumerate(read_csv(path)):
            if row["human_score"].strip() == "1":
                examples.append(
                    Example(OBJECTIVE, f"{path.stem}:{index}", row["assistant_response"], False)
                )
    return examples


def load_multilingual() -> list[Example]:
    examples = []
    for number, line in enumerate(MULTILINGUAL.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            item = json.loads(line)
            row = f"{item['lang']}:{number}"
            examples.append(Example(OURS, row, item["text"], bool(item["label"])))
    return examples


def load_all() -> list[Example]:
    return load_pyrit_primary() + load_pyrit_objective() + load_multilingual()


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    mistakes: list[tuple[Example, bool]] = field(default_factory=list)

    def add(self, example: Example, predicted: bool) -> None:
        if predicted and example.refusal:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif example.refusal:
            self.fn += 1
        else:
            self.tn += 1
        if predicted != example.refusal:
            self.mistakes.append((example, predicted))

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p is not None and r is not None and p + r else None

    def merged(self, other: Score) -> Score:
        return Score(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.tn + other.tn,
            self.mistakes + other.mistakes,
        )


def record_of(text: str) -> Record:
    """A record as an adapter would build it from a provider that reports no refusal."""
    return Record(shape="eval", output_text=text, finish_reason="stop")


def score(detector: RefusalDetector, examples: Iterable[Example]) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    for example in examples:
        predicted = detector.classify(record_of(example.text)) is not None
        scores.setdefault(example.source, Score()).add(example, predicted)
    return scores


def combined(scores: dict[str, Score], sources: Iterable[str]) -> Score:
    total = Score()
    for source in sources:
        total = total.merged(scores.get(source, Score()))
    return total


def _fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def table(scores: dict[str, Score]) -> str:
    rows = [(name, scores[name]) for name in (*PYRIT_ALL, OURS) if name in scores]
    rows.append(("PyRIT primary (refusal + extra)", combined(scores, PRIMARY)))
    rows.append(("PyRIT overall (+ objective compliance)", combined(scores, PYRIT_ALL)))
    header = (
        f"{'source':42} {'n':>4} {'prec':>6} {'recall':>6} {'F1':>6}"
        f"  {'TP':>4} {'FP':>4} {'FN':>4} {'TN':>4}"
    )
    lines = [header, "-" * len(header)]
    for name, s in rows:
        n = s.tp + s.fp + s.fn + s.tn
        lines.append(
            f"{name:42} {n:4d} {_fmt(s.precision)} {_fmt(s.recall)} {_fmt(s.f1)}"
            f"  {s.tp:4d} {s.fp:4d} {s.fn:4d} {s.tn:4d}"
        )
    return "\n".join(lines)


def timing(detector: RefusalDetector, texts: list[str], repeat: int = 5) -> float:
    """Best-of-`repeat` mean microseconds per `classify` call over `texts`."""
    records = [record_of(text) for text in texts]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for record in records:
            detector.classify(record)
        best = min(best, (time.perf_counter() - start) / len(records))
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--show", type=int, default=60, help="misclassified rows to list")
    parser.add_argument("--width", type=int, default=160, help="characters shown per row")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args(argv)

    detector = RefusalDetector()
    examples = load_all()
    scores = score(detector, examples)
    print(f"refusal phrase list version {detector.phrases_version}")
    print("Response text only; PyRIT non-sequitur rows excluded; objective rows are all")
    print("non-refusals (precision n/a). The multilingual set is WRITTEN BY US, not independent.\n")
    print(table(scores))

    mistakes = [m for name in (*PYRIT_ALL, OURS) for m in scores.get(name, Score()).mistakes]
    print(f"\nmisclassified ({len(mistakes)}; showing up to {args.show}):")
    for example, predicted in mistakes[: args.show]:
        kind = "FP" if predicted else "FN"
        text = " ".join(example.text.split())
        cut = text[: args.width] + ("..." if len(text) > args.width else "")
        print(f"  {kind} [{example.source} | {example.row}] {cut}")

    if not args.no_timing:
        refusals = [e.text for e in examples if e.refusal]
        others = [e.text for e in examples if not e.refusal]
        print("\nper-record cost of classify (best of 5, mean):")
        print(f"  non-refusal responses: {timing(detector, others):6.2f} us")
        print(f"  refusal responses:     {timing(detector, refusals):6.2f} us")
        print(f"  all labelled rows:     {timing(detector, [e.text for e in examples]):6.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
