"""What the per-stream family declarations drive besides the text writer: docs/metrics.md
(generated, so it must be current), the stream label names config validation refuses,
and a catalog that config validation can import without the heavy libraries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, parse_config
from exporter.metrics import reference
from exporter.metrics.catalog import FAMILIES

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("numpy", "river", "scipy", "jsonschema", "aiohttp")


def test_docs_metrics_is_current() -> None:
    assert (ROOT / "docs" / "metrics.md").read_text() == reference.render(), (
        "docs/metrics.md is stale: python -m exporter.metrics.reference > docs/metrics.md"
    )


def test_the_reference_lists_every_family() -> None:
    text = reference.render()
    for family in FAMILIES:
        assert f"`{family.name}" in text, family.name
    for metric in reference.collector_families():
        assert f"`{metric.name}" in text, metric.name


@pytest.mark.parametrize("name", sorted({"le", *(n for f in FAMILIES for n in f.labels)}))
def test_a_stream_label_may_not_take_a_family_label(name: str) -> None:
    with pytest.raises(ConfigError, match=f"stream_labels.{name}: reserved"):
        parse_config({"inputs": [{"type": "http"}], "stream_labels": {name: "route"}})


def test_the_catalog_imports_nothing_heavy() -> None:
    code = ("import sys, exporter.metrics.catalog; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert run.stdout.strip() == "[]"
