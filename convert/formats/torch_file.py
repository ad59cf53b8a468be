"""PyTorch state_dict files (.pt/.pth, zip or the legacy pre-1.6 format): read with
weights_only=True, never plain pickle.

Metadata rides in the state_dict's `_metadata` attribute, as torch keeps it: `torch.save` and
`torch.load(weights_only=True)` carry it, and `load_state_dict` looks up only module paths in
it, so an entry under another name leaves the file a plain, strictly loading state_dict.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..errors import I3DError
from .dtypes import BFLOAT16


def _to_numpy(t):
    import torch

    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(BFLOAT16)
    return t.numpy()


def _to_torch(a):
    import torch

    if a.dtype == BFLOAT16:
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a).copy())


def read(path: str) -> tuple:
    """({key: np.ndarray}, the state_dict's `_metadata`, or {})."""
    try:
        import torch
    except ImportError:
        raise I3DError(f"{path}: reading a PyTorch file needs torch, which is not installed") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zips and refused globals raise many types
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise I3DError(f"{path}: unreadable PyTorch file ({reason[:200]})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise I3DError(f"{path}: holds a {type(obj).__name__}, not a state_dict of tensors")
    return {str(k): _to_numpy(v) for k, v in obj.items()}, getattr(obj, "_metadata", None) or {}


def write(obj, path: str, metadata: dict | None = None):
    """torch.save of a state_dict ({name: np.ndarray}) or of a structure holding them;
    `metadata` becomes the state_dict's `_metadata`."""
    import torch

    obj = _tensors(obj)
    if metadata:
        obj = OrderedDict(obj)
        obj._metadata = OrderedDict(metadata)
    torch.save(obj, path)


def _tensors(obj):
    if isinstance(obj, np.ndarray):
        return _to_torch(obj)
    if isinstance(obj, dict):
        return {k: _tensors(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_tensors(v) for v in obj]
    return obj
