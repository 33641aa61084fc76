from __future__ import annotations

import pytest

from exporter.config import (
    DEFAULT_STREAM_LABELS,
    ConfigError,
    FileInputConfig,
    HttpInputConfig,
    load_config,
    parse_config,
)


def errors_of(raw: object, require_inputs: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, require_inputs=require_inputs)
    return caught.value.errors


def test_design_example_is_valid(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        """
inputs:
  - type: file
    paths: ["/var/log/llm/*.jsonl"]
    start_at: end
  - type: http
    bearer_token_file: /etc/llm-drift/token
format: auto
stream_labels: {model: "request.model|response.model", route: "route"}
max_streams: 1000
state_dir: /var/lib/llm-drift-exporter
signals:
  refusal: {extra_patterns: []}
  format_validity:
    - match: {route: "/extract"}
      expect: json
      schema_file: null
  embedding: {enabled: true}
detectors:
  expected_run_time: 100000
  baseline_size: 1000
  window_size: 200
"""
    )
    config = load_config(path, require_inputs=True)
    assert config.inputs == (
        FileInputConfig(name="file", paths=("/var/log/llm/*.jsonl",), start_at="end"),
        HttpInputConfig(name="http", bearer_token_file="/etc/llm-drift/token"),
    )
    assert config.stream_labels == {"model": "request.model|response.model", "route": "route"}
    assert config.max_streams == 1000


def test_empty_document_gives_defaults():
    config = parse_config(None)
    assert config.inputs == ()
    assert config.format == "auto"
    assert config.stream_labels == DEFAULT_STREAM_LABELS


def test_unknown_keys_are_errors_at_every_level():
    errors = errors_of(
        {
            "max_stream": 5,
            "inputs": [{"type": "file", "paths": ["a"], "start": "end"}],
            "detectors": {"expected_runtime": 10},
            "signals": {"refusals": {}},
        }
    )
    assert any(e.startswith("max_stream: unknown key") for e in errors)
    assert any(e.startswith("inputs.0.start: unknown key") for e in errors)
    assert any(e.startswith("detectors.expected_runtime: unknown key") for e in errors)
    assert any(e.startswith("signals.refusals: unknown key") for e in errors)
    assert len(errors) == 4


def test_every_error_is_reported_with_its_path():
    errors = errors_of(
        {
            "inputs": [{"type": "file"}, {"type": "syslog"}, {"type": "http", "max_body_bytes": 0}],
            "format": "openai",
            "max_streams": "many",
            "stream_labels": {"signal": "x", "9bad": "y", "__meta": "z"},
        }
    )
    assert "inputs.0.paths: required key is missing" in errors
    assert any(e.startswith("inputs.1.type: must be one of file | http | otlp | kafka")
               for e in errors)
    assert "inputs.2.max_body_bytes: 0 is less than the minimum of 1" in errors
    assert any(e.startswith("format: must be one of auto |") for e in errors)
    assert "max_streams: 'many' is not of type 'integer'" in errors
    assert "stream_labels.signal: reserved, the exporter uses this label itself" in errors
    assert "stream_labels.9bad: not a valid Prometheus label name" in errors
    assert "stream_labels.__meta: not a valid Prometheus label name" in errors


def test_run_requires_inputs():
    assert errors_of({}, require_inputs=True) == ["inputs: at least one input is required to run"]


def test_regexes_are_compiled_at_validation():
    errors = errors_of(
        {
            "signals": {
                "refusal": {"extra_patterns": ["ok", "(unclosed"]},
                "format_validity": [{"expect": "regex", "pattern": "[a-"}, {"expect": "regex"}],
            }
        }
    )
    assert errors[0].startswith("signals.refusal.extra_patterns.1: invalid regular expression")
    assert errors[1].startswith("signals.format_validity.0.pattern: invalid regular expression")
    assert errors[2] == "signals.format_validity.1.pattern: required when expect is regex"


