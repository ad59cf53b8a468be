"""One optimizer step of the torch twin under the MindSpore loop's recipe (`i3d_ms.trainer`),
step for step: the same schedule (`recipe.schedule`, indexed by the step, skipped steps
included), weight decay on the convolution weights alone (`recipe.schedule.decayed`: torch's
SGD would decay BatchNorm's beta too), momentum as MindSpore's (v = m v + g; w -= lr v),
clipping by global norm with MindSpore's factor (no epsilon), uint8 clips scaled and mirrored
as `i3d_ms.network.to_input` does, frozen BatchNorm in eval mode, and mixed precision as
MindSpore's: fp16 convolutions and matmuls (autocast), float32 master weights, a dynamic loss
scale with MindSpore's rule and starting value (bf16, torch's alone, as the bench runs on GPUs:
no scale needed) (`recipe.schedule.adjust_loss_scale`; torch's
GradScaler starts at 2^16 and grows every 2000 steps). `state`/`restore` speak the training
checkpoint's layout (`recipe.checkpoints`), so either loop resumes the other's.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from convert import names
from convert.errors import I3DError
from recipe import checkpoints
from recipe.schedule import adjust_loss_scale, clip_scale, decayed, learning_rate, scaled_lr

from .model import BatchNorm
from .network import _PROBE, load_state, mindspore_names

# train.precision -> (the parameters' dtype, autocast's or None)
DTYPES = {"fp32": torch.float32, "fp16": torch.float32, "bf16": torch.float32,
          "fp64": torch.float64}
AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def to_input(clips, flip=None, dtype=torch.float32, device="cpu"):
    """uint8 clips (B, T, H, W, 3) -> (B, 3, T, H, W) in [-1, 1] (x / 127.5 - 1), the clips
    where `flip` is true mirrored in W; the uint8 bytes travel, the device scales."""
    x = torch.as_tensor(clips).to(device).to(dtype).permute(0, 4, 1, 2, 3) / 127.5 - 1.0
    if flip is not None and np.any(flip):
        f = torch.as_tensor(np.asarray(flip, bool), device=device).reshape(-1, 1, 1, 1, 1)
        x = torch.where(f, x.flip(4), x)
    return x.contiguous()


# What people porting the recipe to torch get wrong, each reintroducible on the torch side for
# the training parity report to catch (`i3d parity --training --pitfall NAME`):
PITFALLS = {
    "decay_all": "weight decay on every parameter (torch SGD's default; MindSpore's recipe "
                 "exempts BatchNorm's beta and the biases)",
    "bn_momentum": "MindSpore's BatchNorm momentum (0.999, the old statistics' weight) given to "
                   "torch (where momentum is the new batch's weight)",
    "epoch_schedule": "the learning rate stepped once per epoch instead of every step",
    "clip_epsilon": "clip_grad_norm_'s factor clip / (norm + 1e-6) instead of MindSpore's "
                    "clip / max(norm, clip)",
    "loss_scale_init": "GradScaler's loss scale (2^16, doubled every 2000 steps) instead of "
                       "the config's (MindSpore's DynamicLossScaler)",
    "dropout_keep_prob": "model.dropout_keep_prob given to torch's Dropout (whose p is the "
                         "probability of dropping)",
}


class TorchTrainer:
    """The torch network (built, weights in), its optimizer and the step. `pitfalls`:
    {name: value} of `PITFALLS` to reintroduce ('epoch_schedule' takes the steps per epoch).
    `ddp`: the DistributedDataParallel wrapper of `net` under torchrun."""

    def __init__(self, net, t: dict, world: int = 1, freeze_bn: bool = False,
                 device: str = "cpu", ddp=None, pitfalls: dict | None = None):
        self.t, self.device, self.world = scaled_lr(t, world), torch.device(device), world
        self.dtype = DTYPES[t["precision"]]
        self.net = net.to(self.device, self.dtype)
        if self.device.type == "cuda":  # as the bench runs it: cuDNN's channels-last kernels
            self.net = self.net.to(memory_format=torch.channels_last_3d)
        self.model = ddp(self.net) if ddp is not None else self.net
        self.frozen = [m for m in net.modules() if isinstance(m, BatchNorm)] if freeze_bn else []
        self.pitfalls, self.grad_norm = dict(pitfalls or {}), float("nan")
        decay_all = "decay_all" in self.pitfalls
        if "dropout_keep_prob" in self.pitfalls:
            for m in net.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = 1 - m.p
        if "bn_momentum" in self.pitfalls:
            for m in net.modules():
                if isinstance(m, (BatchNorm, torch.nn.BatchNorm1d)):
                    m.momentum = 1 - m.momentum
        roles = names.keys("torch", net.num_classes, any(k.endswith(".bn.weight")
                                                         for k in net.state_dict()))
        decay, rest = [], []
        for name, p in self.net.named_parameters():
            role = roles[name][1] if name in roles else ("w" if name.endswith("weight") else "b")
            (decay if decay_all or decayed(role) else rest).append(p)
        self.schedule = np.array([learning_rate(s, self.t) for s in range(self.t["steps"])])
        self.opt = torch.optim.SGD([{"params": decay, "weight_decay": self.t["weight_decay"]},
                                    {"params": rest, "weight_decay": 0.0}],
                                   lr=float(self.schedule[0]), momentum=self.t["momentum"])
        self.scale = float(self.t["loss_scale_init"]) if self.t["loss_scale"] == "dynamic" else None
        self.window = self.t["loss_scale_window"]
        if self.scale is not None and "loss_scale_init" in self.pitfalls:
            self.scale, self.window = 2.0 ** 16, 2000
        self.counter, self.global_step = 0, 0
        self.names = mindspore_names(self.net)

    def lr(self, step: int) -> float:
        """The learning rate the step `step` runs at."""
        every = self.pitfalls.get("epoch_schedule")
        return float(self.schedule[step - step % every if every else step])

    @property
    def variant(self):
        return self.net.variant

    def loss_scale(self):
        return self.scale

    def _autocast(self):
        dtype = AUTOCAST.get(self.t["precision"])
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def step(self, x, y, flip=None) -> tuple:
        """One step on uint8 clips x (B, T, H, W, 3) at `schedule[global_step]`:
        (loss, logits, finite)."""
        self.net.train()
        for m in self.frozen:
            m.eval()
        x = to_input(x, flip, self.dtype, self.device)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with self._autocast():
            logits = self.model(x)
        target = torch.as_tensor(np.asarray(y), dtype=torch.long, device=self.device)
        loss = torch.nn.functional.cross_entropy(logits.to(self.dtype), target)
        self.opt.zero_grad(set_to_none=True)
        (loss if self.scale is None else loss * self.scale).backward()  # DDP: grads averaged
        grads = [p.grad for g in self.opt.param_groups for p in g["params"] if p.grad is not None]
        finite = True
        if self.scale is not None:
            for g in grads:
                g.div_(self.scale)
            finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
            self.scale, self.counter = adjust_loss_scale(self.scale, self.counter, finite, 2,
                                                         self.window)
        self.grad_norm = float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads])))
        if finite:
            clip = float(self.t["clip_norm"])
            if clip > 0:
                factor = (clip / (self.grad_norm + 1e-6) if "clip_epsilon" in self.pitfalls
                          else clip_scale(self.grad_norm, clip))
                if factor < 1:
                    for g in grads:
                        g.mul_(factor)
            for group in self.opt.param_groups:
                group["lr"] = self.lr(self.global_step)
            self.opt.step()
        self.global_step += 1  # a skipped step moves the schedule on, as MindSpore's does
        return float(loss.detach()), logits.detach().float().cpu().numpy(), finite

    def state(self, step: int) -> dict:
        """The training checkpoint (`recipe.checkpoints`): tensors under the MindSpore twin's
        names, momentum buffers as moments.NAME, the step, the loss scale."""
        own = self.net.state_dict()
        out = {self.names[k]: own[k].detach().cpu().numpy().copy() for k in self.names}
        dtype = next(iter(out.values())).dtype
        params = dict(self.net.named_parameters())
        for k, p in params.items():
            buf = self.opt.state.get(p, {}).get("momentum_buffer")
            out["moments." + self.names[k]] = (np.zeros(tuple(p.shape), dtype) if buf is None
                                               else buf.detach().cpu().numpy().copy())
        out["global_step"] = np.array([step], np.int64)
        if self.scale is not None:
            out["scale_sense"] = np.array([self.scale, self.counter], np.float32)
        return out

    def restore(self, flat: dict) -> int:
        """A training checkpoint of either loop into this one; returns its step."""
        params = dict(self.net.named_parameters())
        checkpoints.check(flat, {"moments." + self.names[k]: p.shape for k, p in params.items()})
        load_state(self.net, flat)
        for k, p in params.items():
            self.opt.state[p]["momentum_buffer"] = torch.from_numpy(
                np.array(flat["moments." + self.names[k]])).to(self.device, self.dtype)
        self.global_step = int(flat["global_step"][0])
        if self.scale is not None and "scale_sense" in flat:
            self.scale, self.counter = float(flat["scale_sense"][0]), int(flat["scale_sense"][1])
        return self.global_step

    def canonical(self) -> dict:
        """{'unit:param': numpy} of the weights and BN statistics, the parity report's keys."""
        weights = {k: v.detach().double().cpu().numpy() for k, v in self.net.state_dict().items()}
        n = self.net.num_classes
        bn_scale = any(k.endswith("bn.weight") for k in weights)
        out = {f"{u.name}:{p}": weights[k] for k, (u, p) in names.keys("torch", n, bn_scale).items()
               if k in weights}
        out.update({f"probe:{v}": weights[k] for k, v in _PROBE.items() if k in weights})
        return out


def check_device(device: str) -> str:
    """train.device -> torch's device name; a GPU asked for where torch sees none is refused."""
    if device == "CPU":
        return "cpu"
    if device == "GPU":
        if not torch.cuda.is_available():
            raise I3DError("train.device GPU: torch sees no CUDA device here (train.device=CPU?)")
        return "cuda"
    raise I3DError(f"train.device {device}: the torch loop runs on CPU or GPU")
