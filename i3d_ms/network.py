"""The network a training config asks for: the whole I3D, or I3D cut at an earlier end point
with a pooled linear probe (for small, fast runs)."""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from convert import architecture as arch
from convert.errors import I3DError
from recipe.config import variant

from . import kernels
from .model import InceptionI3d


class ProbedI3d(InceptionI3d):
    """I3D up to `final_endpoint`, then a global average pool, a BatchNorm and a Dense head."""

    def __init__(self, num_classes: int, variant: arch.Variant, final_endpoint: str,
                 conv: str = "auto", dtype: str = "float32"):
        super().__init__(num_classes, variant, final_endpoint, conv=conv, dtype=dtype)
        width = arch.channels(final_endpoint)
        # pooled features share a large mean: standardise them so that SGD on the head is well
        # conditioned (momentum 0.9: the running statistics settle in short runs)
        self.norm = Standardise(width, dtype)
        self.fc = nn.Dense(width, num_classes, dtype=getattr(ms, dtype))

    def construct(self, x):
        return self.fc(self.norm(self.walk(x)[-1].mean(axis=(2, 3, 4))))


class Standardise(nn.Cell):
    """BatchNorm1d without scale and shift, written out: MindSpore's has no float64 kernel.
    Batch statistics in training, their running averages (`momentum`: the old one's weight,
    the variance's unbiased, as torch's and the twin's BatchNorm keep it) in evaluation."""

    def __init__(self, width: int, dtype: str = "float32", momentum: float = 0.9,
                 eps: float = 1e-5):
        super().__init__()
        kind = getattr(ms, dtype)
        self.moving_mean = Parameter(Tensor(np.zeros(width), kind), name="moving_mean",
                                     requires_grad=False)
        self.moving_variance = Parameter(Tensor(np.ones(width), kind), name="moving_variance",
                                         requires_grad=False)
        # tensors of the parameters' dtype: a Python float would be a float32 scalar
        self.keep, self.take = Tensor(momentum, kind), Tensor(1 - momentum, kind)
        self.eps = Tensor(eps, kind)

    def construct(self, x):
        if not self.training:
            return (x - self.moving_mean) * ops.rsqrt(self.moving_variance + self.eps)
        n = x.shape[0]
        mean = x.sum(0) / n
        centred = x - mean
        var = (centred * centred).sum(0) / n
        ops.assign(self.moving_mean, self.keep * self.moving_mean
                   + self.take * ops.stop_gradient(mean))
        ops.assign(self.moving_variance, self.keep * self.moving_variance
                   + self.take * ops.stop_gradient(var) * n / max(n - 1, 1))
        return centred * ops.rsqrt(var + self.eps)


def build_net(m: dict, num_classes: int, precision: str = "fp32"):
    """I3D with a `num_classes` head, as the config's `model` section describes it, for
    training in `precision` (fp16: the convolution kernel of mixed precision, see
    `kernels.choose`; fp64: the network in float64, for exact parity and hand-off runs)."""
    if precision not in PRECISIONS:
        raise I3DError(f"train.precision {precision}: the MindSpore loop runs "
                       f"{', '.join(PRECISIONS)} (bf16 is the torch loop's)")
    dtype = PRECISIONS[precision]
    conv = kernels.choose(m["conv"], "float16" if precision == "fp16" else dtype)
    if m["final_endpoint"] == "Logits":
        return InceptionI3d(num_classes, variant(m), head=m["head"],
                            dropout_keep_prob=m["dropout_keep_prob"], conv=conv, dtype=dtype)
    return ProbedI3d(num_classes, variant(m), m["final_endpoint"], conv, dtype)


# train.precision -> the parameters' dtype (fp16 keeps float32 master weights)
PRECISIONS = {"fp32": "float32", "fp16": "float32", "fp64": "float64"}


def to_input(clips, flip=None, dtype=ms.float32):
    """uint8 clips (B, T, H, W, 3), as the datasets deliver them -> the network's input
    (B, 3, T, H, W) in [-1, 1]: x / 127.5 - 1 as DeepMind scales (numpy's result bit for bit),
    the clips where `flip` (B,) is true mirrored; on the device, so the host moves a quarter of
    the bytes and does not copy them backwards. `dtype` float64 for the parity runs."""
    x = clips.astype(dtype).transpose(0, 4, 1, 2, 3) / 127.5 - 1.0
    if flip is None:
        return x
    return ops.select(flip.reshape(-1, 1, 1, 1, 1), ops.flip(x, (4,)), x)
