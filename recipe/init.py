"""Initial values of the tensors a run does not load (a fresh classifier, or every tensor when
training from scratch), one rule for both frameworks, so that their runs start from the same
weights: a weight of shape (out, in, *kernel) and its bias draw from U(-1/sqrt(fan_in),
1/sqrt(fan_in)) (torch's default, Kaiming uniform with a = sqrt(5); MindSpore's Dense has the
same), from numpy's generator seeded by (train.seed, the tensor's name in the checkpoint)."""
from __future__ import annotations

import zlib

import numpy as np


def initial(name: str, shapes: dict, seed: int) -> np.ndarray | None:
    """The initial value of tensor `name` (a checkpoint name, `recipe.checkpoints`) given every
    tensor's shape: None for what is not a weight or a bias (BatchNorm's statistics and beta
    start as each framework starts them: zeros and ones)."""
    if name.endswith("weight"):
        weight = name
    elif name.endswith("bias"):
        weight = name[: -len("bias")] + "weight"
    else:
        return None
    if weight not in shapes or len(shapes[weight]) < 2:
        return None
    fan_in = int(np.prod(shapes[weight][1:]))
    bound = 1.0 / np.sqrt(fan_in)
    rng = np.random.default_rng((seed, zlib.crc32(name.encode())))
    return rng.uniform(-bound, bound, shapes[name])
