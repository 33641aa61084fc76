"""Torture run for the file input: appends, rotations, copytruncates and restarts.

The real exporter process (default settings) tails `app.jsonl*` while this script appends
uniquely numbered records, renames the file away (rename+create rotation), copy-truncates
it, and restarts the exporter with SIGTERM or SIGKILL. At the end the records counted in the
saved state (the store under `state_dir`, read as `run` reads it) must equal the records
written: nothing lost, and no duplicate reaches the persisted state.

A SIGKILL loses what the process did since its last checkpoint: those records are read and
processed again by the next process (`TortureResult.reread`, at-least-once). The exporter
checkpoints as often as a checkpoint costs at most 2% of the time, so usually far more often
than once a second, and at least every `checkpoint_interval` (1 s by default). For each
SIGKILL the records read again must stay within the documented bound: what the process
processed during one checkpoint interval (plus one read pass that may delay the checkpoint).

    python -m tests.torture --records 100000 --rotations 20 --truncations 5 --restarts 6
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from exporter.streams.checkpoint import saved_streams
from exporter.streams.store import DATABASE, Saved, SqliteBackend
from tests.process import ExporterProcess

CHECKPOINT_INTERVAL = 1.0  # the default: the run uses the default settings


@dataclass
class TortureResult:
    written: int = 0
    persisted: int = 0
    rotations: int = 0
    truncations: int = 0
    sigterms: int = 0
    sigkills: int = 0
    # SIGKILLs after the exporter caught up: (written - persisted after the kill, its bound)
    duplicates_after_kill: list[tuple[int, int]] = field(default_factory=list)
    # records processed twice: by a killed process after its last checkpoint, then again
    reread: int = 0
    # every SIGKILL: (what it made the next process read again, its bound; see `restart`)
    kills: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0


def record(number: int) -> bytes:
    return orjson.dumps({
        "route": "/torture",
        "request": {"model": "gpt-4o"},
        "response": {
            "object": "chat.completion",
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"record {number} ok"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3 + number % 7},
        },
    }) + b"\n"


class Torture:
    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True)
        self.state = workdir / "state"
        self.config = workdir / "config.yaml"
        self.config.write_text(
            f'inputs: [{{type: file, paths: ["{self.logs}/app.jsonl*"], start_at: beginning, '
            f"poll_interval: 0.02}}]\nstate_dir: {self.state}\n"
            "detectors: {baseline_size: 300, window_size: 50}\n"
        )
        self.rng = random.Random(seed)
        self.result = TortureResult()
        # (time, records this exporter process has processed), sampled while waiting
        self.progress: list[tuple[float, float]] = []
        self.port: int | None = None
        self.exporter = self._start()

    def _start(self) -> ExporterProcess:
        run = len(list(self.workdir.glob("exporter-*.log")))
        exporter = ExporterProcess(["run", "--config", str(self.config)],
                                   self.workdir / f"exporter-{run}.log", port=self.port)
        self.port = exporter.port
        exporter.wait_ready(timeout=60)
        self.progress = []
        return exporter

    def append(self, count: int) -> None:
        start = self.result.written
        with open(self.logs / "app.jsonl", "ab") as handle:
            handle.write(b"".join(record(n) for n in range(start, start + count)))
        self.result.written += count

    def caught_up(self, timeout: float = 60.0) -> None:
        """Wait until every file on disk has been read to its end by the exporter."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            samples = self.exporter.samples()
            processed = sum(v for (name, _), v in samples.items() if name == "llm_records_total")
            self.progress.append((time.monotonic(), processed))
            offsets = {
                dict(labels)["path"]: value
                for (name, labels), value in samples.items()
                if name == "llm_exporter_file_offset_bytes"
            }
            on_disk = {str(p): p.stat().st_size for p in self.logs.glob("app.jsonl*")}
            if on_disk and all(offsets.get(path) == size for path, size in on_disk.items()):
                return
            time.sleep(0.05)
        raise TimeoutError(f"exporter did not catch up: {self.workdir}")

    def processed(self) -> float:
        """Records this exporter process has processed (its llm_records_total)."""
        samples = self.exporter.samples()
        return sum(v for (name, _), v in samples.items() if name == "llm_records_total")

    def persisted(self) -> int:
        """Records the saved detector state has counted, read from the store as `run`
        reads it, while the exporter may be writing it (see `read_saved`)."""
        if not (self.state / DATABASE).exists():
            return 0  # killed before its first checkpoint
        entries, failures = saved_streams(read_saved(self.state))
        assert failures == 0
        return sum(e["detectors"]["records"] for e in entries)

    def rotate(self) -> None:
        self.result.rotations += 1
        (self.logs / "app.jsonl").rename(self.logs / f"app.jsonl.{self.result.rotations}")

    def truncate(self) -> None:
        """copytruncate, after the exporter has read everything and checkpointed it. Data
        truncated away before that is gone if the exporter then dies before it sees the
        truncation (it checkpoints at once when it does): copytruncate's window, documented
        in docs/inputs.md (File input: tailing), like the lines a writer adds between the copy
        and the truncate."""
        self.caught_up()
        deadline = time.monotonic() + 10 * CHECKPOINT_INTERVAL
        while self.persisted() != self.result.written and time.monotonic() < deadline:
            time.sleep(0.02)
        live = self.logs / "app.jsonl"
        if not live.exists():
            return
        self.result.truncations += 1
        shutil.copy(live, self.workdir / f"copy-{self.result.truncations}.bak")
        with open(live, "r+b") as handle:
            handle.truncate(0)

    def restart(self, kill: bool, after_catch_up: bool) -> None:
        if after_catch_up:
            self.caught_up()
        if kill:
            # what it has processed, scraped just before the kill (a lower bound: it may
            # process a few more before the signal lands)
            processed = self.processed()
            killed_at = time.monotonic()
            self.progress.append((killed_at, processed))
            self.exporter.kill()
            persisted = self.persisted()
            # llm_records_total resumes from the saved state: processed includes it
            reread = max(0, int(processed) - persisted)
            self.result.reread += reread
            self.result.sigkills += 1
            # The documented bound: what the process processed during the last checkpoint
            # interval (a checkpoint comes at least that often, usually far more often),
            # plus one read pass that may delay it. Without a sample that old (a process
            # killed soon after its start), everything it processed.
            cutoff = killed_at - CHECKPOINT_INTERVAL - 1.0
            earlier = max((v for t, v in self.progress if t <= cutoff), default=0.0)
            bound = int(processed - earlier)
            self.result.kills.append((reread, bound))
            if after_catch_up:
                self.result.duplicates_after_kill.append((self.result.written - persisted, bound))
        else:
            assert self.exporter.stop() == 0
            self.result.sigterms += 1
        self.exporter = self._start()

    def finish(self) -> TortureResult:
        self.caught_up()
        assert self.exporter.stop() == 0
        self.result.persisted = self.persisted()
        return self.result


