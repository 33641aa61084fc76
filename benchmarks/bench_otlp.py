"""The OTLP receiver, measured.

    python benchmarks/bench_otlp.py ingest [--calls 20000] [--repeat 2]
    python benchmarks/bench_otlp.py storm [--spans 100000] [--per-export 10000]

`ingest`: records/s of OTLP/HTTP protobuf exports (decode, join, pipeline) against the same
calls written as JSON lines (one OTLP-JSON span a line, the file input's path: parse,
pipeline), side by side in one process, alternately, best of `--repeat`. The calls are the
chat spans OpenLLMetry's openai instrumentation really sent (tests/fixtures/otlp), copied
with fresh span and response ids over 8 models, 500 spans an export; all four signals.

`storm`: a real exporter process takes `--spans` spans of no GenAI call (an app's HTTP and
database spans) in exports of 10,000 while /metrics is scraped every 50 ms: how long the
scrapes take meanwhile, against before.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.config import parse_config  # noqa: E402
from exporter.inputs.otlp_decode import Kind, decode  # noqa: E402
from exporter.inputs.otlp_join import SpanJoin  # noqa: E402
from exporter.inputs.stats import InputStats  # noqa: E402
from exporter.streams.pipeline import Pipeline  # noqa: E402
from tests.process import ExporterProcess  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "otlp" / "openllmetry-openai"
PROTOBUF = "application/x-protobuf"
PER_EXPORT = 500


def _chat_spans() -> tuple[list[Span], ExportTraceServiceRequest]:
    """The fixture's chat spans, and an export holding its resource and scope."""
    spans, template = [], None
    for path in sorted(FIXTURE.glob("*-traces.pb")):
        export = ExportTraceServiceRequest.FromString(path.read_bytes())
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                for span in scope.spans:
                    if any(a.key == "gen_ai.output.messages" for a in span.attributes):
                        spans.append(span)
                        template = template or export
    assert template is not None
    return spans, template


def exports(calls: int) -> list[bytes]:
    spans, template = _chat_spans()
    bodies = []
    for start in range(0, calls, PER_EXPORT):
        export = ExportTraceServiceRequest()
        export.CopyFrom(template)
        scope = export.resource_spans[0].scope_spans[0]
        del export.resource_spans[1:], export.resource_spans[0].scope_spans[1:]
        del scope.spans[:]
        for n in range(start, min(calls, start + PER_EXPORT)):
            span = scope.spans.add()
            span.CopyFrom(spans[n % len(spans)])
            span.span_id = n.to_bytes(8, "big")
            for attribute in span.attributes:
                if attribute.key == "gen_ai.response.id":
                    attribute.value.string_value = f"chatcmpl-{n}"
                elif attribute.key == "gen_ai.request.model":
                    attribute.value.string_value = f"gpt-4o-mini-{n % 8}"
        bodies.append(export.SerializeToString())
    return bodies


def json_lines(bodies: list[bytes]) -> list[bytes]:
    """The same calls as JSON lines: each span as the OTLP-JSON object the adapter reads."""
    return [orjson.dumps(item.value) for body in bodies
            for item in decode(body, PROTOBUF, "traces").items]


def _otlp(bodies: list[bytes]) -> float:
    pipeline, stats, join = Pipeline(parse_config({})), InputStats("otlp", "otlp"), SpanJoin()
    started = time.perf_counter()
    for body in bodies:
        pipeline.ingest_values(join.add(decode(body, PROTOBUF, "traces").items, 0.0), stats,
                               "otel_genai")
    seconds = time.perf_counter() - started
    assert stats.rejected == 0
    return stats.records / seconds


def _lines(lines: list[bytes]) -> float:
    pipeline, stats = Pipeline(parse_config({})), InputStats("file", "file")
    started = time.perf_counter()
    for start in range(0, len(lines), PER_EXPORT):
        pipeline.ingest_lines(lines[start:start + PER_EXPORT], stats, "otel_genai")
    seconds = time.perf_counter() - started
    assert stats.rejected == 0
    return stats.records / seconds


