"""safetensors through the `safetensors` package (its numpy API; bfloat16 as ml_dtypes'), which
validates the header as the format's authors maintain it: a JSON object of at most 100 MB, known
element types, integer shapes and offsets, tensors tiling the data exactly. In front of it, what
the package leaves to its caller (tests/test_hostile.py has a case for each):

- the path must be a regular, non-sparse file (`fileio.mapped`): the package would block on a
  FIFO and copy a sparse file's holes;
- the 8-byte header length is checked against the cap before the package maps the file (the
  package refuses it too, after mapping: "header-over-the-cap");
- element types the package reads but this tool does not convert (float8, complex: "float8")
  are refused by the header's dtype before any tensor is copied out.

Each tensor is copied out of the package's map once; bfloat16 arrives as ml_dtypes' and is kept
as this tool's opaque 2-byte type, bit for bit.
"""
from __future__ import annotations

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
MAX_HEADER = 100_000_000  # bytes: the format's cap


class _Bad(ValueError):
    pass


def _prechecked(path: str):
    """What the package leaves to us: a regular, non-sparse file, a header under the cap."""
    head = read_prefix(path, 8)
    if len(head) < 8:
        raise _Bad("shorter than its header")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER:  # refused before reading (or mapping) anything more
        raise _Bad(f"a header of {n} bytes (at most {MAX_HEADER})")
    with mapped(path):  # regular, not sparse
        pass


def _package(path: str):
    try:
        import safetensors
    except ImportError:
        raise I3DError(f"{path}: safetensors files need the `safetensors` package "
                       "(pip install safetensors ml-dtypes)") from None
    return safetensors


def _reason(e: Exception) -> str:
    """The package's error (SafetensorError, a Rust panic, ...) as one short phrase."""
    return printable(" ".join(str(e).split()) or type(e).__name__, 200)


def read(path: str) -> tuple:
    """({name: np.ndarray}, metadata {str: str}), in the file's order."""
    safe_open = _package(path).safe_open

    reason = None
    try:
        _prechecked(path)
        with safe_open(path, "np") as f:
            meta = f.metadata() or {}
            names = list(f.offset_keys())
            for name in names:
                dtype = f.get_slice(name).get_dtype()
                if dtype not in TYPES:
                    raise _Bad(f"tensor '{printable(name)}' has element type {dtype!r}, not one "
                               f"of {', '.join(TYPES)}")
            out = {}
            for name in names:
                a = f.get_tensor(name)
                out[name] = a.view("<u2").view(BFLOAT16) if a.dtype.name == "bfloat16" else a
        return out, meta
    except I3DError:
        raise
    except _Bad as e:
        reason = str(e)
    except Exception as e:  # the package's errors: SafetensorError, OSError, panics
        reason = _reason(e)
    # raised outside the handler: no traceback cycle keeps the arrays read so far alive
    raise I3DError(f"{path}: not a valid safetensors file ({reason})")


def write(flat: dict, path: str, metadata: dict | None = None):
    _package(path)
    from safetensors.numpy import save

    arrays = {}
    for name, a in flat.items():
        a = np.ascontiguousarray(a)  # little-endian: the machines this runs on are
        if a.dtype not in NAMES:
            raise I3DError(f"{path}: cannot store dtype {a.dtype} of '{name}' in safetensors")
        if a.dtype == BFLOAT16:
            import ml_dtypes

            a = a.view("<u2").view(ml_dtypes.bfloat16)
        arrays[name] = a
    meta = {str(k): str(v) for k, v in metadata.items()} if metadata else None
    data = save(arrays, metadata=meta)  # bytes: the package's save_file would replace the
    with open(path, "wb") as f:         # atomic writer's temporary file with one of its own
        f.write(data)
