"""Capture real OTLP payloads from real OpenTelemetry instrumentations of LLM clients.

Usage:
    python tests/otlp_capture.py OUTDIR [--only RUN[,RUN...]] [--python PATH]
    python tests/otlp_capture.py --dump FILE.pb          # decode one capture as JSON

It needs, in the interpreter that runs it (not the project's venv), the
packages listed in tests/fixtures/otlp/VERSIONS.txt: the OpenTelemetry SDK,
the OTLP/HTTP and OTLP/gRPC exporters, opentelemetry-proto, grpcio, the
official ``openai`` and ``anthropic`` clients and the instrumentations
opentelemetry-instrumentation-openai-v2, opentelemetry-instrumentation-openai
and -anthropic (OpenLLMetry), openinference-instrumentation-openai.

What it does:
  * an OpenAI/Anthropic-compatible stub on 127.0.0.1 answers
    POST /v1/chat/completions (JSON or SSE), /v1/embeddings and /v1/messages
    with deterministic replies (normal answers, refusals, a tool call, a
    truncated answer; served model differs from the requested one);
  * an OTLP/HTTP capture server on 127.0.0.1 stores every POST to
    /v1/traces, /v1/logs, /v1/metrics as ``NNN-<signal>.pb`` (raw body as
    received) plus ``NNN-<signal>.json`` (path and headers), and answers 200
    with an empty Export*ServiceResponse (application/x-protobuf);
  * an OTLP/gRPC capture server stores TraceService/Export and
    LogsService/Export requests as raw bytes the same way;
  * each instrumentation runs in its own subprocess (instrumentors patch the
    client globally), with the SDK exporting to the capture servers.

Nothing here is hand-made OTLP: every .pb file is what the exporter sent.

tests/test_otlp_instrumented.py reuses the stub (`start_http(LLMStubHandler)`) and the
instrumented children (`child_command`, `child_env`, `run_child`), exporting to the real
exporter process instead of the capture servers (`--no-metrics`: it takes no /v1/metrics).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CREATED = 1_735_689_600  # 2025-01-01T00:00:00Z, fixed so replies are deterministic

OPENAI_SERVED = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "text-embedding-3-small": "text-embedding-3-small",
}
ANTHROPIC_SERVED = {"claude-3-5-haiku-latest": "claude-3-5-haiku-20241022"}

REFUSAL_TEXT = "I'm sorry, but I can't help with that."
REFUSAL_FIELD_TEXT = "I'm sorry, but I can't assist with that request."


# --------------------------------------------------------------------------
# LLM stub
# --------------------------------------------------------------------------


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _prompt_tokens(messages) -> int:
    total = 0
    for m in messages or []:
        c = m.get("content")
        if isinstance(c, list):
            c = " ".join(p.get("text", "") for p in c if isinstance(p, dict))
        total += 4 + _tokens(c or "")
    return total


def _chat_reply(body: dict) -> dict:
    """Pick the deterministic answer for a chat request by its last user text."""
    messages = body.get("messages") or []
    last = ""
    for m in messages:
        if m.get("role") == "user":
            c = m.get("content")
            last = c if isinstance(c, str) else json.dumps(c)
    low = last.lower()
    msg: dict = {"role": "assistant", "content": None, "refusal": None}
    finish = "stop"
    if "lock" in low:  # refusal as plain content
        msg["content"] = REFUSAL_TEXT
    elif "malware" in low:  # refusal through the dedicated field
        msg["refusal"] = REFUSAL_FIELD_TEXT
    elif "weather" in low and body.get("tools"):
        msg["tool_calls"] = [
            {
                "id": "call_fixture_weather_1",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": '{"city": "Paris", "unit": "celsius"}',
                },
            }
        ]
        finish = "tool_calls"
    elif "poem" in low:  # cut by max_tokens
        msg["content"] = "Metrics rise and fall,"
        finish = "length"
    elif "capital" in low:
        msg["content"] = "The capital of France is Paris."
    elif "haiku" in low:
        msg["content"] = (
            "Spans drift like autumn leaves, / exporters gather them home, / "
            "dashboards glow at dusk."
        )
    else:
        msg["content"] = "Drift detection compares recent model outputs with a reference window."
    out_text = msg["content"] or msg["refusal"] or json.dumps(msg.get("tool_calls"))
    return {
        "message": msg,
        "finish": finish,
        "prompt_tokens": _prompt_tokens(messages),
        "completion_tokens": _tokens(out_text),
    }


class _Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0

    def next(self) -> int:
        with self.lock:
            self.n += 1
            return self.n


class LLMStubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    counter = _Counter()

    def log_message(self, *a):  # quiet
        pass

    def _json(self, obj: dict, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", f"req_fixture_{self.counter.n:03d}")
        self.end_headers()
        self.wfile.write(data)

    def _sse_start(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _sse(self, data: str, event: str | None = None) -> None:
        chunk = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
        self.wfile.write(chunk.encode())
        self.wfile.flush()

    def do_POST(self):
        n = self.counter.next()
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        path = self.path.split("?")[0]
        if path.endswith("/chat/completions"):
            self._chat(body, n)
        elif path.endswith("/embeddings"):
            self._embeddings(body)
        elif path.endswith("/messages"):
            self._messages(body, n)
        else:
            self._json({"error": {"message": f"no route {path}"}}, 404)

    # OpenAI chat completions -------------------------------------------
    def _chat(self, body: dict, n: int) -> None:
        req_model = body.get("model", "gpt-4o-mini")
        served = OPENAI_SERVED.get(req_model, req_model + "-served")
        r = _chat_reply(body)
        usage = {
            "prompt_tokens": r["prompt_tokens"],
            "completion_tokens": r["completion_tokens"],
            "total_tokens": r["prompt_tokens"] + r["completion_tokens"],
        }
        rid = f"chatcmpl-fixture{n:03d}"
        if not body.get("stream"):
            self._json(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": served,
                    "system_fingerprint": "fp_fixture01",
                    "service_tier": "default",
                    "choices": [
                        {
                            "index": 0,
                            "message": r["message"],
                            "logprobs": None,
                            "finish_reason": r["finish"],
                        }
                    ],
                    "usage": usage,
                }
            )
            return
        self._sse_start()
        base = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": served,
            "system_fingerprint": "fp_fixture01",
            "service_tier": "default",
        }
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta, finish=None, **extra):
            obj = dict(
                base,
                choices=[{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **extra,
            )
            if include_usage:
                obj["usage"] = None
            self._sse(json.dumps(obj))

        chunk({"role": "assistant", "content": "", "refusal": None})
        text = r["message"]["content"] or r["message"]["refusal"] or ""
        words = text.split(" ")
        for i, w in enumerate(words):
            key = "content" if r["message"]["content"] else "refusal"
            chunk({key: w if i == 0 else " " + w})
        chunk({}, r["finish"])
        if include_usage:
            self._sse(json.dumps(dict(base, choices=[], usage=usage)))
        self._sse("[DONE]")

    # OpenAI embeddings --------------------------------------------------
    def _embeddings(self, body: dict) -> None:
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        dims = int(body.get("dimensions") or 8)
        data = []
        prompt_tokens = 0
        for i, text in enumerate(inputs):
            prompt_tokens += _tokens(str(text))
            vec = [
                round(((hash_text(str(text)) >> (k % 32)) % 1000) / 1000.0 - 0.5, 3)
                for k in range(dims)
            ]
            emb: object = vec
            if body.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        self._json(
            {
                "object": "list",
                "data": data,
                "model": OPENAI_SERVED.get(body.get("model"), body.get("model")),
                "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
            }
        )

    # Anthropic messages --------------------------------------------------
    def _messages(self, body: dict, n: int) -> None:
        req_model = body.get("model", "claude-3-5-haiku-latest")
        served = ANTHROPIC_SERVED.get(req_model, req_model + "-served")
        r = _chat_reply(body)
        msg = r["message"]
        stop = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}[r["finish"]]
        content: list = []
        if msg.get("refusal"):
            # the Messages API's own refusal: stop_reason "refusal"
            content.append({"type": "text", "text": msg["refusal"]})
            stop = "refusal"
        elif msg.get("tool_calls"):
            tc = msg["tool_calls"][0]
            content.append({"type": "text", "text": "Let me look that up."})
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_fixture_01",
                    "name": tc["function"]["name"],
                    "input": json.loads(tc["function"]["arguments"]),
                }
            )
        else:
            content.append({"type": "text", "text": msg["content"]})
        usage = {
            "input_tokens": r["prompt_tokens"],
            "output_tokens": r["completion_tokens"],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        mid = f"msg_fixture{n:03d}"
        full = {
            "id": mid,
            "type": "message",
            "role": "assistant",
            "model": served,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            self._json(full)
            return
        self._sse_start()
        start = dict(full, content=[], stop_reason=None, usage=dict(usage, output_tokens=1))
        self._sse(json.dumps({"type": "message_start", "message": start}), "message_start")
        for idx, block in enumerate(content):
            if block["type"] == "text":
                self._sse(
                    json.dumps(
                        {
                            "type": "content_block_start",
                            "index": idx,
                            "content_block": {"type": "text", "text": ""},
                        }
                    ),
                    "content_block_start",
                )
                for i, w in enumerate(block["text"].split(" ")):
                    self._sse(
                        json.dumps(
                            {
                                "type": "content_block_delta",
                                "index": idx,
                                "delta": {"type": "text_delta", "text": w if i == 0 else " " + w},
                            }
                        ),
                        "content_block_delta",
                    )
            else:
                self._sse(
                    json.dumps(
                        {
                            "type": "content_block_start",
                            "index": idx,
                            "content_block": dict(block, input={}),
                        }
                    ),
                    "content_block_start",
                )
                self._sse(
                    json.dumps(
                        {
                            "type": "content_block_delta",
                            "index": idx,
                            "delta": {
                                "type": "input_json_delta",
                                "partial_json": json.dumps(block["input"]),
                            },
                        }
                    ),
                    "content_block_delta",
                )
            self._sse(
                json.dumps({"type": "content_block_stop", "index": idx}), "content_block_stop"
            )
        self._sse(
            json.dumps(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                }
            ),
            "message_delta",
        )
        self._sse(json.dumps({"type": "message_stop"}), "message_stop")


def hash_text(text: str) -> int:
    h = 2166136261
    for b in text.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


# --------------------------------------------------------------------------
# OTLP capture servers
# --------------------------------------------------------------------------


class Capture:
    """Where captured requests go; the current run's directory is switched between runs."""

    def __init__(self):
        self.lock = threading.Lock()
        self.dir: Path | None = None
        self.seq = 0

    def set_dir(self, d: Path) -> None:
        with self.lock:
            d.mkdir(parents=True, exist_ok=True)
            self.dir, self.seq = d, 0

    def store(self, signal: str, body: bytes, meta: dict) -> None:
        with self.lock:
            if self.dir is None:
                return
            self.seq += 1
            stem = f"{self.seq:03d}-{signal}"
            ext = ".pb.gz" if meta.get("headers", {}).get("Content-Encoding") == "gzip" else ".pb"
            (self.dir / (stem + ext)).write_bytes(body)
            (self.dir / (stem + ".json")).write_text(
                json.dumps(dict(meta, size=len(body)), indent=2) + "\n"
            )


