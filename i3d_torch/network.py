"""The network a training config asks for, in torch: the whole I3D, or I3D cut at an earlier
end point with a pooled linear probe, as `i3d_ms.network` builds them; and the names its
tensors have in a training checkpoint (the MindSpore twin's, `recipe.checkpoints`)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from convert import architecture as arch
from convert import names
from recipe.checkpoints import HEAD_PREFIXES, check

from .model import InceptionI3d

# the probe's tensors: torch name -> MindSpore name
_PROBE = {"norm.running_mean": "norm.moving_mean", "norm.running_var": "norm.moving_variance",
          "fc.weight": "fc.weight", "fc.bias": "fc.bias"}


class ProbedI3d(InceptionI3d):
    """I3D up to `final_endpoint`, then a global average pool, a BatchNorm (no affine; torch's
    momentum 0.1 is MindSpore's 0.9) and a Linear head."""

    def __init__(self, num_classes: int, variant: arch.Variant, final_endpoint: str):
        super().__init__(num_classes, variant, final_endpoint)
        width = arch.channels(final_endpoint)
        self.norm = nn.BatchNorm1d(width, momentum=0.1, affine=False)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        for _, out in self._walk(x):
            pass
        return self.fc(self.norm(out.mean(dim=(2, 3, 4))))


def build_net(m: dict, num_classes: int, variant: arch.Variant) -> InceptionI3d:
    """I3D with a fresh `num_classes` head, as the config's `model` section describes it."""
    if m["final_endpoint"] == "Logits":
        return InceptionI3d(num_classes, variant, head=m["head"],
                            dropout_keep_prob=m["dropout_keep_prob"])
    return ProbedI3d(num_classes, variant, m["final_endpoint"])


def mindspore_names(net: InceptionI3d) -> dict:
    """{torch state_dict key: the MindSpore twin's name} of every tensor a checkpoint holds
    (the layouts are the same: `convert.names`)."""
    own = net.state_dict()
    bn_scale = any(k.endswith(".bn.weight") for k in own)
    ms = {(u.name, p): k for k, (u, p) in names.keys("mindspore", net.num_classes, bn_scale).items()}
    out = {k: ms[u.name, p] for k, (u, p) in names.keys("torch", net.num_classes, bn_scale).items()
           if k in own}
    out.update({k: v for k, v in _PROBE.items() if k in own})
    return out


def load_state(net: InceptionI3d, flat: dict, source: str = "checkpoint") -> dict:
    """Every tensor of `net` from a training checkpoint (`recipe.checkpoints`' names), each
    checked first; returns the names used, {torch key: checkpoint name}."""
    own, names_ = net.state_dict(), mindspore_names(net)
    check(flat, {name: own[k].shape for k, name in names_.items()}, source)
    with torch.no_grad():
        for k, name in names_.items():
            own[k].copy_(torch.from_numpy(np.asarray(flat[name])))
    return names_


def load_trunk(net: InceptionI3d, weights: dict, keep_head: bool, source: str):
    """Canonical weights into `net`: every tensor of the trunk (the classifier too with
    `keep_head`, then with the same classes), nothing left at its initial value unsaid."""
    from convert.errors import I3DError
    from convert.weights import num_classes

    from .model import state_dict_from

    if keep_head and num_classes(weights) != net.num_classes:
        raise I3DError(f"{source}: its classifier has {num_classes(weights)} classes, the "
                       f"configured head {net.num_classes}")
    given = state_dict_from(weights)
    own = net.state_dict()
    take = {k: v for k, v in given.items()
            if k in own and (keep_head or not k.startswith(HEAD_PREFIXES))}
    lacking = [k for k in own if k not in take and not k.endswith("num_batches_tracked")
               and (keep_head or not k.startswith(HEAD_PREFIXES))]
    if lacking:
        raise I3DError(f"{source}: lacks {len(lacking)} tensors of the network ({lacking[0]}, ...)")
    with torch.no_grad():
        for k, v in take.items():
            if tuple(v.shape) != tuple(own[k].shape):
                raise I3DError(f"{source}: {k} has shape {tuple(v.shape)}, the network "
                               f"{tuple(own[k].shape)}")
            own[k].copy_(v)