def read_saved(state: Path) -> Saved:
    """What the store under `state` holds as last committed, read while the exporter may be
    writing it (it holds the store's lock): a read-only backend, a WAL reader."""
    backend = SqliteBackend(state, read_only=True)
    try:
        return backend.load()
    finally:
        backend.close()


def run(records: int, rotations: int, truncations: int, restarts: int, seed: int = 1,
        workdir: Path | None = None) -> TortureResult:
    started = time.monotonic()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="torture-"))
    torture = Torture(workdir, seed)
    rng = torture.rng
    kills = restarts // 2 + restarts % 2  # at least half of the restarts are SIGKILL
    operations = (["rotate"] * rotations + ["truncate"] * truncations
                  + [("sigkill-caught-up", "sigkill-busy")[i % 2] for i in range(kills)]
                  + ["sigterm"] * (restarts - kills))
    rng.shuffle(operations)
    try:
        batches = len(operations) + 1
        per_batch = records // batches
        for index in range(batches):
            count = per_batch if index < batches - 1 else records - per_batch * (batches - 1)
            # several appends per batch, some while the exporter is busy reading
            for part in _split(count, rng):
                torture.append(part)
                time.sleep(rng.choice((0.0, 0.0, 0.01)))
            if index < len(operations):
                operation = operations[index]
                if operation == "rotate":
                    torture.rotate()
                elif operation == "truncate":
                    torture.truncate()
                else:
                    torture.restart(kill=operation.startswith("sigkill"),
                                    after_catch_up=operation != "sigkill-busy")
        result = torture.finish()
    finally:
        if torture.exporter.process.poll() is None:  # a failed run must not leave it behind
            torture.exporter.process.kill()
    result.seconds = time.monotonic() - started
    return result


def _split(count: int, rng: random.Random) -> list[int]:
    parts = []
    while count > 0:
        part = min(count, rng.randint(1, 2000))
        parts.append(part)
        count -= part
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description="tail torture run against the real exporter")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rotations", type=int, default=20)
    parser.add_argument("--truncations", type=int, default=5)
    parser.add_argument("--restarts", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="a new directory (default: a temporary one)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="torture-"))
    print(f"workdir (logs, state, exporter-*.log): {workdir}", flush=True)
    result = run(args.records, args.rotations, args.truncations, args.restarts, args.seed,
                 workdir=workdir)
    print(result)
    share = result.reread / result.written if result.written else 0.0
    print(f"written {result.written}, persisted {result.persisted}, read again after "
          f"{result.sigkills} SIGKILL(s): {result.reread} ({100 * share:.2f}% of written), "
          f"{result.seconds:.1f} s")
    assert result.persisted == result.written, "records lost or double-counted"
    assert all(seen <= bound for seen, bound in result.duplicates_after_kill)
    assert result.reread <= sum(bound for _, bound in result.kills)


if __name__ == "__main__":
    main()
