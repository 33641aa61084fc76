"""Exporter processes as members of a Kafka consumer group, for the end-to-end tests and the
scaling benchmark: start them, read what each owns, wait until the group has caught up."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.process import ExporterProcess

SESSION_TIMEOUT = 6  # seconds: the broker's minimum, so a killed member's partitions move soon
# what may differ between two runs of the same records: arrival times, and the examples
# evidence keeps (sampled as records arrive; not handed over with a stream)
UNSTABLE = {"last_record_time", "examples", "moved_features"}
TIMED_FAMILIES = ("llm_last_record_timestamp_seconds",)


def member_config(workdir: Path, bootstrap: str, topic: str, group: str,
                  extra: str = "") -> Path:
    path = workdir / f"{group}.yaml"
    path.write_text(
        "inputs:\n"
        "  - type: kafka\n"
        f"    bootstrap_servers: '{bootstrap}'\n"
        f"    topics: [{topic}]\n"
        f"    group_id: {group}\n"
        f"    session_timeout: {SESSION_TIMEOUT}\n"
        f"{extra}"
    )
    return path


def start_member(config: Path, workdir: Path, name: str) -> ExporterProcess:
    member = ExporterProcess(["run", "--config", str(config)], workdir / f"{name}.log")
    member.wait_ready(timeout=60)
    return member


def get_json(member: ExporterProcess, path: str) -> Any:
    with urllib.request.urlopen(member.url(path), timeout=30) as response:
        return json.loads(response.read())


def progress(member: ExporterProcess) -> dict[str, float]:
    """Records counted, partitions owned and records behind, from its /metrics."""
    samples = member.samples()
    return {
        "records": sum(v for (n, _), v in samples.items() if n == "llm_records_total"),
        "partitions": sum(v for (n, _), v in samples.items()
                          if n == "llm_exporter_kafka_assigned_partitions"),
        "lag": sum(v for (n, _), v in samples.items()
                   if n == "llm_exporter_kafka_consumer_lag"),
    }


def wait_caught_up(members: list[ExporterProcess], records: int, partitions: int,
                   timeout: float = 600.0) -> None:
    """Until the members together own every partition, with nothing behind, and have
    counted every record."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, float]] = []
    while time.monotonic() < deadline:
        seen = [progress(m) for m in members]
        if (sum(s["records"] for s in seen) == records
                and sum(s["partitions"] for s in seen) == partitions
                and all(s["lag"] == 0 for s in seen)):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the group did not catch up: {seen}")


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in UNSTABLE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def streams_of(members: list[ExporterProcess]) -> dict[tuple[str, ...], dict[str, Any]]:
    """Every stream's view (`/api/v1/streams`) from whichever member owns it; a stream
    served by two members is an error."""
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for member in members:
        for view in get_json(member, "/api/v1/streams")["streams"]:
            key = tuple(sorted(view["labels"].items()))
            assert key not in found, f"stream {key} is served by two members"
            found[key] = _stable(view)
    return found


def stream_series(members: list[ExporterProcess], label_names: tuple[str, ...]
                  ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every per-stream sample of the members' /metrics (those carrying the stream labels),
    but the arrival-time ones."""
    series: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for member in members:
        for (name, labels), value in member.samples().items():
            names = {label for label, _ in labels}
            if set(label_names) <= names and not name.startswith(TIMED_FAMILIES):
                assert (name, labels) not in series, f"{name}{labels} on two members"
                series[(name, labels)] = value
    return series


def differences(got: Any, expected: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, as `path: got != expected` lines."""
    if isinstance(got, dict) and isinstance(expected, dict):
        return [line for key in sorted(set(got) | set(expected), key=str)
                for line in differences(got.get(key), expected.get(key), f"{path}.{key}")]
    if isinstance(got, list) and isinstance(expected, list) and len(got) == len(expected):
        return [line for i, (g, e) in enumerate(zip(got, expected, strict=True))
                for line in differences(g, e, f"{path}[{i}]")]
    return [] if got == expected else [f"{path}: {got!r} != {expected!r}"]