def ingest(args: argparse.Namespace) -> None:
    bodies = exports(args.calls)
    lines = json_lines(bodies)
    assert len(lines) == args.calls
    otlp, file = [], []
    for _ in range(args.repeat):
        otlp.append(_otlp(bodies))
        file.append(_lines(lines))
    print(f"\n{args.calls:,} calls (OpenLLMetry openai spans), {PER_EXPORT} an export, "
          f"8 streams, all four signals; best of {args.repeat}, alternately\n")
    print("| input | records/s | vs JSON lines |\n| --- | ---: | ---: |")
    print(f"| JSON lines (file input path) | {max(file):,.0f} | 1.00x |")
    print(f"| OTLP/HTTP protobuf (decode, join, pipeline) | {max(otlp):,.0f} | "
          f"{max(otlp) / max(file):.2f}x |")


def _storm_exports(spans: int, per_export: int = 10_000) -> list[bytes]:
    """Exports of HTTP and database spans, each with one chat span among them, so that
    every span is looked at (an export with no GenAI attribute at all is only counted)."""
    chat, _ = _chat_spans()
    bodies = []
    for start in range(0, spans, per_export):
        export = ExportTraceServiceRequest()
        resource = export.resource_spans.add()
        attribute = resource.resource.attributes.add()
        attribute.key, attribute.value.string_value = "service.name", "checkout"
        scope = resource.scope_spans.add()
        scope.scope.name = "opentelemetry.instrumentation.flask"
        scope.spans.add().CopyFrom(chat[0])
        for n in range(start, min(spans, start + per_export) - 1):
            span = scope.spans.add()
            span.trace_id, span.span_id = n.to_bytes(16, "big"), n.to_bytes(8, "big")
            span.name = "GET /api/orders"
            for key, value in (("http.route", "/api/orders"), ("http.method", "GET"),
                               ("db.system", "postgresql")):
                attribute = span.attributes.add()
                attribute.key, attribute.value.string_value = key, value
        bodies.append(export.SerializeToString())
    return bodies


def _scrape_seconds(exporter: ExporterProcess) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(exporter.url("/metrics"), timeout=30) as response:
        response.read()
    return time.perf_counter() - started


def storm(args: argparse.Namespace) -> None:
    bodies = _storm_exports(args.spans, args.per_export)
    with tempfile.TemporaryDirectory(prefix="bench-otlp-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text("inputs:\n  - type: otlp\n    grpc_address: null\n")
        exporter = ExporterProcess(["run", "--config", str(config)], Path(tmp) / "log")
        exporter.wait_ready()
        try:
            quiet = [_scrape_seconds(exporter) for _ in range(40)]
            during: list[float] = []
            done = threading.Event()

            def scrape() -> None:
                while not done.is_set():
                    during.append(_scrape_seconds(exporter))
                    time.sleep(0.05)

            scraper = threading.Thread(target=scrape)
            scraper.start()
            started = time.perf_counter()
            for body in bodies:
                request = urllib.request.Request(
                    exporter.url("/v1/traces"), data=body,
                    headers={"Content-Type": PROTOBUF}, method="POST")
                with urllib.request.urlopen(request, timeout=60) as response:
                    assert response.status == 200
            seconds = time.perf_counter() - started
            done.set()
            scraper.join()
            samples = exporter.samples()
        finally:
            exporter.stop()
    counted = sum(v for (n, labels), v in samples.items()
                  if n == "llm_exporter_otlp_items_total" and ("kind", str(Kind.OTHER)) in labels)
    assert counted == args.spans - len(bodies), counted
    print(f"\n{args.spans:,} spans, one chat call an export and the rest no GenAI call, in "
          f"{len(bodies)} exports of {len(bodies[0]) / 1e6:.1f} MB, taken in {seconds:.2f} s "
          f"({args.spans / seconds:,.0f} spans/s); the rest counted as kind=other\n")
    print("| /metrics scrapes | n | median ms | p99 ms | max ms |\n"
          "| --- | ---: | ---: | ---: | ---: |")
    for label, values in (("before", quiet), ("during the storm", during)):
        ordered = sorted(values)
        print(f"| {label} | {len(values)} | {statistics.median(values) * 1e3:.1f} | "
              f"{ordered[int(0.99 * (len(ordered) - 1))] * 1e3:.1f} | {max(values) * 1e3:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("ingest")
    one.add_argument("--calls", type=int, default=20_000)
    one.add_argument("--repeat", type=int, default=2)
    two = sub.add_parser("storm")
    two.add_argument("--spans", type=int, default=100_000)
    two.add_argument("--per-export", type=int, default=10_000)
    args = parser.parse_args()
    (ingest if args.what == "ingest" else storm)(args)


if __name__ == "__main__":
    main()
