"""The protobuf wire format, read from a buffer without generated code: the .ckpt reader and
the ONNX scanner walk their (fixed, known) message nesting with it. Every length is checked
against the enclosing message before anything is sliced."""
from __future__ import annotations


class Bad(Exception):
    """Malformed bytes; the reader adds which file."""


def varint(buf, pos: int, end: int) -> tuple:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise Bad(f"truncated or overlong varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


_FIXED = {1: 8, 5: 4}  # wire type -> bytes (fixed64, fixed32)


def fields(buf, start: int, end: int, wires=(0, 2), what: str = "this message"):
    """Yields (field number, wire type, value): a varint, the (start, end) of a length-delimited
    or fixed-size field. Wire types not in `wires` are refused."""
    pos = start
    while pos < end:
        at = pos
        key, pos = varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire not in wires:
            raise Bad(f"field {field} at byte {at} has wire type {wire}, which {what} does not "
                      "hold")
        if wire == 0:
            value, pos = varint(buf, pos, end)
            yield field, wire, value
            continue
        n = _FIXED[wire] if wire in _FIXED else None
        if n is None:
            n, pos = varint(buf, pos, end)
        if n > end - pos:
            raise Bad(f"a field of {n} bytes at byte {at} runs past its message's end")
        yield field, wire, (pos, pos + n)
        pos += n


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    return encode_varint(field << 3 | 2) + encode_varint(len(payload)) + payload
