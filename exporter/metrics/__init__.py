"""Prometheus exposition: the collector, the per-stream metric families (declared once) and the
fast text writer."""
