"""One optimizer step of the torch twin under the MindSpore loop's recipe (`i3d_ms.trainer`),
step for step: the same schedule (`recipe.schedule`, indexed by the step), weight decay on the
convolution weights alone (`recipe.schedule.decayed`: torch's SGD would decay BatchNorm's beta
too), momentum as MindSpore's (v = m v + g; w -= lr v), clipping by global norm with
MindSpore's factor (no epsilon), uint8 clips scaled and mirrored as `i3d_ms.network.to_input`
does, frozen BatchNorm in eval mode. float32 and float64; mixed precision is not here yet.
"""
from __future__ import annotations

import numpy as np
import torch

from convert import names
from convert.weights import has_bn_scale, num_classes
from recipe.schedule import clip_scale, decayed, learning_rate, scaled_lr

from .model import BatchNorm, build


def to_input(clips, flip=None, dtype=torch.float32):
    """uint8 clips (B, T, H, W, 3) -> (B, 3, T, H, W) in [-1, 1] (x / 127.5 - 1), the clips
    where `flip` is true mirrored in W."""
    x = torch.as_tensor(clips).to(dtype).permute(0, 4, 1, 2, 3) / 127.5 - 1.0
    if flip is not None and np.any(flip):
        f = torch.as_tensor(np.asarray(flip, bool)).reshape(-1, 1, 1, 1, 1)
        x = torch.where(f, x.flip(4), x)
    return x.contiguous()


class TorchTrainer:
    """The torch twin, its optimizer and the step; `decay_all` reintroduces torch's default
    (weight decay on every parameter), for the parity report to catch."""

    def __init__(self, weights: dict, variant, t: dict, world: int = 1, freeze_bn: bool = False,
                 dtype=torch.float32, decay_all: bool = False, **model_kw):
        if t["precision"] != "fp32" or t["loss_scale"] != "none":
            raise ValueError("the torch recipe step runs fp32 without loss scaling (for now)")
        self.t, self.dtype = scaled_lr(t, world), dtype
        self.net = build(weights, variant, **model_kw).to(dtype)
        self.frozen = [m for m in self.net.modules() if isinstance(m, BatchNorm)] if freeze_bn else []
        roles = names.keys("torch", num_classes(weights), has_bn_scale(weights))
        decay, rest = [], []
        for name, p in self.net.named_parameters():
            (decay if decay_all or decayed(roles[name][1]) else rest).append(p)
        self.schedule = np.array([learning_rate(s, self.t) for s in range(self.t["steps"])])
        self.opt = torch.optim.SGD([{"params": decay, "weight_decay": self.t["weight_decay"]},
                                    {"params": rest, "weight_decay": 0.0}],
                                   lr=float(self.schedule[0]), momentum=self.t["momentum"])
        self.global_step = 0

    def step(self, x, y, flip=None) -> tuple:
        """One step on uint8 clips x (B, T, H, W, 3) at `schedule[global_step]`:
        (loss, logits, finite)."""
        self.net.train()
        for m in self.frozen:
            m.eval()
        logits = self.net(to_input(x, flip, self.dtype))
        loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(y, dtype=torch.long))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for g in self.opt.param_groups for p in g["params"] if p.grad is not None]
        clip = float(self.t["clip_norm"])
        if clip > 0:
            norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
            factor = clip_scale(norm, clip)
            for g in grads:
                g.mul_(factor)
        for group in self.opt.param_groups:
            group["lr"] = float(self.schedule[self.global_step])
        self.opt.step()
        self.global_step += 1
        return float(loss.detach()), logits.detach().numpy(), True

    def canonical(self) -> dict:
        """{'unit:param': numpy} of the weights and BN statistics, the parity report's keys."""
        weights = {k: v.detach().double().numpy() for k, v in self.net.state_dict().items()}
        n = self.net.num_classes
        bn_scale = any(k.endswith("bn.weight") for k in weights)
        return {f"{u.name}:{p}": weights[k] for k, (u, p) in names.keys("torch", n, bn_scale).items()
                if k in weights}
