from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exporter.inputs.lines import LineSplitter


def split_all(chunks: list[bytes], limit: int) -> tuple[list[bytes], int, bytes | None]:
    splitter = LineSplitter(limit)
    lines: list[bytes] = []
    oversized = 0
    for chunk in chunks:
        result = splitter.feed(chunk)
        lines += result.lines
        oversized += result.oversized
    return lines, oversized, splitter.flush()


def test_partial_line_held_until_newline():
    splitter = LineSplitter(100)
    assert splitter.feed(b'{"a": 1}\n{"b"').lines == [b'{"a": 1}']
    assert splitter.pending_bytes == 4
    assert splitter.feed(b": 2}\n").lines == [b'{"b": 2}']
    assert splitter.pending_bytes == 0


def test_oversized_line_skipped_to_next_newline():
    lines, oversized, rest = split_all(
        [b"short\n", b"x" * 50, b"x" * 60, b"y" * 10 + b"\nok\n"], 40
    )
    assert lines == [b"short", b"ok"]
    assert oversized == 1
    assert rest is None


def test_oversized_line_within_one_chunk():
    lines, oversized, _ = split_all([b"a\n" + b"z" * 100 + b"\nb\n"], 10)
    assert lines == [b"a", b"b"]
    assert oversized == 1


def test_flush_returns_unterminated_last_line():
    assert split_all([b"a\nb"], 10) == ([b"a"], 0, b"b")


@given(
    st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=10),
    st.integers(min_value=1, max_value=40),
)
def test_any_chunking_yields_the_same_lines(lines, cuts, limit):
    """However the bytes are cut into reads, the same complete lines come out, in order."""
    data = b"".join(line + b"\n" for line in lines)
    chunks, position, index = [], 0, 0
    while position < len(data):
        size = cuts[index % len(cuts)]
        chunks.append(data[position : position + size])
        position += size
        index += 1
    got, oversized, rest = split_all(chunks, limit)
    expected = [line for line in lines if len(line) <= limit]
    assert got == expected
    assert oversized == len(lines) - len(expected)
    assert rest is None
