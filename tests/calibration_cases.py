"""One stream whose detectors calibrate while records keep coming, shared by the tests of
calibrating on a thread (`test_calibration_thread.py`) and of its edges with sharding and
checkpoints (`test_sharding_calibration_edges.py`)."""

from __future__ import annotations

from tests import samples

SETTINGS = {
    "detectors": {"baseline_size": 100, "window_size": 20, "expected_run_time": 5000},
    "signals": {"format_validity": [{"match": {"route": "/chat"}, "expect": "json"}]},
}


def records() -> list[dict]:
    """One stream: JSON replies, then prose (a validity drift), then refusals."""
    fine = [samples.chat(text='{"answer": "Your invoice is attached."}') for _ in range(180)]
    prose = [samples.chat(text="Sure! Here is the answer you asked for, in words.")
             for _ in range(60)]
    refusals = [samples.chat(text="I'm sorry, but I can't help with that request.")
                for _ in range(80)]
    return fine + prose + refusals
