"""Config validation (schema in config_schema.py) and the typed view the rest of the code reads.

Validation collects every error (not just the first) as `path.to.key: message`
so a user fixes a config in one round; unknown keys are errors because a typo
such as `max_stream` must never silently fall back to a default.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from exporter.config_schema import SCHEMA
from exporter.detectors import factory
from exporter.detectors.baseline_modes import BaselineMode
from exporter.detectors.registry import METHODS_BY_SIGNAL, SIGNALS, DetectorsConfig
from exporter.metrics.catalog import RESERVED_LABELS  # label names a stream label may not take
from exporter.signals.format import load_schema_validator
from exporter.signals.registry import SignalSettings

# `model` is the model the application asked for (labels.py explains the fallbacks), so
# that a provider's silent version change stays inside one stream.
DEFAULT_STREAM_LABELS = {"model": "request.model|response.model", "route": "route"}
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

@dataclass(frozen=True)
class FileInputConfig:
    name: str
    paths: tuple[str, ...]
    start_at: str = "end"
    format: str | None = None
    poll_interval: float = 0.25
    max_line_bytes: int = 1024 * 1024


@dataclass(frozen=True)
class HttpInputConfig:
    name: str
    bearer_token_file: str | None = None
    format: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    max_decompressed_bytes: int = 64 * 1024 * 1024
    max_pending_requests: int = 32


@dataclass(frozen=True)
class OtlpInputConfig:
    """OTLP/HTTP on the main listener (inputs/otlp.py): `POST /v1/traces`, `POST /v1/logs`.
    The body limits and bearer token work as the push input's."""

    name: str
    bearer_token_file: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    max_decompressed_bytes: int = 64 * 1024 * 1024
    max_pending_requests: int = 32
    join_wait: float = 5.0  # seconds a span waits for the log records carrying its text
    join_capacity: int = 10_000  # spans and log records waiting at most (oldest go first)
    grpc_address: str | None = ":4317"  # OTLP/gRPC, for collectors (None: not served)


@dataclass(frozen=True)
class KafkaInputConfig:
    """A member of a Kafka consumer group (inputs/kafka.py): it owns the streams of the
    partitions it is assigned; their state goes to `changelog_topic`."""

    name: str
    bootstrap_servers: str
    topics: tuple[str, ...]
    group_id: str = "llm-drift-exporter"
    format: str | None = None
    changelog_topic: str | None = None  # default: "<group_id>-changelog"
    client_id: str | None = None
    # group.instance.id (static membership); default: $LLM_DRIFT_EXPORTER_INSTANCE_ID
    instance_id: str | None = None
    start_at: str = "beginning"  # where a partition without a committed offset starts
    max_message_bytes: int = 1024 * 1024  # larger records are rejected as too_large
    session_timeout: float = 10.0  # seconds before a silent member's partitions move
    repartition: bool = False  # topics not keyed by stream: keyed into an internal topic first
    properties: dict[str, Any] = field(default_factory=dict)  # librdkafka, passed through

    @property
    def changelog(self) -> str:
        return self.changelog_topic or f"{self.group_id}-changelog"

    @property
    def repartition_topic(self) -> str:
        return f"{self.group_id}-repartition"


InputConfig = FileInputConfig | HttpInputConfig | OtlpInputConfig | KafkaInputConfig


@dataclass(frozen=True)
class EvidenceConfig:
    """The `evidence` section: example outputs kept per stream (streams/evidence.py)."""

    enabled: bool = True
    texts: int = 40
    examples: int = 3
    max_chars: int = 240


@dataclass(frozen=True)
class Config:
    inputs: tuple[InputConfig, ...] = ()
    format: str = "auto"
    stream_labels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_STREAM_LABELS))
    max_streams: int = 1000
    state_dir: str | None = None
    checkpoint_interval: float = 1.0
    signals: SignalSettings = field(default_factory=SignalSettings)
    detectors: DetectorsConfig = field(default_factory=DetectorsConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)

    @property
    def http_inputs(self) -> tuple[HttpInputConfig, ...]:
        return tuple(i for i in self.inputs if isinstance(i, HttpInputConfig))

    @property
    def file_inputs(self) -> tuple[FileInputConfig, ...]:
        return tuple(i for i in self.inputs if isinstance(i, FileInputConfig))

    @property
    def otlp_input(self) -> OtlpInputConfig | None:
        return next((i for i in self.inputs if isinstance(i, OtlpInputConfig)), None)

    @property
    def kafka_input(self) -> KafkaInputConfig | None:
        return next((i for i in self.inputs if isinstance(i, KafkaInputConfig)), None)


