"""Test-suite configuration: hypothesis profiles and the `e2e`/`slow` marks of the fast loop.

`scripts/test` (what CI runs) runs every test with the full hypothesis counts;
`scripts/test-fast` leaves out the tests marked `e2e` or `slow` and runs the rest with fewer
hypothesis examples over the machine's cores, in under two minutes. The marks (registered in
pyproject.toml, where `--strict-markers` rejects any other):

- `e2e`: a real Prometheus or Alertmanager, the real exporter process end to end, or a
  `pip install` into a fresh venv.
- `slow`: many seconds each for what it adds to the fast loop: the 100,000-record torture runs,
  big hypothesis runs, long real-process runs.

Test modules mark themselves with `pytestmark` or a decorator. `MARKS` below marks tests of
modules that do not carry their own marks; a name that no longer exists in its module fails any
run that collects the module, so the table cannot silently go stale.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

pytest_plugins = ["tests.kafka_broker"]  # the `kafka_broker` fixture: a real broker

# Hypothesis profiles. `ci` is hypothesis' defaults. `dev` runs 20 examples where a test does
# not ask for a count of its own (a test's `@settings(max_examples=...)` stands in both: the
# big ones are marked `slow` instead), and has no per-example deadline: the fast loop shares
# the cores with its own xdist workers, and a deadline missed under load then met on replay
# is reported as a flaky test. HYPOTHESIS_PROFILE picks one; unset means `ci`, so a plain
# `pytest` run tests as much as CI does.
DEV_MAX_EXAMPLES = 20
settings.register_profile("ci", settings())
settings.register_profile("dev", settings(max_examples=DEV_MAX_EXAMPLES, deadline=None))
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)

# Marks of tests in modules that carry none of their own, with the seconds each took in the
# measurement that put it here (a loaded 2-core machine). Key: "module.py::test_name" (every
# parametrization of it) or "module.py" (every test in it).
MARKS: dict[str, str] = {
    "test_cli.py::test_demo_serves_live_metrics_within_seconds": "e2e",  # 3 s
    # many seconds each
    "test_demo_drifts.py::test_each_scheduled_drift_is_detected_after_its_time": "slow",  # 12 s
    "test_exposition.py::test_merge_of_sources_with_disjoint_streams": "slow",  # 2 x 8 s
    "test_records_detect.py::test_arbitrary_objects_only_ever_raise_rejected_record": "slow",  # 5 s
}


def _marks_for(item: pytest.Item) -> list[str]:
    module = item.path.name
    return [
        mark
        for key, mark in MARKS.items()
        if key == module or key == f"{module}::{getattr(item, 'originalname', item.name)}"
    ]


def _check_names(items: list[pytest.Item]) -> None:
    """Every `module::test` key of MARKS names a test of that module, when the module runs."""
    modules = {item.path.name: item.module for item in items if isinstance(item, pytest.Function)}
    for key in MARKS:
        module_name, _, test_name = key.partition("::")
        module = modules.get(module_name)
        if test_name and module is not None and not hasattr(module, test_name):
            raise pytest.UsageError(f"tests/conftest.py MARKS: {key} no longer exists")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    _check_names(items)
    for item in items:
        for mark in _marks_for(item):
            item.add_marker(getattr(pytest.mark, mark))
