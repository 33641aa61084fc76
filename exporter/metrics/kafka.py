"""The Kafka input's own metrics: what this member of the consumer group holds and how far
behind it is. Read at scrape time from the input's state and librdkafka's cached watermarks
(no request to the brokers)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from exporter.inputs.kafka import KafkaInput


def kafka_families(kafka: KafkaInput) -> Iterable[Metric]:
    name = kafka.stats.name
    lag = GaugeMetricFamily(
        "llm_exporter_kafka_consumer_lag",
        "Records of each assigned partition not yet processed (high watermark of the last "
        "fetch minus the next offset to process).",
        labels=["input", "topic", "partition"])
    for topic, partition, behind in kafka.lag():
        lag.add_metric([name, topic, str(partition)], behind)
    yield lag
    assigned = GaugeMetricFamily(
        "llm_exporter_kafka_assigned_partitions",
        "Partitions this member of the consumer group owns (their streams are served here).",
        labels=["input"])
    assigned.add_metric([name], len(kafka.assigned))
    yield assigned
    connected = GaugeMetricFamily(
        "llm_exporter_kafka_connected",
        "1 while the Kafka input has no connection problem (see /-/ready for why not).",
        labels=["input"])
    connected.add_metric([name], 1.0 if kafka.started and kafka.problem is None else 0.0)
    yield connected
    for metric, help_text, value in (
        ("llm_exporter_kafka_rebalances", "Partition assignments, revocations and losses "
         "this member went through.", kafka.rebalances),
        ("llm_exporter_kafka_changelog_restores", "Streams restored from the changelog "
         "topic when their partition was assigned here.", kafka.handoff.restored_streams),
        ("llm_exporter_kafka_changelog_restore_failures", "Streams whose saved state in the "
         "changelog could not be used (corrupt, other detector settings): they re-learn.",
         kafka.handoff.restore_failures),
        ("llm_exporter_kafka_checkpoints", "Checkpoint transactions committed to the "
         "changelog topic (streams' state and input offsets together).",
         kafka.changelog.transactions),
        ("llm_exporter_kafka_checkpoint_failures", "Checkpoint transactions that failed "
         "(aborted; the next one saves every stream whole).", kafka.changelog.failures),
        ("llm_exporter_kafka_duplicates_skipped", "Records delivered again (after a crash or "
         "a rebalance) that their stream had already applied, so not applied twice.",
         kafka.pipeline.redelivered),
        ("llm_exporter_kafka_repartitioned_records", "Records forwarded, keyed by stream, to "
         "the internal topic (repartition: true; 0 without it).",
         kafka.repartitioner.forwarded if kafka.repartitioner is not None else 0),
    ):
        counter = CounterMetricFamily(metric, help_text, labels=["input"])
        counter.add_metric([name], value)
        yield counter
    for metric, help_text, value in (
        ("llm_exporter_kafka_last_assignment_seconds", "The last assignment, from its start "
         "(committed offsets fetched, streams restored from the changelog) to its first "
         "record processed.", kafka.last_assignment_seconds),
        ("llm_exporter_kafka_last_revocation_seconds", "The last revocation: its streams "
         "checkpointed to the changelog, then dropped here.", kafka.last_revocation_seconds),
    ):
        gauge = GaugeMetricFamily(metric, help_text, labels=["input"])
        gauge.add_metric([name], value)
        yield gauge
