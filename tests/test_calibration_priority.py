"""The running exporter simulates thresholds on a thread of lower CPU priority than the loop
that ingests and answers scrapes (exporter/service.py)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from exporter.config import parse_config
from exporter.service import CALIBRATION_NICENESS, Exporter


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="Linux sets a nice value per thread")
def test_calibration_thread_runs_below_the_loop() -> None:
    exporter = Exporter(parse_config({"inputs": [{"type": "http"}]}))
    assert exporter.calibration is not None
    try:
        calibrating = exporter.calibration.submit(_niceness).result(timeout=10)
    finally:
        exporter.calibration.shutdown(wait=True)
    assert calibrating == min(19, _niceness() + CALIBRATION_NICENESS)
    assert _niceness() < calibrating  # the loop's thread keeps its own