class ConfigError(Exception):
    """Every problem found in a config, each as `path.to.key: message`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def _dotted(path: Any) -> str:
    return ".".join(str(part) for part in path)


# YAML `40.0` is a float; jsonschema would call it an integer, and it would then break
# a deque(maxlen=...) or range() at run time. Integers here are Python ints.
_StrictValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


def _schema_errors(raw: Any) -> list[str]:
    validator = _StrictValidator(SCHEMA)
    errors: list[str] = []
    for error in sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path))):
        where = _dotted(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - allowed):
                known = ", ".join(sorted(allowed))
                errors.append(f"{_join(where, key)}: unknown key (known keys: {known})")
        elif error.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            for key in missing:
                errors.append(f"{_join(where, key)}: required key is missing")
        elif error.validator == "enum":
            choices = " | ".join(str(v) for v in error.validator_value)
            errors.append(
                f"{where or '(top level)'}: must be one of {choices}, got {error.instance!r}"
            )
        else:
            errors.append(f"{where or '(top level)'}: {error.message}")
    return errors


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _semantic_errors(raw: dict[str, Any], require_inputs: bool) -> list[str]:
    errors: list[str] = []
    if require_inputs and not raw.get("inputs"):
        errors.append("inputs: at least one input is required to run")
    labels = raw.get("stream_labels")
    for name in labels if isinstance(labels, dict) else ():
        if not _LABEL_NAME.match(str(name)) or str(name).startswith("__"):
            errors.append(f"stream_labels.{name}: not a valid Prometheus label name")
        elif name in RESERVED_LABELS:
            errors.append(f"stream_labels.{name}: reserved, the exporter uses this label itself")
    inputs = raw.get("inputs") or ()
    http = [
        i for i, spec in enumerate(inputs) if isinstance(spec, dict) and spec.get("type") == "http"
    ]
    for index in http[1:]:
        errors.append(
            f"inputs.{index}: only one http input is allowed (it serves POST /v1/records)"
        )
    otlp = [
        i for i, spec in enumerate(inputs) if isinstance(spec, dict) and spec.get("type") == "otlp"
    ]
    for index in otlp[1:]:
        errors.append(f"inputs.{index}: only one otlp input is allowed (it serves POST "
                      f"/v1/traces and /v1/logs)")
    errors.extend(_ownership_errors(raw, inputs))
    names: set[str] = set()
    for index, spec in enumerate(raw.get("inputs") or ()):
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            if spec["name"] in names:
                errors.append(f"inputs.{index}.name: duplicate input name {spec['name']!r}")
            names.add(spec["name"])
    refusal = (raw.get("signals") or {}).get("refusal") or {}
    for key in ("extra_patterns", "exclude_patterns"):
        for index, pattern in enumerate(refusal.get(key) or ()):
            errors.extend(_regex_error(f"signals.refusal.{key}.{index}", pattern))
    label_names = set(labels) if isinstance(labels, dict) else set(DEFAULT_STREAM_LABELS)
    for index, rule in enumerate((raw.get("signals") or {}).get("format_validity") or ()):
        if not isinstance(rule, dict):
            continue
        where = f"signals.format_validity.{index}"
        for key in ("match", "match_re"):
            for label in rule.get(key) or {}:
                if label not in label_names:
                    errors.append(f"{where}.{key}.{label}: not a stream label "
                                  f"(stream labels: {', '.join(sorted(label_names))})")
        if rule.get("expect") == "regex":
            if not rule.get("pattern"):
                errors.append(f"{where}.pattern: required when expect is regex")
            else:
                errors.extend(_regex_error(f"{where}.pattern", rule["pattern"]))
        for label, pattern in (rule.get("match_re") or {}).items():
            errors.extend(_regex_error(f"{where}.match_re.{label}", pattern))
        if rule.get("expect") == "json_schema":
            if not rule.get("schema_file"):
                errors.append(f"{where}.schema_file: required when expect is json_schema")
            else:
                errors.extend(_schema_file_error(f"{where}.schema_file", rule["schema_file"]))
    errors.extend(_detector_errors(raw.get("detectors") or {}))
    return errors


def _detector_errors(section: dict[str, Any]) -> list[str]:
    errors = []
    for signal in SIGNALS:
        method = (section.get(signal) or {}).get("method")
        if method is not None and method not in METHODS_BY_SIGNAL[signal]:
            allowed = " | ".join(METHODS_BY_SIGNAL[signal])
            errors.append(f"detectors.{signal}.method: must be one of {allowed}, got {method!r}")
    if errors:
        return errors
    for signal in SIGNALS:
        for name, value in (section.get(signal) or {}).items():
            if isinstance(value, float) and not math.isfinite(value):
                errors.append(f"detectors.{signal}.{name}: must be a finite number")
    if errors:
        return errors
    errors = _baseline_errors(section)
    if errors:
        return errors
    detectors = DetectorsConfig.from_section(section)
    for signal in SIGNALS:
        try:
            factory.check(detectors, signal)
        except (TypeError, ValueError) as exc:
            errors.append(f"detectors.{signal}: invalid parameters: {exc}")
    return errors


def _baseline_errors(section: dict[str, Any]) -> list[str]:
    """`detectors.baseline` and each signal's own `baseline`, with the reason each fails."""
    try:
        everywhere = BaselineMode.from_section(section.get("baseline"))
    except ValueError as exc:
        return [f"detectors.baseline: {exc}"]
    errors = []
    for signal in SIGNALS:
        try:
            BaselineMode.from_section((section.get(signal) or {}).get("baseline"), everywhere)
        except ValueError as exc:
            errors.append(f"detectors.{signal}.baseline: {exc}")
    return errors


