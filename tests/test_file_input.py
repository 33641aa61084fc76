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


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def restarted(old: FileInput, pattern: str, got: Collected | None = None):
    """A new FileInput resuming from `old`'s checkpoint, like the exporter after a restart."""
    got = got or Collected()
    stats = InputStats("file", "file")
    config = FileInputConfig(name="file", paths=(pattern,), start_at="end")
    fresh = FileInput(config, got.on_lines, got.on_oversize, stats)
    fresh.restore(old.checkpoint())
    old.close()
    return fresh, got, stats


def test_restart_resumes_at_checkpoint_and_rereads_partial_line(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"one\ntwo\npar")
    tail, got, _ = make_input(str(log))
    tail.poll_once()
    assert got.lines == [b"one", b"two"]
    append(log, b"tial\nthree\n")
    fresh, got2, _ = restarted(tail, str(log))
    fresh.poll_once()
    assert got2.lines == [b"partial", b"three"]


def test_rotated_name_matching_the_glob_is_not_read_twice(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"a\nb\n")
    tail, got, _stats = make_input(str(tmp_path / "app.log*"))
    tail.poll_once()
    os.rename(log, tmp_path / "app.log.1")
    append(log, b"c\n")
    for _ in range(3):
        tail.poll_once()
    assert got.lines == [b"a", b"b", b"c"]
    # and across a restart as well
    append(tmp_path / "app.log.1", b"late\n")
    fresh, got2, _ = restarted(tail, str(tmp_path / "app.log*"))
    fresh.poll_once()
    assert got2.lines == [b"late"]


def test_writes_to_renamed_file_are_drained_until_quiet(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"a\n")
    clock = Clock()
    got = Collected()
    stats = InputStats("file", "file")
    config = FileInputConfig(name="file", paths=(str(log),), start_at="beginning")
    tail = FileInput(config, got.on_lines, got.on_oversize, stats, clock=clock)
    tail.poll_once()
    rotated = tmp_path / "app.log.1"
    os.rename(log, rotated)
    tail.poll_once()
    clock.now += 2
    append(rotated, b"written-after-rename\n")  # the writer has not reopened yet
    tail.poll_once()
    assert got.lines == [b"a", b"written-after-rename"]
    assert stats.files_watched == 1
    clock.now += 10
    tail.poll_once()
    tail.poll_once()
    assert stats.files_watched == 0


def test_truncation_while_stopped(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"x" * 50 + b"\n")
    tail, _, _ = make_input(str(log))
    tail.poll_once()
    checkpoint = tail.checkpoint()
    tail.close()
    with open(log, "r+b") as handle:
        handle.truncate(0)
    # same first bytes as before up to the (now short) length: rewritten shorter file
    append(log, b"new\n")
    got = Collected()
    stats = InputStats("file", "file")
    fresh = FileInput(FileInputConfig(name="file", paths=(str(log),)), got.on_lines,
                      got.on_oversize, stats)
    fresh.restore(checkpoint)
    fresh.poll_once()
    assert got.lines == [b"new"]


def test_inode_reuse_is_a_new_file(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"old-content-line\n" * 3)
    tail, _, _ = make_input(str(log))
    tail.poll_once()
    checkpoint = tail.checkpoint()
    tail.close()
    # simulate the same (device, inode) now holding other content, longer than the offset
    with open(log, "wb") as handle:
        handle.write(b"brand-new-first-line\n" * 10)
    got = Collected()
    fresh = FileInput(FileInputConfig(name="file", paths=(str(log),)), got.on_lines,
                      got.on_oversize, InputStats("file", "file"))
    fresh.restore(checkpoint)
    fresh.poll_once()
    assert got.lines == [b"brand-new-first-line"] * 10


def test_files_with_identical_first_records_are_both_read(tmp_path):
    for name in ("a.log", "b.log"):
        append(tmp_path / name, b'{"header": 1}\n', name.encode() + b"\n")
    tail, got, stats = make_input(str(tmp_path / "*.log"))
    tail.poll_once()
    assert sorted(got.lines) == sorted([b'{"header": 1}', b"a.log", b'{"header": 1}', b"b.log"])
    assert stats.files_watched == 2


def test_file_appearing_later_is_read_from_its_beginning_even_with_start_at_end(tmp_path):
    tail, got, _ = make_input(str(tmp_path / "*.log"), start_at="end")
    tail.poll_once()
    append(tmp_path / "late.log", b"first\n")
    tail.poll_once()
    assert got.lines == [b"first"]


def test_truncation_refilled_past_the_offset_before_the_next_poll(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"old-1\nold-2\n")
    tail, got, stats = make_input(str(log))
    tail.poll_once()
    with open(log, "r+b") as handle:
        handle.truncate(0)
    append(log, b"new-1\nnew-2\nnew-3\n")  # longer than the old offset already
    tail.poll_once()
    assert got.lines == [b"old-1", b"old-2", b"new-1", b"new-2", b"new-3"]
    assert stats.truncations == 1


def test_start_at_end_in_the_middle_of_a_line_skips_its_rest(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"complete\nhalf-writ")
    tail, got, _ = make_input(str(log), start_at="end")
    tail.poll_once()
    append(log, b"ten\nnext\n")
    tail.poll_once()
    assert got.lines == [b"next"] and got.oversized == 0


def test_checkpoint_while_skipping_an_oversized_line_resumes_at_its_start(tmp_path):
    log = tmp_path / "app.log"
    append(log, b"ok\n" + b"x" * 300)
    tail, got, _ = make_input(str(log), max_line_bytes=200)
    tail.poll_once()
    assert got.lines == [b"ok"] and got.oversized == 1
    assert tail.checkpoint()[0]["offset"] == 3  # the start of the oversized line
    append(log, b"y" * 10 + b"\nafter\n")
    got2 = Collected()
    config = FileInputConfig(name="file", paths=(str(log),), max_line_bytes=200)
    fresh = FileInput(config, got2.on_lines, got2.on_oversize, InputStats("file", "file"))
    fresh.restore(tail.checkpoint())
    tail.close()
    fresh.poll_once()
    assert got2.lines == [b"after"] and got2.oversized == 1
