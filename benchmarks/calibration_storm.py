"""Scrape delay while many streams finish their baselines together, on the real exporter.

The exporter (`python -m exporter run --config ...`, as a user runs it, default detector
settings) tails one JSON-lines file on loopback. Every stream (`route="/s00042"`, its own shape
from calibration_streams.py: lengths from provider usage, refusals, invalid replies, topic mix)
gets exactly the records it needs to complete every baseline, and the streams' records end
in the same round: the records needed are found beforehand by the exporter's own detectors
(StreamDetectors from the same config, fed the same measurements, with an executor that never
runs a simulation, so finding them costs no calibration). So all streams ask for their
thresholds within the last rounds of the file: the storm of a restart without state, or of
N services going live together. After those rounds the traffic goes on at `trickle` rounds a
second (what a stream gets while its threshold is simulated is held and replayed).

A separate process scrapes `/metrics` (and every `api_every`-th time `/api/v1/streams`) with
`scrape_gap` s between scrapes, and notes each response time, the records the exporter has
accounted and how many `llm_drift_baseline_ready` gauges are at 1. Phases: learning (the file
written until all of it is accounted), storm (until every gauge is 1, or `timeout`), after
(a few seconds of the calm that follows). The exporter's CPU is read from /proc (its threads
and child processes included).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import multiprocessing
import queue
import re
import shutil
import tempfile
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import calibration_streams as cs
import orjson
import yaml
from bench_latency import cpu_seconds

from exporter.config import Config, parse_config
from exporter.detectors import DetectorFactory
from exporter.records import normalize
from exporter.records.labels import StreamLabeler
from exporter.signals.measure import Measurements, SignalMeasurer
from exporter.streams.stream_detectors import StreamDetectors
from tests.process import ExporterProcess

INPUT = "bench"
CHUNK = 25  # records fed at a time while finding how many a stream needs
MAX_BLOCKS = 20  # a stream whose baselines need more than this many blocks is an error
AFTER_SECONDS = 3.0
LINE = (b'{"route":"/s%05d","request":{"model":"bench"},"response":{"object":"chat.completion",'
        b'"model":"bench","choices":[{"index":0,"finish_reason":"stop","message":{"role":'
        b'"assistant","content":%s}}],"usage":{"prompt_tokens":10,"completion_tokens":%d}}}')
READY = re.compile(rb"^llm_drift_baseline_ready\{[^\n]*\} (\S+)$", re.M)
ACCOUNTED = re.compile(
    rb'^llm_exporter_input_records_total\{[^\n]*input="' + INPUT.encode() + rb'"[^\n]*\} (\S+)$',
    re.M)
LOADED = b"llm_exporter_tokenizer_info{"  # in /metrics once the token encoding has loaded
REJECTED = re.compile(rb"^llm_exporter_input_records_rejected_total\{[^\n]*\} (\S+)$", re.M)


@dataclass(frozen=True)
class StormConfig:
    streams: int = 1000
    seed: int = 0
    detectors: dict[str, int] = field(default_factory=dict)  # e.g. {"baseline_size": 200}
    trickle: float = 1.0  # rounds (one record per stream) a second after the baselines
    timeout: float = 240.0  # seconds from the end of the file to wait for every stream
    scrape_gap: float = 0.1
    api_every: int = 5
    directory: str | None = None  # where the data goes (default: /dev/shm when there is one)


@dataclass(frozen=True)
class Scrape:
    path: str
    at: float  # perf_counter at the end of the response
    seconds: float
    accounted: float  # records the exporter accounted (/metrics only, else -1)
    ready: int  # baseline_ready gauges at 1 (/metrics only)
    not_ready: int


@dataclass
class StormResult:
    streams: int
    signals: int  # baseline_ready gauges expected in all
    records: int  # in the file's main part (every stream's baselines)
    rounds: int
    scrapes: list[Scrape]
    written: float  # perf_counter times: main part written
    accounted: float | None  # all of it accounted
    ready: float | None  # every gauge at 1 (None: timed out)
    ready_seen: int  # gauges at 1 by the end
    cpu_learning: float  # exporter CPU seconds, written -> accounted
    cpu_storm: float  # accounted -> ready (or timeout)
    trickled: int  # records appended after the main part
    rejected: float
    needed: list[int]  # records each stream needed to complete its baselines
    log_problems: list[str]

    def phase(self, path: str, name: str) -> list[float]:
        end = self.ready if self.ready is not None else float("inf")
        accounted = self.accounted if self.accounted is not None else float("inf")
        bounds = {"learning": (self.written, accounted), "storm": (accounted, end),
                  "after": (end, float("inf"))}[name]
        return [s.seconds for s in self.scrapes
                if s.path == path and bounds[0] <= s.at < bounds[1]]


class NeverRun(Executor):
    """An executor that never runs what it is given: a detector that hands it a simulation
    says its baseline is complete, and that is all finding the records needed asks."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        return Future()


