"""The network a training config asks for: the whole I3D, or I3D cut at an earlier end point
with a pooled linear probe (for small, fast runs)."""
from __future__ import annotations

import mindspore as ms
from mindspore import nn, ops

from convert import architecture as arch

from . import kernels
from .config import variant
from .model import InceptionI3d


class ProbedI3d(InceptionI3d):
    """I3D up to `final_endpoint`, then a global average pool, a BatchNorm and a Dense head."""

    def __init__(self, num_classes: int, variant: arch.Variant, final_endpoint: str,
                 conv: str = "auto"):
        super().__init__(num_classes, variant, final_endpoint, conv=conv)
        width = arch.channels(final_endpoint)
        # pooled features share a large mean: standardise them so that SGD on the head is well
        # conditioned (momentum 0.9: the running statistics settle in short runs)
        self.norm = nn.BatchNorm1d(width, momentum=0.9, affine=False)
        self.fc = nn.Dense(width, num_classes)

    def construct(self, x):
        return self.fc(self.norm(self.walk(x)[-1].mean(axis=(2, 3, 4))))


HEAD_PREFIXES = ("Logits.", "fc.", "norm.")  # the classifier's parameters, in either network


def build_net(m: dict, num_classes: int, precision: str = "fp32"):
    """I3D with a `num_classes` head, as the config's `model` section describes it, for
    training in `precision` (fp16: the convolution kernel of mixed precision, see
    `kernels.choose`)."""
    conv = kernels.choose(m["conv"], "float16" if precision == "fp16" else "float32")
    if m["final_endpoint"] == "Logits":
        return InceptionI3d(num_classes, variant(m), head=m["head"],
                            dropout_keep_prob=m["dropout_keep_prob"], conv=conv)
    return ProbedI3d(num_classes, variant(m), m["final_endpoint"], conv)


def to_input(clips, flip=None, dtype=ms.float32):
    """uint8 clips (B, T, H, W, 3), as the datasets deliver them -> the network's input
    (B, 3, T, H, W) in [-1, 1]: x / 127.5 - 1 as DeepMind scales (numpy's result bit for bit),
    the clips where `flip` (B,) is true mirrored; on the device, so the host moves a quarter of
    the bytes and does not copy them backwards. `dtype` float64 for the parity runs."""
    x = clips.astype(dtype).transpose(0, 4, 1, 2, 3) / 127.5 - 1.0
    if flip is None:
        return x
    return ops.select(flip.reshape(-1, 1, 1, 1, 1), ops.flip(x, (4,)), x)