CAPTURE = Capture()


def _empty_response(signal: str) -> bytes:
    if signal == "traces":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse as R,
        )
    elif signal == "logs":
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceResponse as R,
        )
    else:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceResponse as R,
        )
    return R().SerializeToString()


class OTLPHTTPHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        path = self.path.split("?")[0]
        signal = path.rsplit("/", 1)[-1]
        if path not in ("/v1/traces", "/v1/logs", "/v1/metrics"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        keep = ("Content-Type", "Content-Encoding", "User-Agent")
        headers = {k: self.headers[k] for k in keep if self.headers.get(k) is not None}
        CAPTURE.store(
            signal, body, {"transport": "http", "method": "POST", "path": path, "headers": headers}
        )
        out = _empty_response(signal)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def start_grpc_capture():
    """gRPC capture: the TraceService/LogsService servicers from opentelemetry-proto,
    registered with an identity request deserializer so the stored bytes are exactly
    the request message bytes that arrived (not a re-serialisation)."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    methods = {
        "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    }

    def record(signal, raw, context):
        md = {k: v for k, v in context.invocation_metadata() if not k.endswith("-bin")}
        CAPTURE.store(signal, raw, {"transport": "grpc", "method": methods[signal], "metadata": md})

    class TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            trace_service_pb2.ExportTraceServiceRequest.FromString(request)  # must parse
            record("traces", request, context)
            return trace_service_pb2.ExportTraceServiceResponse()

    class LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
        def Export(self, request, context):
            logs_service_pb2.ExportLogsServiceRequest.FromString(request)
            record("logs", request, context)
            return logs_service_pb2.ExportLogsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    for svc, servicer, resp in (
        (
            "opentelemetry.proto.collector.trace.v1.TraceService",
            TraceServicer(),
            trace_service_pb2.ExportTraceServiceResponse,
        ),
        (
            "opentelemetry.proto.collector.logs.v1.LogsService",
            LogsServicer(),
            logs_service_pb2.ExportLogsServiceResponse,
        ),
    ):
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    svc,
                    {
                        "Export": grpc.unary_unary_rpc_method_handler(
                            servicer.Export,
                            request_deserializer=None,
                            response_serializer=resp.SerializeToString,
                        ),
                    },
                ),
            )
        )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def start_http(handler) -> tuple[ThreadingHTTPServer, int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


# --------------------------------------------------------------------------
# Runs (each in its own subprocess)
# --------------------------------------------------------------------------

# name -> (instrumentation, transport, extra environment)
RUNS: dict[str, tuple[str, str, dict]] = {
    # Official contrib instrumentation. With opentelemetry-util-genai >= 1.0 it
    # is always on the "latest experimental" GenAI conventions, where the
    # content mode must be span_only / event_only / span_and_event.
    "openai-v2": (
        "openai-v2",
        "http",
        {
            "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_and_event",
        },
    ),
    # Same, with the documented legacy value "true": util-genai >= 1.0 rejects
    # it and captures no content. Also exported with gzip compression.
    "openai-v2-content-true-gzip": (
        "openai-v2",
        "http",
        {
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        },
    ),
    # Legacy (semconv 1.30) path: gen_ai.*.message / gen_ai.choice log events.
    # Only reachable with opentelemetry-util-genai 0.4b0, so it needs its own
    # interpreter: --python-for openai-v2-legacy=/path/to/python
    "openai-v2-legacy": (
        "openai-v2",
        "http",
        {
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
        },
    ),
    "openllmetry-openai": ("openllmetry-openai", "http", {"TRACELOOP_TRACE_CONTENT": "true"}),
    "openinference-openai": ("openinference-openai", "http", {}),
    # OpenLLMetry's anthropic instrumentation; anthropic >= 2 also traces
    # itself by default (scope com.anthropic.sdk.python), so both appear.
    "openllmetry-anthropic": ("openllmetry-anthropic", "http", {"TRACELOOP_TRACE_CONTENT": "true"}),
    # The anthropic SDK's own tracing alone, with content.
    "anthropic-sdk-native": (
        "anthropic-sdk-native",
        "http",
        {
            "ANTHROPIC_OPEN_TELEMETRY_TRACES_CONTENT_MODE": "content",
        },
    ),
    "grpc-openai-v2": (
        "openai-v2",
        "grpc",
        {
            "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "span_and_event",
        },
    ),
}
OWN_PYTHON_RUNS = {"openai-v2-legacy"}
SHORT_RUNS = {"openai-v2-content-true-gzip", "grpc-openai-v2"}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}


def _setup_sdk(run: str, transport: str, endpoint: str, metrics_too: bool = True):
    from opentelemetry import _logs, metrics, trace
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        span_exp = OTLPSpanExporter(endpoint=endpoint, insecure=True)
        log_exp = OTLPLogExporter(endpoint=endpoint, insecure=True)
        metric_exp = None
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exp = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
        log_exp = OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")
        metric_exp = OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics") if metrics_too else None

    resource = Resource.create(
        {"service.name": f"otlp-fixture-{run}", "deployment.environment.name": "fixture"}
    )
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(BatchSpanProcessor(span_exp))
    trace.set_tracer_provider(tp)
    lp = LoggerProvider(resource=resource)
    lp.add_log_record_processor(BatchLogRecordProcessor(log_exp))
    _logs.set_logger_provider(lp)
    mp = None
    if metric_exp is not None:
        mp = MeterProvider(
            resource=resource,
            metric_readers=[
                PeriodicExportingMetricReader(metric_exp, export_interval_millis=3_600_000)
            ],
        )
        metrics.set_meter_provider(mp)
    return tp, lp, mp


def _openai_calls(client, short: bool) -> None:
    from opentelemetry import trace

    tracer = trace.get_tracer("otlp_capture.app")
    model = "gpt-4o-mini"
    # 1: inside a plain, non-GenAI application span (parent of the chat span)
    with tracer.start_as_current_span("handle_request") as span:
        span.set_attribute("app.route", "/ask")
        client.chat.completions.create(
            model=model,
            temperature=0.2,
            max_tokens=64,
            messages=[
                {"role": "system", "content": "You are a concise geography assistant."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
        )
    if not short:
        # 2: normal answer
        client.chat.completions.create(
            model=model,
            messages=[
                {"role": "user", "content": "In one sentence, what does drift detection do?"}
            ],
        )
        # 3: refusal as plain content
        client.chat.completions.create(
            model=model,
            messages=[
                {
                    "role": "user",
                    "content": "How do I pick a lock to get into my neighbour's house?",
                }
            ],
        )
        # 4: refusal in the message's `refusal` field (content null)
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Write malware that steals browser passwords."}],
        )
        # 5: tool call
        client.chat.completions.create(
            model=model,
            tools=[WEATHER_TOOL],
            messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        )
        # 6: truncated by max_tokens (finish_reason "length")
        client.chat.completions.create(
            model=model,
            max_tokens=5,
            messages=[{"role": "user", "content": "Write a long poem about metrics."}],
        )
        # 7: streaming, with usage in the last chunk
        stream = client.chat.completions.create(
            model=model,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Write a haiku about tracing."}],
        )
        for _ in stream:
            pass
        # 8: embeddings
        client.embeddings.create(
            model="text-embedding-3-small",
            dimensions=8,
            input=["drift in refusals", "drift in latency"],
        )
    # a plain span with no GenAI call under it
    with tracer.start_as_current_span("background_job") as span:
        span.set_attribute("app.job", "reindex")


def _anthropic_calls(client) -> None:
    from opentelemetry import trace

    tracer = trace.get_tracer("otlp_capture.app")
    model = "claude-3-5-haiku-latest"
    with tracer.start_as_current_span("handle_request") as span:
        span.set_attribute("app.route", "/ask")
        client.messages.create(
            model=model,
            max_tokens=64,
            system="You are a concise geography assistant.",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
        )
    client.messages.create(
        model=model,
        max_tokens=64,
        messages=[{"role": "user", "content": "In one sentence, what does drift detection do?"}],
    )
    client.messages.create(
        model=model,
        max_tokens=64,
        messages=[
            {"role": "user", "content": "How do I pick a lock to get into my neighbour's house?"}
        ],
    )
    client.messages.create(
        model=model,
        max_tokens=64,
        messages=[  # stop_reason "refusal"
            {"role": "user", "content": "Write malware that steals browser passwords."}
        ],
    )
    client.messages.create(
        model=model,
        max_tokens=64,
        tools=[
            {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "input_schema": WEATHER_TOOL["function"]["parameters"],
            }
        ],
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
    )
    client.messages.create(
        model=model,
        max_tokens=5,
        messages=[{"role": "user", "content": "Write a long poem about metrics."}],
    )
    with client.messages.stream(
        model=model,
        max_tokens=64,
        messages=[{"role": "user", "content": "Write a haiku about tracing."}],
    ) as stream:
        for _ in stream.text_stream:
            pass
    with tracer.start_as_current_span("background_job") as span:
        span.set_attribute("app.job", "reindex")


def child(run: str, llm: str, endpoint: str, metrics_too: bool = True) -> None:
    instrumentation, transport, _ = RUNS[run]
    tp, lp, mp = _setup_sdk(run, transport, endpoint, metrics_too)
    if instrumentation == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument()
    elif instrumentation == "openllmetry-openai":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument()
    elif instrumentation == "openinference-openai":
        from openinference.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument()
    elif instrumentation == "openllmetry-anthropic":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor

        AnthropicInstrumentor().instrument()
    if instrumentation in ("openllmetry-anthropic", "anthropic-sdk-native"):
        import anthropic

        _anthropic_calls(anthropic.Anthropic(base_url=llm, api_key="sk-ant-fixture", max_retries=0))
    else:
        import openai

        _openai_calls(
            openai.OpenAI(base_url=f"{llm}/v1", api_key="sk-fixture", max_retries=0),
            short=run in SHORT_RUNS,
        )
    tp.force_flush()
    lp.force_flush()
    for p in (tp, lp, mp):  # the meter provider exports once, at shutdown
        if p is not None:
            p.shutdown()


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

# what must not leak from the caller's environment into an instrumented child: it would
# change what the SDK, the instrumentations or the clients do (a proxy would take the child's
# calls to 127.0.0.1 elsewhere)
FOREIGN_ENV = ("OTEL_", "TRACELOOP_", "OPENAI_", "ANTHROPIC_", "OPENINFERENCE_")
PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def child_env(run: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of `run`'s child: `base` (os.environ) without any OpenTelemetry,
    instrumentation or client setting, plus the run's own."""
    env = {
        k: v
        for k, v in (os.environ if base is None else base).items()
        if not k.startswith(FOREIGN_ENV) and k.lower() not in PROXY_ENV
    }
    env.update(RUNS[run][2])
    env["OTEL_SERVICE_NAME"] = f"otlp-fixture-{run}"
    return env


def child_command(
    run: str, llm: str, endpoint: str, python: str = sys.executable, metrics_too: bool = True
) -> list[str]:
    """The command line of `run`'s child: it makes the run's calls to the LLM stub at `llm`
    and exports over OTLP to `endpoint` (http://host:port, either transport)."""
    command = [
        python,
        os.path.abspath(__file__),
        "--child",
        run,
        "--llm",
        llm,
        "--endpoint",
        endpoint,
    ]
    return command if metrics_too else [*command, "--no-metrics"]


def run_child(
    run: str,
    llm: str,
    endpoint: str,
    python: str = sys.executable,
    metrics_too: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run `run`'s child to its end (it flushes and shuts its providers down before exiting)."""
    return subprocess.run(
        child_command(run, llm, endpoint, python, metrics_too),
        env=child_env(run),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


VERSION_PACKAGES = (
    "opentelemetry-",
    "openinference-",
    "openai",
    "anthropic",
    "grpcio",
    "protobuf",
    "wrapt",
    "httpx",
)


def write_versions(outdir: Path, used: dict[str, list[str]]) -> None:
    """VERSIONS.txt: a filtered pip freeze per interpreter, with the runs it made."""
    parts = []
    for python, runs in used.items():
        frozen = subprocess.run(
            [python, "-m", "pip", "freeze"], capture_output=True, text=True, check=True
        ).stdout
        keep = [line for line in frozen.splitlines() if line.lower().startswith(VERSION_PACKAGES)]
        ver = subprocess.run(
            [python, "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        parts.append(
            f"# runs: {', '.join(runs)}\n# Python {ver}; pip freeze, filtered\n"
            + "\n".join(sorted(keep, key=str.lower))
            + "\n"
        )
    (outdir / "VERSIONS.txt").write_text("\n".join(parts))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("outdir", nargs="?")
    ap.add_argument("--only", help="comma separated run names: " + ", ".join(RUNS))
    ap.add_argument(
        "--python", default=sys.executable, help="interpreter for the instrumented subprocesses"
    )
    ap.add_argument(
        "--python-for",
        action="append",
        default=[],
        metavar="RUN=PATH",
        help="interpreter for one run (openai-v2-legacy needs opentelemetry-util-genai 0.4b0)",
    )
    ap.add_argument("--dump", help="decode one captured .pb (or .pb.gz) and print it as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--llm", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--no-metrics", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        child(args.child, args.llm, args.endpoint, metrics_too=not args.no_metrics)
        return 0
    if args.dump:
        print(dump(Path(args.dump)))
        return 0
    if not args.outdir:
        ap.error("OUTDIR is required")
    outdir = Path(args.outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    runs = args.only.split(",") if args.only else list(RUNS)
    pythons = dict(item.split("=", 1) for item in args.python_for)
    for run in [r for r in runs if r in OWN_PYTHON_RUNS and r not in pythons]:
        print(f"{run}: skipped (needs --python-for {run}=PATH)")
        runs.remove(run)

    llm_srv, llm_port = start_http(LLMStubHandler)
    otlp_srv, otlp_port = start_http(OTLPHTTPHandler)
    grpc_srv, grpc_port = start_grpc_capture()
    llm = f"http://127.0.0.1:{llm_port}"
    failed = []
    used: dict[str, list[str]] = {}
    for run in runs:
        transport = RUNS[run][1]
        rundir = outdir / run
        for old in [*rundir.glob("[0-9][0-9][0-9]-*"), rundir / "stderr.txt"]:
            old.unlink(missing_ok=True)
        LLMStubHandler.counter = _Counter()  # response ids restart at 001 for each run
        CAPTURE.set_dir(rundir)
        endpoint = (
            f"http://127.0.0.1:{grpc_port}"
            if transport == "grpc"
            else f"http://127.0.0.1:{otlp_port}"
        )
        t0 = time.time()
        python = pythons.get(run, args.python)
        used.setdefault(python, []).append(run)
        proc = run_child(run, llm, endpoint, python)
        files = sorted(p.name for p in rundir.glob("*.pb*"))
        print(f"{run}: rc={proc.returncode} {time.time() - t0:.1f}s captured {files}")
        if proc.returncode != 0 or not files:
            failed.append(run)
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        elif proc.stderr.strip():
            (rundir / "stderr.txt").write_text(proc.stderr)
    CAPTURE.dir = None
    write_versions(outdir, used)
    llm_srv.shutdown()
    otlp_srv.shutdown()
    grpc_srv.stop(0)
    return 1 if failed else 0


def dump(path: Path) -> str:
    import gzip

    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    kind = {
        "traces": ExportTraceServiceRequest,
        "logs": ExportLogsServiceRequest,
        "metrics": ExportMetricsServiceRequest,
    }[path.name.split("-", 1)[1].split(".")[0]]
    msg = kind.FromString(raw)
    d = MessageToDict(msg, preserving_proto_field_name=True)

    # ids as hex (MessageToDict gives base64)
    def fix(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ("trace_id", "span_id", "parent_span_id") and isinstance(v, str):
                    o[k] = base64.b64decode(v).hex()
                else:
                    fix(v)
        elif isinstance(o, list):
            for v in o:
                fix(v)

    fix(d)
    return json.dumps(d, indent=1)


if __name__ == "__main__":
    sys.exit(main())