def _ownership_errors(raw: dict[str, Any], inputs: Any) -> list[str]:
    """One ownership model: a process owns all the streams of its file and HTTP inputs, or
    those of the Kafka partitions it is assigned; never both, and never a pool of its own."""
    errors = []
    if "workers" in raw:
        errors.append("workers: removed; to use more cores or machines, run more exporter "
                      "processes as members of one Kafka consumer group (an input of type "
                      "kafka; docs/scaling.md)")
    kinds = [(i, s.get("type")) for i, s in enumerate(inputs) if isinstance(s, dict)]
    kafka = [i for i, kind in kinds if kind == "kafka"]
    for index in kafka[1:]:
        errors.append(f"inputs.{index}: only one kafka input is allowed (a process is one "
                      f"member of one consumer group; list several topics in it)")
    if kafka and len(kafka) < len(kinds):
        errors.append(f"inputs.{kafka[0]}: a kafka input cannot be combined with file, "
                      f"http or otlp inputs: its process owns only the streams of its "
                      f"partitions")
    if kafka and raw.get("state_dir"):
        errors.append("state_dir: not used with a kafka input (its streams' state is kept "
                      "in the changelog topic); remove it")
    return errors


def _schema_file_error(where: str, path: str) -> list[str]:
    try:
        load_schema_validator(path)
    except (OSError, ValueError, yaml.YAMLError, jsonschema.SchemaError) as exc:
        return [f"{where}: cannot use {path}: {exc}".splitlines()[0]]
    return []


def _regex_error(where: str, pattern: Any) -> list[str]:
    if not isinstance(pattern, str):
        return []
    try:
        re.compile(pattern)
    except re.error as exc:
        return [f"{where}: invalid regular expression: {exc}"]
    return []


def _build(raw: dict[str, Any]) -> Config:
    inputs: list[InputConfig] = []
    counts: dict[str, int] = {}
    for spec in raw.get("inputs") or ():
        kind = spec["type"]
        counts[kind] = counts.get(kind, 0) + 1
        name = spec.get("name") or (kind if counts[kind] == 1 else f"{kind}-{counts[kind]}")
        options = {k: v for k, v in spec.items() if k not in ("type", "name")}
        if kind == "file":
            options["paths"] = tuple(options["paths"])
            inputs.append(FileInputConfig(name=name, **options))
        elif kind == "kafka":
            options["topics"] = tuple(options["topics"])
            options["properties"] = {k: str(v) if not isinstance(v, bool) else str(v).lower()
                                     for k, v in (options.get("properties") or {}).items()}
            inputs.append(KafkaInputConfig(name=name, **options))
        elif kind == "otlp":
            inputs.append(OtlpInputConfig(name=name, **options))
        else:
            inputs.append(HttpInputConfig(name=name, **options))
    return Config(
        inputs=tuple(inputs),
        format=raw.get("format", "auto"),
        stream_labels=dict(raw.get("stream_labels") or DEFAULT_STREAM_LABELS),
        max_streams=raw.get("max_streams", 1000),
        state_dir=raw.get("state_dir"),
        checkpoint_interval=raw.get("checkpoint_interval", 1.0),
        signals=SignalSettings.from_config(raw.get("signals") or {}),
        detectors=DetectorsConfig.from_section(raw.get("detectors") or {}),
        evidence=EvidenceConfig(**(raw.get("evidence") or {})),
    )


def parse_config(raw: Any, require_inputs: bool = False) -> Config:
    """Validate a decoded config document; raises ConfigError listing every problem."""
    if raw is None:
        raw = {}
    errors = _schema_errors(raw)
    if isinstance(raw, dict):
        # A wrongly typed section breaks the semantic checks; the schema errors name it.
        with contextlib.suppress(AttributeError, TypeError):
            errors += _semantic_errors(raw, require_inputs)
    if errors:
        raise ConfigError(errors)
    return _build(raw)


def load_config(path: str | Path, require_inputs: bool = False) -> Config:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read config: {exc}"]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    return parse_config(raw, require_inputs=require_inputs)
