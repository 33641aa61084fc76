"""Multi-core: streams sharded over worker processes by a stable hash of the stream key.

With `workers: N` (N > 1) the exporter process becomes a supervisor: it tails files,
takes pushes, serves HTTP and writes checkpoints, and for each record does only the
cheap half (decode, normalize, stream key, stream cap; `Pipeline.route_value`). Each
worker process owns the detectors, signal totals and evidence of the streams whose key
hashes to it and does the expensive half (signals, detectors; `Pipeline.ingest_routed`).
A stream always lands on the same worker, so its records stay in order and its state in
one place; scrapes, the streams API, baseline resets and checkpoints ask every worker.

Why processes and pipes rather than threads: the work is pure Python and numpy on small
arrays, which holds the GIL. Why the supervisor normalizes: the stream key needs the
normalized record, and the stream cap must be applied in one place.
"""
