"""Frames between the supervisor and its workers: a 4-byte big-endian length, then a pickle.

Pickle is safe here: both ends are this program, started by the supervisor from the same
interpreter, talking over the child's own stdin and stdout; nothing else writes to them.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any, BinaryIO

_LENGTH = struct.Struct(">I")
READY = -1  # request id of the reply a worker sends, unasked, once it can take requests


def encode(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


async def read(reader: asyncio.StreamReader) -> Any:
    """The next message; asyncio.IncompleteReadError at end of stream."""
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return pickle.loads(await reader.readexactly(length))


def read_blocking(stream: BinaryIO) -> tuple[bool, Any]:
    """(True, message), or (False, None) once the other end has closed the stream."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return False, None
    (length,) = _LENGTH.unpack(header)
    payload = stream.read(length)
    if len(payload) < length:
        return False, None
    return True, pickle.loads(payload)


def write_blocking(stream: BinaryIO, message: Any) -> None:
    stream.write(encode(message))
    stream.flush()
