"""One frame = one message: a header (op length, payload length), the op, the payload.

The spec's ZMQ transport sends 2-frame multiparts ``[op, payload]``; a unix stream socket
has no message boundaries, so each message carries its own lengths instead.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

HEADER = struct.Struct("!HI")
"""Op length (bytes), payload length (bytes), big-endian."""
MAX_PAYLOAD = 64 * 2**20
"""A frame larger than this is a protocol error (a console record is capped well below)."""


class FrameError(ValueError):
    """The peer sent something that is not a frame."""


def encode(op: str, payload: bytes = b"") -> bytes:
    name = op.encode("ascii")
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(len(name), len(payload)) + name + payload


def decode_header(header: bytes) -> tuple[int, int]:
    op_length, payload_length = HEADER.unpack(header)
    if payload_length > MAX_PAYLOAD or op_length == 0:
        raise FrameError(f"bad frame header (op {op_length} bytes, payload {payload_length})")
    return op_length, payload_length


def read_frame(stream: BinaryIO) -> tuple[str, bytes] | None:
    """The next frame from a blocking binary stream; None at a clean end of stream."""
    header = _read_exactly(stream, HEADER.size)
    if header is None:
        return None
    op_length, payload_length = decode_header(header)
    body = _read_exactly(stream, op_length + payload_length)
    if body is None:
        raise FrameError("stream ended inside a frame")
    return body[:op_length].decode("ascii"), body[op_length:]


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            if remaining == size:
                return None
            raise FrameError("stream ended inside a frame")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
