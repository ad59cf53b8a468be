"""safetensors read and write in numpy (bfloat16 included, which safetensors.numpy lacks).

8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}} with an
optional "__metadata__" of strings, then the raw little-endian data.
"""
from __future__ import annotations

import json
import struct

import numpy as np

from ..errors import I3DError
from ..fileio import read_bytes
from .dtypes import BFLOAT16

TYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8"), "BF16": BFLOAT16,
         "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
         "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?")}
NAMES = {v: k for k, v in TYPES.items()}


def read(path: str) -> tuple:
    """({name: np.ndarray}, metadata {str: str})."""
    buf = read_bytes(path)
    try:
        if len(buf) < 8:
            raise ValueError("shorter than its header")
        (n,) = struct.unpack("<Q", buf[:8])
        if n > len(buf) - 8:
            raise ValueError(f"header of {n} bytes in a file of {len(buf)}")
        header = json.loads(buf[8:8 + n].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("__metadata__ must map strings to strings")
        data, out = memoryview(buf)[8 + n:], {}
        for name, info in header.items():
            dtype = TYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            start, end = (int(x) for x in info["data_offsets"])
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if min(shape, default=0) < 0 or not 0 <= start <= end <= len(data) \
                    or (end - start) != count * dtype.itemsize:
                raise ValueError(f"tensor '{name}' has bad offsets or shape")
            out[name] = np.frombuffer(data, dtype, count, start).reshape(shape).copy()
    except I3DError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, struct.error) as e:
        raise I3DError(f"{path}: not a valid safetensors file ({type(e).__name__}: {e})") from None
    return out, meta


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
