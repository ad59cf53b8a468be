"""MindSpore .ckpt without MindSpore: the protobuf is parsed and written directly.

    Checkpoint  { repeated Value value = 1; }
    Value       { string tag = 1; TensorProto tensor = 2; }
    TensorProto { repeated int64 dims = 1; string tensor_type = 2; bytes tensor_content = 3; }

A string entry (`save_checkpoint(..., append_dict={"key": "text"})`) is a TensorProto with dims
[0], tensor_type "str" and the text as numpy stores a str array: UTF-32, little-endian here.
`load_checkpoint` returns it as a str; `load_param_into_net` lists it as not loaded.

Read as `load_checkpoint` reads: a tensor over 512 MB comes as consecutive entries of one tag
(its content in slices), numeric dims [0] is a 0-d tensor (MindSpore 1.x wrote scalars so),
and `save_checkpoint(..., crc_check=True)` appends b"crc_num" and a CRC-32 (checked here). The
file is mapped, never read whole, and every tensor is built from validated fields: a known
numeric type, dims below 2^63, at most MAX_DIMS of them, whose element count x item size equals
the bytes the entries hold; at most MAX_ENTRIES entries. The message nesting is fixed (three
levels), so a file cannot make the parser recurse.
"""
from __future__ import annotations

import binascii
import math

import numpy as np

from ..errors import I3DError, printable
from ..fileio import mapped
from . import protobuf
from .dtypes import BFLOAT16

TYPES = {"Float32": np.dtype("<f4"), "Float16": np.dtype("<f2"), "Float64": np.dtype("<f8"),
         "BFloat16": BFLOAT16, "Int32": np.dtype("<i4"), "Int64": np.dtype("<i8"),
         "Int16": np.dtype("<i2"), "Int8": np.dtype("i1"), "UInt8": np.dtype("u1"),
         "UInt16": np.dtype("<u2"), "UInt32": np.dtype("<u4"), "UInt64": np.dtype("<u8"),
         "Bool": np.dtype("?")}
NAMES = {v: k for k, v in TYPES.items()}
STRING = "str"
MAX_DIMS = 32
MAX_ENTRIES = 1 << 16  # I3D's training checkpoints hold ~1000; each costs ~300 bytes of objects
CRC_MARK = b"crc_num"  # then the CRC-32 of everything before it, 10 bytes big-endian


_Bad = protobuf.Bad


def _fields(buf, start, end):
    return protobuf.fields(buf, start, end, (0, 2), "no checkpoint field")


class _Entry:
    """One tag's tensor: dims, type name, and its content as (start, end) slices."""
    __slots__ = ("tag", "dims", "ttype", "parts")

    def __init__(self, tag, dims, ttype, parts):
        self.tag, self.dims, self.ttype, self.parts = tag, dims, ttype, parts

    def name(self) -> str:
        return f"'{printable(self.tag)}'"


def _value(buf, start, end) -> _Entry:
    """A Value message: its tag and TensorProto, every field once."""
    seen, tag, tensor = set(), None, None
    for field, wire, value in _fields(buf, start, end):
        if (field, wire) not in ((1, 2), (2, 2)) or field in seen:
            raise _Bad(f"an entry with {'a repeated' if field in seen else 'an unknown'} field "
                       f"{field} at byte {start} (not a tensor entry)")
        seen.add(field)
        if field == 1:
            tag = bytes(buf[value[0]:value[1]]).decode("utf-8")
        else:
            tensor = value
    if tag is None or tensor is None:
        raise _Bad(f"an entry without a {'name' if tag is None else 'tensor'} at byte {start}")
    dims, ttype, content, seen = [], None, (0, 0), set()
    where = f"tensor '{printable(tag)}'"
    for field, wire, value in _fields(buf, *tensor):
        if field == 1:  # dims: one varint each, or packed
            if wire == 0:
                dims.append(value)
            else:
                p, e = value
                while p < e and len(dims) <= MAX_DIMS:
                    d, p = protobuf.varint(buf, p, e)
                    dims.append(d)
            if len(dims) > MAX_DIMS:
                raise _Bad(f"{where} has more than {MAX_DIMS} dims")
        elif field in (2, 3) and wire == 2 and field not in seen:
            seen.add(field)
            if field == 2:
                ttype = bytes(buf[value[0]:value[1]]).decode("utf-8")
            else:
                content = value
        else:
            raise _Bad(f"{where}: unexpected field {field} (wire type {wire})")
    if ttype is None:
        raise _Bad(f"{where} has no tensor_type")
    if ttype != STRING and ttype not in TYPES:
        raise _Bad(f"{where} has type '{printable(ttype, 24)}', not one this tool reads "
                   f"({', '.join(TYPES)}, {STRING})")
    for d in dims:
        if d >= 2**63:
            raise _Bad(f"{where}: dim {d} is negative or beyond 2^63")
    return _Entry(tag, dims, ttype, [content])


