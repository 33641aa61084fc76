from __future__ import annotations

import os

import orjson

from exporter.config import FileInputConfig
from exporter.inputs.file import FileInput
from exporter.inputs.stats import InputStats
from tests import samples


class Collected:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.oversized = 0

    def on_lines(self, lines: list[bytes]) -> None:
        self.lines += lines

    def on_oversize(self, count: int) -> None:
        self.oversized += count


def make_input(pattern: str, start_at: str = "beginning", max_line_bytes: int = 1 << 20):
    got = Collected()
    stats = InputStats("file", "file")
    config = FileInputConfig(
        name="file", paths=(pattern,), start_at=start_at, max_line_bytes=max_line_bytes
    )
    return FileInput(config, got.on_lines, got.on_oversize, stats), got, stats


def append(path, *lines: bytes) -> None:
    with open(path, "ab") as handle:
        for line in lines:
            handle.write(line)


def test_follows_appends_and_holds_partial_lines(tmp_path):
    log = tmp_path / "a.jsonl"
    append(log, b"one\n")
    tail, got, stats = make_input(str(tmp_path / "*.jsonl"))
    tail.poll_once()
    assert got.lines == [b"one"]
    append(log, b"two\nthr")
    tail.poll_once()
    assert got.lines == [b"one", b"two"]
    append(log, b"ee\n")
    tail.poll_once()
    assert got.lines == [b"one", b"two", b"three"]
    assert stats.bytes_read == len(b"one\ntwo\nthree\n")
    assert stats.files_watched == 1


def test_start_at_end_skips_existing_content_but_not_new_files(tmp_path):
    old = tmp_path / "old.jsonl"
    append(old, b"history\n")
    tail, got, _ = make_input(str(tmp_path / "*.jsonl"), start_at="end")
    tail.poll_once()
    assert got.lines == []
    append(old, b"fresh\n")
    new = tmp_path / "new.jsonl"
    append(new, b"first-of-new\n")
    tail.poll_once()
    assert got.lines == [b"fresh", b"first-of-new"]


def test_rename_rotation_drains_old_file(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"a\n")
    tail, got, stats = make_input(str(log))
    tail.poll_once()
    append(log, b"b\n")  # written after our last read, before rotation
    os.rename(log, tmp_path / "app.log.1")
    append(log, b"c\n")
    tail.poll_once()
    assert got.lines == [b"a", b"b", b"c"]
    assert stats.rotations == 1


def test_copytruncate_restarts_from_zero(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"aaaa\nbbbb\n")
    tail, got, stats = make_input(str(log))
    tail.poll_once()
    with open(log, "wb") as handle:
        handle.write(b"c\n")
    tail.poll_once()
    assert got.lines == [b"aaaa", b"bbbb", b"c"]
    assert stats.truncations == 1


def test_deleted_file_is_released(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"a\n")
    tail, got, stats = make_input(str(tmp_path / "*.log"))
    tail.poll_once()
    os.remove(log)
    tail.poll_once()
    assert stats.files_watched == 0 and got.lines == [b"a"]


def test_oversized_lines_are_reported(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"x" * 5000 + b"\n", orjson.dumps(samples.chat()) + b"\n")
    tail, got, _ = make_input(str(log), max_line_bytes=4096)
    tail.poll_once()
    assert got.oversized == 1
    assert len(got.lines) == 1


def test_unreadable_file_is_counted_and_others_continue(tmp_path):
    if os.geteuid() == 0:
        # root reads anything; simulate with a directory matching the glob instead
        (tmp_path / "dir.log").mkdir()
    else:
        bad = tmp_path / "bad.log"
        append(bad, b"x\n")
        bad.chmod(0)
    good = tmp_path / "good.log"
    append(good, b"fine\n")
    tail, got, _ = make_input(str(tmp_path / "*.log"))
    tail.poll_once()
    assert got.lines == [b"fine"]
