"""Drift detectors: one `Detector` interface, one module per method, calibrated thresholds."""

from exporter.detectors.base import HYSTERESIS, Detector, DetectorSettings
from exporter.detectors.factory import SIGNALS, DetectorFactory

__all__ = ["HYSTERESIS", "SIGNALS", "Detector", "DetectorFactory", "DetectorSettings"]
