"""llm-drift-exporter: calibrated drift detection for LLM request/response streams."""

__version__ = "0.1.0"
