"""The OTLP receiver's own metrics: what arrived, by kind, and how the join of spans with
the log records carrying their text went. Read at scrape time from the receiver."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.inputs.otlp import SIGNALS, OtlpReceiver
from exporter.inputs.otlp_decode import Kind


def otlp_families(otlp: OtlpReceiver) -> Iterable[Metric]:
    name = otlp.stats.name
    items = CounterMetricFamily(
        "llm_exporter_otlp_items",
        "Spans (signal traces) and log records (signal logs) received, by kind: chat (an LLM "
        "call: one record), embeddings, genai_other (agent and tool steps), other (not "
        "GenAI), choice and details (log records holding a span's text). Only chat makes "
        "records; the rest are counted and skipped.",
        labels=["input", "signal", "kind"])
    for signal in SIGNALS:
        for kind in Kind:
            items.add_metric([name, signal, str(kind)], otlp.received[(signal, str(kind))])
    yield items
    joins = CounterMetricFamily(
        "llm_exporter_otlp_join",
        "Spans waiting for the log records that carry their text, by outcome: joined; "
        "expired or evicted (recorded without text); duplicates (dropped); and log records "
        "whose span never came (events_expired, events_evicted), came with text already "
        "(events_dropped) or has no span id (unjoinable).",
        labels=["input", "outcome"])
    for field in fields(otlp.join.stats):
        joins.add_metric([name, field.name], getattr(otlp.join.stats, field.name))
    yield joins
    waiting = GaugeMetricFamily(
        "llm_exporter_otlp_join_waiting",
        "Spans and log records waiting for their partner now (at most join_capacity).",
        labels=["input"])
    waiting.add_metric([name], len(otlp.join))
    yield waiting
    invalid = CounterMetricFamily(
        "llm_exporter_otlp_invalid_bodies",
        "Export requests whose body could not be decoded (answered 400 or 415).",
        labels=["input"])
    invalid.add_metric([name], otlp.invalid_bodies)
    yield invalid
