"""MindSpore .ckpt without MindSpore: the protobuf is parsed and written directly.

    Checkpoint  { repeated Value value = 1; }
    Value       { string tag = 1; TensorProto tensor = 2; }
    TensorProto { repeated int64 dims = 1; string tensor_type = 2; bytes tensor_content = 3; }

A string entry (`save_checkpoint(..., append_dict={"key": "text"})`) is a TensorProto with dims
[0], tensor_type "str" and the text as numpy stores a str array: UTF-32, little-endian here.
`load_checkpoint` returns it as a str; `load_param_into_net` lists it as not loaded.
"""
from __future__ import annotations

import numpy as np

from ..errors import I3DError
from ..fileio import read_bytes
from .dtypes import BFLOAT16

TYPES = {"Float32": np.dtype("<f4"), "Float16": np.dtype("<f2"), "Float64": np.dtype("<f8"),
         "BFloat16": BFLOAT16, "Int32": np.dtype("<i4"), "Int64": np.dtype("<i8"),
         "Int16": np.dtype("<i2"), "Int8": np.dtype("i1"), "UInt8": np.dtype("u1"),
         "Bool": np.dtype("?")}
NAMES = {v: k for k, v in TYPES.items()}
STRING = "str"


class _Bad(Exception):
    pass


def _varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Bad("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf, start, end):
    """Yields (field number, wire type, value or (start, end) of a length-delimited field)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, wire, value
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise _Bad("field runs past the end")
            yield field, wire, (pos, pos + n)
            pos += n
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise _Bad(f"unsupported wire type {wire}")
        if pos > end:
            raise _Bad("field runs past the end")


def _tensor(buf, start, end, tag):
    dims, ttype, content = [], None, (0, 0)
    for field, wire, value in _fields(buf, start, end):
        if field == 1 and wire == 0:
            dims.append(value)
        elif field == 1 and wire == 2:  # packed dims
            p, e = value
            while p < e:
                d, p = _varint(buf, p)
                dims.append(d)
        elif field == 2 and wire == 2:
            ttype = bytes(buf[value[0]:value[1]]).decode("utf-8", "replace")
        elif field == 3 and wire == 2:
            content = value
    if ttype == STRING:
        raw = bytes(buf[content[0]:content[1]])
        if dims != [0] or len(raw) % 4:
            raise _Bad(f"string entry '{tag}': {len(raw)} bytes, dims {dims}")
        return raw.decode("utf-32-le").rstrip("\x00")  # numpy pads with NULs to its width
    if ttype not in TYPES:
        raise _Bad(f"tensor '{tag}' has unsupported type {ttype!r}")
    dtype = TYPES[ttype]
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    if any(d > 2**40 for d in dims) or count * dtype.itemsize != content[1] - content[0]:
        raise _Bad(f"tensor '{tag}': {content[1] - content[0]} bytes for shape {tuple(dims)} {ttype}")
    return np.frombuffer(buf, dtype, count, content[0]).reshape(dims).copy()


def read_all(path: str) -> tuple:
    """({tag: np.ndarray} of every tensor, {tag: str} of every string entry)."""
    buf = read_bytes(path)
    out, strings = {}, {}
    try:
        for field, wire, value in _fields(buf, 0, len(buf)):
            if field != 1 or wire != 2:
                raise _Bad("not a Checkpoint message")
            tag, tensor = None, None
            for f2, w2, v2 in _fields(buf, *value):
                if f2 == 1 and w2 == 2:
                    tag = bytes(buf[v2[0]:v2[1]]).decode("utf-8")
                elif f2 == 2 and w2 == 2:
                    tensor = v2
            if tag is None or tensor is None:
                raise _Bad("an entry without a name or a tensor")
            if tag in out or tag in strings:
                raise _Bad(f"tensor '{tag}' appears twice")
            entry = _tensor(buf, *tensor, tag)
            (strings if isinstance(entry, str) else out)[tag] = entry
    except (_Bad, UnicodeDecodeError, ValueError) as e:
        raise I3DError(f"{path}: not a valid MindSpore checkpoint ({e})") from None
    if not out:
        raise I3DError(f"{path}: an empty MindSpore checkpoint")
    return out, strings


def read(path: str) -> dict:
    """{tag: np.ndarray} of every tensor in a MindSpore checkpoint (string entries left out)."""
    return read_all(path)[0]


def _key(field, wire):
    return _enc_varint(field << 3 | wire)


def _enc_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(field, payload: bytes) -> bytes:
    return _key(field, 2) + _enc_varint(len(payload)) + payload


def write(flat: dict, path: str, strings: dict | None = None):
    """Write {name: np.ndarray}, then {name: str} string entries, as MindSpore's
    save_checkpoint(..., append_dict=strings) does."""
    with open(path, "wb") as f:
        for tag, a in flat.items():
            a = np.ascontiguousarray(a)
            if a.dtype not in NAMES:
                raise I3DError(f"{path}: cannot store dtype {a.dtype} of '{tag}' in a .ckpt")
            f.write(_entry(tag, a.shape, NAMES[a.dtype], a.tobytes()))
        for tag, text in (strings or {}).items():
            # numpy's str array of "" still holds one NUL character: so does MindSpore's entry
            f.write(_entry(tag, (0,), STRING, (str(text) or "\x00").encode("utf-32-le")))


def _entry(tag: str, dims, ttype: str, content: bytes) -> bytes:
    tensor = b"".join(_key(1, 0) + _enc_varint(d) for d in dims)
    tensor += _ld(2, ttype.encode()) + _ld(3, content)
    return _ld(1, _ld(1, tag.encode()) + _ld(2, tensor))