def test_duplicate_names_and_second_http_input_rejected():
    errors = errors_of(
        {
            "inputs": [
                {"type": "file", "name": "a", "paths": ["x"]},
                {"type": "file", "name": "a", "paths": ["y"]},
                {"type": "http"},
                {"type": "http"},
            ]
        }
    )
    assert "inputs.1.name: duplicate input name 'a'" in errors
    assert any(e.startswith("inputs.3: only one http input") for e in errors)


def test_default_input_names_are_unique():
    config = parse_config(
        {"inputs": [{"type": "file", "paths": ["a"]}, {"type": "file", "paths": ["b"]}]}
    )
    assert [i.name for i in config.inputs] == ["file", "file-2"]


def test_wrong_top_level_type():
    assert errors_of([1, 2]) == ["(top level): [1, 2] is not of type 'object'"]


def test_yaml_syntax_error_is_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("inputs: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "not valid YAML" in caught.value.errors[0]


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert "cannot read config" in caught.value.errors[0]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"evidence": {"texts": 40.0}}, "evidence.texts: 40.0 is not of type 'integer'"),
        ({"detectors": {"output_tokens": {"allowance": float("nan")}}},
         "detectors.output_tokens.allowance: must be a finite number"),
        ({"detectors": {"refusal": {"ratio": float("inf")}}},
         "detectors.refusal.ratio: must be a finite number"),
        ({"detectors": {"output_tokens": {"allowance": "0.2"}}},
         "detectors.output_tokens: invalid parameters: allowance must be a number"),
        ({"detectors": {"embedding": {"treshold": 3}}}, "detectors.embedding: invalid parameters"),
        ({"detectors": {"refusal": {"method": "kswin2"}}}, "detectors.refusal.method: must be one"),
        ({"signals": {"format_validity": [{"match": {"rout": "/x"}, "expect": "json"}]}},
         "signals.format_validity.0.match.rout: not a stream label"),
        ({"stream_labels": {"model": "m", "source": "app"}}, "stream_labels.source: reserved"),
    ],
)
def test_values_that_would_break_at_run_time_are_rejected(raw, message):
    assert any(error.startswith(message) for error in errors_of(raw)), errors_of(raw)


def test_workers_is_an_error_that_says_how_to_scale():
    errors = errors_of({"inputs": [{"type": "http"}], "workers": 2})
    assert any(e.startswith("workers: removed;") and "Kafka consumer group" in e for e in errors)


def test_a_kafka_input_owns_its_streams_alone():
    kafka = {"type": "kafka", "bootstrap_servers": "k:9092", "topics": ["llm"]}
    assert parse_config({"inputs": [kafka]}).kafka_input is not None
    errors = errors_of({"inputs": [kafka, {"type": "http"}, dict(kafka, name="k2")],
                        "state_dir": "/var/lib/x"})
    assert any(e.startswith("inputs.0: a kafka input cannot be combined") for e in errors)
    assert any(e.startswith("inputs.2: only one kafka input") for e in errors)
    assert any(e.startswith("state_dir: not used with a kafka input") for e in errors)
    assert any(e.startswith("inputs.0.topics.0:") for e in errors_of(
        {"inputs": [dict(kafka, topics=["not a topic"])]}))


def test_kafka_properties_are_passed_to_librdkafka_as_text():
    config = parse_config({"inputs": [{
        "type": "kafka", "bootstrap_servers": "k:9092", "topics": ["llm"],
        "properties": {"security.protocol": "SASL_SSL", "fetch.wait.max.ms": 50,
                       "enable.ssl.certificate.verification": False}}]})
    assert config.kafka_input is not None
    assert config.kafka_input.properties == {"security.protocol": "SASL_SSL",
                                             "fetch.wait.max.ms": "50",
                                             "enable.ssl.certificate.verification": "false"}
    assert config.kafka_input.changelog == "llm-drift-exporter-changelog"