def exporter_config(storm: StormConfig, data: Path) -> dict[str, Any]:
    return {
        "inputs": [{"type": "file", "name": INPUT, "paths": [str(data)],
                    "start_at": "beginning", "poll_interval": 0.01}],
        "max_streams": storm.streams + 10,
        "signals": {"format_validity": [{"expect": "regex", "pattern": cs.FORMAT_PATTERN}]},
        "detectors": dict(storm.detectors),
    }


def measured_texts(config: Config) -> list[Measurements]:
    """What the exporter's signals make of each reply of `cs.texts()` (checked: the valid
    ones valid, the invalid ones invalid, the refusals refusals)."""
    measurer, labeler = SignalMeasurer(config.signals), StreamLabeler(config.stream_labels)
    out = []
    for text in cs.texts():
        line = LINE % (0, orjson.dumps(text), 1)
        record = normalize(orjson.loads(line), config.format)[0]
        out.append(measurer.measure(record, labeler.key(record), labeler.names))
    valid = cs.POOL_PER_TOPIC * len(cs.ds.TOPICS)
    invalid = valid + cs.INVALID_PER_TOPIC * len(cs.ds.TOPICS)
    kinds = [(m.refusal is not None, m.format_invalid is not None) for m in out]
    assert kinds == [(False, False)] * valid + [(False, True)] * (invalid - valid) + [
        (True, False)] * len(cs.REFUSALS), "a reply is not measured as the benchmark means it"
    return out


def records_needed(config: Config, shape: cs.StreamShape, texts: list[Measurements]) -> int:
    """Records after which every detector of the stream has its baseline complete."""
    factory = DetectorFactory(config.detectors.settings, config.detectors.signals)
    factory.executor = NeverRun()
    stream = StreamDetectors.create(factory)
    fed = 0
    for number in range(MAX_BLOCKS):
        b = cs.block(shape, number)
        batch = [dataclasses.replace(texts[t], output_tokens=n)
                 for t, n in zip(b.texts.tolist(), b.tokens.tolist(), strict=True)]
        for start in range(0, len(batch), CHUNK):
            stream.update_many(batch[start:start + CHUNK])
            fed += len(batch[start:start + CHUNK])
            if all(d.calibrating or d.baseline_ready for d in stream.detectors.values()):
                return fed
    raise RuntimeError(f"stream {shape.index}: baselines not complete after {fed} records")


class Lines:
    """The file's lines of every stream: stream i's k-th record, from its blocks."""

    def __init__(self, shapes: list[cs.StreamShape]) -> None:
        self.shapes = shapes
        self.contents = [orjson.dumps(text) for text in cs.texts()]
        self.blocks: dict[tuple[int, int], cs.Block] = {}

    def line(self, stream: int, k: int) -> bytes:
        number, offset = divmod(k, cs.BLOCK)
        b = self.blocks.get((stream, number))
        if b is None:
            b = self.blocks[(stream, number)] = cs.block(self.shapes[stream], number)
        return LINE % (stream, self.contents[b.texts[offset]], b.tokens[offset])

    def round(self, needed: list[int], rounds: int, r: int) -> list[bytes]:
        """Round `r`: one record of every stream that has started by then (stream i starts
        at round `rounds - needed[i]`, so every stream completes in round `rounds - 1`)."""
        return [self.line(i, r - rounds + need) for i, need in enumerate(needed)
                if r >= rounds - need]


def scrape_loop(port: int, gap: float, api_every: int, stop: Any, out: Any) -> None:
    """In its own process, so the benchmark's own work never delays a scrape it times."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    count = 0
    while not stop.is_set():
        path = "/api/v1/streams" if api_every and count % api_every == api_every - 1 \
            else "/metrics"
        count += 1
        started = time.perf_counter()
        try:
            connection.request("GET", path)
            body = connection.getresponse().read()
        except (http.client.HTTPException, OSError):
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        ended = time.perf_counter()
        accounted, ready, not_ready = -1.0, 0, 0
        if path == "/metrics":
            match = ACCOUNTED.search(body)
            accounted = float(match.group(1)) if match else 0.0
            values = READY.findall(body)
            ready = sum(1 for v in values if float(v) == 1.0)
            not_ready = len(values) - ready
        out.put(Scrape(path, ended, ended - started, accounted, ready, not_ready))
        stop.wait(gap)


def wait_started(port: int, timeout: float = 60.0) -> None:
    """Until the token encoding has loaded: its thread holds the GIL for a moment after
    start, and that scrape delay is not the storm's."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    deadline = time.monotonic() + timeout
    with contextlib.closing(connection):
        while time.monotonic() < deadline:
            connection.request("GET", "/metrics")
            if LOADED in connection.getresponse().read():
                return
            time.sleep(0.1)
    raise TimeoutError(f"the exporter did not load its token encoding in {timeout} s")