def _string(buf, e: _Entry) -> str:
    (start, end), = e.parts
    if e.dims != [0] or (end - start) % 4:
        raise _Bad(f"string entry {e.name()}: {end - start} bytes, dims {e.dims}")
    return bytes(buf[start:end]).decode("utf-32-le").rstrip("\x00")  # numpy pads with NULs


def _array(buf, e: _Entry) -> np.ndarray:
    """The tensor, built from its slices once their sizes add up to its shape."""
    dtype = TYPES[e.ttype]
    have = sum(end - start for start, end in e.parts)
    dims = [] if e.dims == [0] and have == dtype.itemsize else e.dims  # a 1.x scalar
    need = math.prod(dims) * dtype.itemsize
    if need != have:
        raise _Bad(f"tensor {e.name()}: shape {tuple(dims)} of {e.ttype} needs {need} bytes, "
                   f"the file holds {have}")
    out = np.empty(have, np.uint8)
    at = 0
    for start, end in e.parts:
        out[at:at + end - start] = np.frombuffer(buf, np.uint8, end - start, start)
        at += end - start
    return out.view(dtype).reshape(dims)


def _crc_end(buf) -> int:
    """Where the entries end: before a CRC trailer (checked), else at the end of the file."""
    n = len(buf)
    if n < 17 or bytes(buf[n - 17:n - 10]) != CRC_MARK:
        return n
    if binascii.crc32(memoryview(buf)[:n - 17]) != int.from_bytes(buf[n - 10:n], "big"):
        raise _Bad("its CRC-32 does not match its content (a damaged file)")
    return n - 17


def _entries(buf):
    """The file's entries, consecutive slices of one tag joined."""
    entries, last = [], None
    for field, wire, value in _fields(buf, 0, _crc_end(buf)):
        if field != 1 or wire != 2:
            raise _Bad("not a Checkpoint message")
        e = _value(buf, *value)
        if last is not None and e.tag == last.tag and e.ttype != STRING:
            if (e.dims, e.ttype) != (last.dims, last.ttype):
                raise _Bad(f"tensor {e.name()}: slices of different shapes or types")
            last.parts += e.parts
            continue
        entries.append(e)
        last = e
        if len(entries) > MAX_ENTRIES:
            raise _Bad(f"more than {MAX_ENTRIES} entries")
    return entries


def read_all(path: str) -> tuple:
    """({tag: np.ndarray} of every tensor, {tag: str} of every string entry)."""
    out, strings = {}, {}
    with mapped(path) as buf:
        try:
            for e in _entries(buf):
                if e.tag in out or e.tag in strings:
                    raise _Bad(f"tensor {e.name()} appears twice")
                if e.ttype == STRING:
                    strings[e.tag] = _string(buf, e)
                else:
                    out[e.tag] = _array(buf, e)
            reason = None
        except (_Bad, UnicodeDecodeError) as exc:
            reason = str(exc)
    if reason is not None:  # raised outside the handler: no traceback keeps arrays alive
        raise I3DError(f"{path}: not a valid MindSpore checkpoint ({reason})")
    if not out:
        raise I3DError(f"{path}: an empty MindSpore checkpoint")
    return out, strings


def read(path: str) -> dict:
    """{tag: np.ndarray} of every tensor in a MindSpore checkpoint (string entries left out)."""
    return read_all(path)[0]


def _key(field, wire):
    return protobuf.encode_varint(field << 3 | wire)


_enc_varint, _ld = protobuf.encode_varint, protobuf.length_delimited


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
