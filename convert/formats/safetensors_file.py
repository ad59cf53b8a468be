"""safetensors read and write in numpy (bfloat16 included, which safetensors.numpy lacks).

8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} with an
optional "__metadata__" of strings, then the raw little-endian data. Read by the reference
implementation's rules (a header of at most 100 MB that is a JSON object; integer shapes and
offsets; known element types; tensors that tile the data exactly: contiguous, in order of
their offsets, without gaps, overlaps or bytes left over), from the mapped file: each tensor is
copied out once, the file is never read whole.
"""
from __future__ import annotations

import json
import math
import struct

import numpy as np

from ..errors import I3DError, printable
from ..fileio import mapped, read_prefix
from .dtypes import BFLOAT16

TYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8"), "BF16": BFLOAT16,
         "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
         "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
         "U16": np.dtype("<u2"), "U32": np.dtype("<u4"), "U64": np.dtype("<u8")}
NAMES = {v: k for k, v in TYPES.items()}
MAX_HEADER = 100_000_000  # bytes: the reference implementation's cap


class _Bad(ValueError):
    pass


def _integer(text: str) -> int:
    """JSON integers within the reference's u64 (shapes and offsets are usize there)."""
    if len(text.lstrip("-")) > 20 or not -2**63 <= (n := int(text)) < 2**64:
        raise _Bad(f"number {text[:24]}{'...' if len(text) > 24 else ''} out of range")
    return n


def _no_float(text: str):
    raise _Bad(f"non-integer number {text[:24]} in the header")


def _unique(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _Bad(f"key '{printable(k)}' appears twice")
        out[k] = v
    return out


def _header(raw: bytes, n: int) -> dict:
    if len(raw) < n:
        raise _Bad(f"a header of {n} bytes in a file of {8 + len(raw)}")
    if not raw.startswith(b"{"):
        raise _Bad("the header is not a JSON object")
    try:
        header = json.loads(raw.decode("utf-8"), parse_int=_integer, parse_float=_no_float,
                            parse_constant=_no_float, object_pairs_hook=_unique)
    except RecursionError:
        raise _Bad("the header's JSON is nested too deep") from None
    if not isinstance(header, dict):
        raise _Bad("the header is not a JSON object")
    return header


def _sizes(value, what: str, name: str, n: int | None = None) -> list:
    """A list of non-negative integers (of length `n`)."""
    if not isinstance(value, list) or (n is not None and len(value) != n) \
            or not all(type(v) is int and v >= 0 for v in value):
        raise _Bad(f"tensor '{printable(name)}': {what} is not a list of "
                   f"{'two ' if n == 2 else ''}non-negative integers")
    return value


def _layout(header: dict) -> list:
    """[(name, dtype, shape, start, end)] in offset order, checked to tile the data."""
    tensors = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _Bad(f"tensor '{printable(name)}' is not {{dtype, shape, data_offsets}}")
        if not isinstance(info["dtype"], str) or info["dtype"] not in TYPES:
            raise _Bad(f"tensor '{printable(name)}' has element type {str(info['dtype'])[:20]!r}, "
                       f"not one of {', '.join(TYPES)}")
        shape = _sizes(info["shape"], "shape", name)
        if len(shape) > 32:
            raise _Bad(f"tensor '{printable(name)}' has {len(shape)} dimensions (at most 32)")
        start, end = _sizes(info["data_offsets"], "data_offsets", name, 2)
        tensors.append((name, TYPES[info["dtype"]], shape, start, end))
    tensors.sort(key=lambda t: (t[3], t[4]))
    at = 0
    for name, dtype, shape, start, end in tensors:
        if start != at or end < start:
            raise _Bad(f"tensor '{printable(name)}' has data_offsets [{start}, {end}]: tensors "
                       f"must follow one another without gaps or overlaps (next offset {at})")
        if math.prod(shape) * dtype.itemsize != end - start:
            raise _Bad(f"tensor '{printable(name)}': shape {printable(str(shape))} needs "
                       f"{math.prod(shape) * dtype.itemsize} bytes, its offsets give {end - start}")
        at = end
    return tensors


def read(path: str) -> tuple:
    """({name: np.ndarray}, metadata {str: str})."""
    try:
        head = read_prefix(path, 8)
        if len(head) < 8:
            raise _Bad("shorter than its header")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER:  # refused before reading (or mapping) anything more
            raise _Bad(f"a header of {n} bytes (at most {MAX_HEADER})")
        header = _header(read_prefix(path, 8 + n)[8:], n)
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise _Bad("__metadata__ must map strings to strings")
        tensors = _layout(header)
        with mapped(path) as buf:
            size = len(buf) - 8 - n
            end = tensors[-1][4] if tensors else 0
            if end != size:
                raise _Bad(f"the tensors cover {end} bytes of data, the file holds {size}")
            out = {}
            for name, dtype, shape, start, end in tensors:
                count = math.prod(shape)
                flat = np.frombuffer(buf, dtype, count, 8 + n + start) if count else \
                    np.empty(0, dtype)
                out[name] = flat.reshape(shape).copy()
                del flat
        return {name: out[name] for name in header}, meta  # in the file's order
    except (_Bad, UnicodeDecodeError, json.JSONDecodeError) as e:
        reason = str(e)
    # raised outside the handler: no traceback cycle keeps the arrays read so far alive
    raise I3DError(f"{path}: not a valid safetensors file ({reason})")


def write(flat: dict, path: str, metadata: dict | None = None):
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, a in flat.items():
        a = np.ascontiguousarray(a)  # little-endian: the machines this runs on are
        if a.dtype not in NAMES:
            raise I3DError(f"{path}: cannot store dtype {a.dtype} of '{name}' in safetensors")
        raw = a.tobytes()
        header[name] = {"dtype": NAMES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # align the data to 8 bytes, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in blobs:
            f.write(raw)
