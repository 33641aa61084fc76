"""Per-stream state: the pipeline that feeds records through signals into detectors, the stream
table, evidence, views and the saved state."""