def run_storm(storm: StormConfig, progress: Any = print) -> StormResult:
    shm = Path("/dev/shm")
    directory = storm.directory or (str(shm) if shm.is_dir() else None)
    workdir = Path(tempfile.mkdtemp(prefix="bench-calibration-", dir=directory))
    try:  # the data is ~0.5 GB for 1,000 streams, in memory on /dev/shm: never left behind
        return _storm_in(workdir, storm, progress)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _storm_in(workdir: Path, storm: StormConfig, progress: Any) -> StormResult:
    data, config_path = workdir / "records.jsonl", workdir / "config.yaml"
    raw = exporter_config(storm, data)
    config_path.write_text(yaml.safe_dump(raw))
    config = parse_config(raw)
    shapes = cs.shapes(storm.streams, storm.seed)
    progress(f"finding the records each of {storm.streams} streams needs ...")
    texts = measured_texts(config)
    needed = [records_needed(config, shape, texts) for shape in shapes]
    rounds = max(needed)
    lines = Lines(shapes)
    main_records = sum(needed)
    expected = storm.streams * sum(spec.enabled for spec in config.detectors.signals.values())
    progress(f"writing {main_records:,} records ({rounds} rounds) ...")
    main_part = b"".join(b"\n".join(lines.round(needed, rounds, r)) + b"\n"
                         for r in range(rounds))
    data.touch()
    exporter = ExporterProcess(["run", "--config", str(config_path)], workdir / "exporter.log")
    context = multiprocessing.get_context("spawn")
    stop, scrapes_out = context.Event(), context.Queue()
    scraper = None
    scrapes: list[Scrape] = []
    accounted_at = ready_at = None
    trickled = 0
    try:
        exporter.wait_ready()
        wait_started(exporter.port)
        pid = exporter.process.pid
        scraper = context.Process(target=scrape_loop, args=(
            exporter.port, storm.scrape_gap, storm.api_every, stop, scrapes_out), daemon=True)
        scraper.start()
        time.sleep(1.0)
        cpu_written = cpu_seconds(pid)
        with open(data, "ab") as handle:
            handle.write(main_part)
        written_at = time.perf_counter()
        progress("learning ...")
        cpu_accounted = cpu_end = cpu_written
        next_round, deadline = 0.0, float("inf")
        while ready_at is None and time.perf_counter() < deadline:
            try:
                scrape = scrapes_out.get(timeout=0.05)
                scrapes.append(scrape)
            except queue.Empty:
                scrape = None
            now = time.perf_counter()
            if scrape is not None and scrape.path == "/metrics":
                if accounted_at is None and scrape.accounted >= main_records:
                    accounted_at, cpu_accounted = scrape.at, cpu_seconds(pid)
                    deadline, next_round = now + storm.timeout, now
                    progress(f"all accounted after {accounted_at - written_at:.1f} s; storm ...")
                if accounted_at is not None and scrape.ready == expected:
                    ready_at = scrape.at
            if accounted_at is not None and storm.trickle > 0 and now >= next_round:
                batch = [lines.line(i, need + trickled // storm.streams)
                         for i, need in enumerate(needed)]
                with open(data, "ab") as handle:
                    handle.write(b"\n".join(batch) + b"\n")
                trickled += len(batch)
                next_round = now + 1.0 / storm.trickle
        cpu_end = cpu_seconds(pid)
        calm_until = time.perf_counter() + AFTER_SECONDS
        while time.perf_counter() < calm_until:
            with contextlib.suppress(queue.Empty):
                scrapes.append(scrapes_out.get(timeout=0.1))
        final = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=60)
        with contextlib.closing(final):
            final.request("GET", "/metrics")
            body = final.getresponse().read()
    finally:
        stop.set()
        if scraper is not None:
            scraper.join(10)
        exporter.stop()
    last_ready = max((s.ready for s in scrapes if s.path == "/metrics"), default=0)
    log_text = (workdir / "exporter.log").read_text(errors="replace")
    return StormResult(
        streams=storm.streams, signals=expected, records=main_records, rounds=rounds,
        scrapes=scrapes, written=written_at,
        accounted=accounted_at, ready=ready_at, ready_seen=last_ready,
        cpu_learning=cpu_accounted - cpu_written, cpu_storm=cpu_end - cpu_accounted,
        trickled=trickled, rejected=sum(float(v) for v in REJECTED.findall(body)),
        needed=needed,
        log_problems=[line for line in log_text.splitlines()
                      if "ERROR" in line or "Traceback" in line or "WARNING" in line])
