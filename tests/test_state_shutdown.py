"""A shutdown never drops a checkpoint already made: the checkpointer counts it as saved
the moment it is made, so its commit must happen even when the loop that made it is
cancelled, or the last checkpoint saves new positions without the records they cover."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson

from exporter.config import parse_config
from exporter.service import Exporter
from exporter.streams.store import SqliteBackend
from tests.state_helpers import saved_entries
from tests.torture import record


async def _until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_checkpoint_made_but_not_committed_is_committed_at_shutdown(
        tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    live = tmp_path / "logs" / "app.jsonl"
    config = parse_config({
        "inputs": [{"type": "file", "paths": [str(live)], "start_at": "beginning",
                    "poll_interval": 0.02}],
        "state_dir": str(tmp_path / "state"),
        "detectors": {"baseline_size": 50, "window_size": 20},
    })
    exporter = Exporter(config)
    await exporter.start()
    try:
        live.write_bytes(b"".join(record(n) for n in range(200)))
        await _until(lambda: exporter.pipeline.streams
                     and next(iter(exporter.pipeline.streams)).records == 200)
        made = exporter._changes

        async def slowly():  # made, then committed later (as while workers answer)
            changes = await made()
            await asyncio.sleep(0.5)
            return changes

        exporter._changes = slowly  # type: ignore[method-assign]
        with open(live, "ab") as handle:
            handle.write(b"".join(record(n) for n in range(200, 300)))
        await _until(lambda: next(iter(exporter.pipeline.streams)).records == 300)
        await asyncio.sleep(0.3)  # a periodic checkpoint of them is made, not yet committed
    finally:
        await exporter.stop()
    (entry,) = saved_entries(tmp_path / "state")
    assert entry["detectors"]["records"] == 300
    backend = SqliteBackend(tmp_path / "state", read_only=True)
    positions = backend.load().positions
    backend.close()
    (saved,) = (orjson.loads(v) for v in positions.values())
    assert saved[0]["offset"] == live.stat().st_size
