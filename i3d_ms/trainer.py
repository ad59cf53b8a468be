"""One optimizer step of the MindSpore twin, on one device or many, and its state.

- The learning rate is a pure function of the step (linear warmup, then cosine), handed to the
  optimizer whole and indexed by its step counter, which a resume restores and a skipped
  (overflowing) step advances: it never depends on the loss scale. Its peak scales linearly
  with the global batch (`scaled_lr`): train.lr is the rate for a global batch of
  train.lr_batch clips (Goyal et al.'s rule, with the warmup it needs).
- Clips arrive as uint8 (B, T, H, W, 3); the step scales them to the network's [-1, 1] input on
  the device (`network.to_input`).
- Loss scaling is done right: the loss is multiplied by the scale, the gradients are divided by
  it (after the all-reduce), non-finite steps are skipped and the scale backs off.
- `state()` holds weights, BN statistics, momentum buffers, the step and the loss scale, so a
  resumed run continues the uninterrupted one exactly.
"""
from __future__ import annotations

import os

import mindspore as ms
import numpy as np
from mindspore import amp, nn, ops

from convert.errors import I3DError
from recipe.schedule import learning_rate, scaled_lr  # noqa: F401  (shared with torch's)

from .checkpoint import set_all
from .model import BatchNorm
from .network import to_input


class Trainer:
    """Network, optimizer, loss scaler and the compiled step; `state()`/`restore()` for
    checkpoints."""

    def __init__(self, net, t: dict, world: int = 1, freeze_bn: bool = False):
        t = scaled_lr(t, world)
        self.net, self.t = net, t
        # Frozen BN: the trunk normalises with its running statistics while training too, as
        # fine-tuning with small per-device batches wants (train and eval then see one network).
        self.frozen = [c for _, c in net.cells_and_names() if isinstance(c, BatchNorm)] if freeze_bn else []
        self.grad_norm = float("nan")
        # fp16: MindSpore's 'auto' level runs its white list (convolutions, matmuls) in fp16 and
        # keeps BN, reductions and the loss in fp32; the parameters stay fp32 (master weights).
        model = amp.auto_mixed_precision(net, "auto", ms.float16) if t["precision"] == "fp16" else net
        params = net.trainable_params()
        dtype = params[0].dtype  # float64: the training parity's exact runs
        decay = [p for p in params if p.name.endswith("weight")]
        rest = [p for p in params if not p.name.endswith("weight")]
        # The whole schedule goes in, indexed by the optimizer's global_step (restored on resume;
        # advanced on skipped steps too). Setting a learning-rate Parameter between steps does
        # not work: pynative MindSpore keeps the value it first ran with.
        self.schedule = np.array([learning_rate(s, t) for s in range(t["steps"])],
                                 np.float64 if dtype == ms.float64 else np.float32)
        self.opt = nn.Momentum([{"params": decay, "weight_decay": t["weight_decay"]},
                                {"params": rest, "weight_decay": 0.0}],
                               learning_rate=ms.Tensor(self.schedule), momentum=t["momentum"])
        if t["loss_scale"] == "dynamic":
            self.scaler = amp.DynamicLossScaler(t["loss_scale_init"], 2, t["loss_scale_window"])
        elif t["loss_scale"] == "none":
            self.scaler = None
        else:
            raise I3DError(f"train.loss_scale must be dynamic or none, got {t['loss_scale']!r}")
        self.reducer = nn.DistributedGradReducer(self.opt.parameters, True, world) if world > 1 else None
        fused = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        scaler, clip = self.scaler, float(t["clip_norm"])
        clip_value = ms.Tensor(clip, dtype)  # float64 runs: a float64 scalar

        def loss_fn(logits, y):
            if dtype != ms.float64:
                return fused(logits.astype(ms.float32), y)
            on, off = ops.ones((), ms.float32), ops.zeros((), ms.float32)  # OneHot: no float64
            return cross_entropy64(logits, ops.one_hot(y, logits.shape[1], on, off).astype(dtype))

        def forward(x, y, flip):
            logits = model(to_input(x, flip, dtype))
            loss = loss_fn(logits, y)
            return (loss if scaler is None else scaler.scale(loss)), loss, logits

        grad_fn = ms.value_and_grad(forward, None, self.opt.parameters, has_aux=True)
        reducer, opt = self.reducer, self.opt
        if dtype == ms.float64:  # nn.Momentum's CPU kernel updates float64 at float32 precision
            opt = _Float64Momentum(self.opt, {p.name for p in decay}, t, self.schedule)

        def step(x, y, flip):
            (_, loss, logits), grads = grad_fn(x, y, flip)
            if reducer is not None:
                grads = reducer(grads)
            finite = ops.ones((), ms.bool_)
            if scaler is not None:
                grads = scaler.unscale(grads)
                finite = amp.all_finite(grads)
                scaler.adjust(finite)
            norm = global_norm(grads)  # the log's, the parity report's and the clip's
            if finite:
                if clip > 0:
                    grads = clip_by_norm(grads, norm, clip_value)
                opt(grads)
            else:  # skipped, but the schedule moves on: lr stays a function of the step
                ops.assign_add(opt.global_step, ops.ones((1,), ms.int32))
            return loss, logits, finite, norm

        self.step_fn = ms.jit(step) if t["mode"] == "graph" else step

    def step(self, x, y, flip=None):
        """One optimizer step on uint8 clips x (B, T, H, W, 3), those where `flip` mirrored, at
        the lr of `schedule[global_step]`: (loss, logits, finite); `grad_norm` is then the
        global norm of its (unscaled, unclipped) gradients."""
        self.net.set_train(True)
        for cell in self.frozen:
            cell.set_train(False)
        flip = np.zeros(len(x), np.bool_) if flip is None else flip
        loss, logits, finite, norm = self.step_fn(ms.Tensor(x), ms.Tensor(y), ms.Tensor(flip))
        self.grad_norm = float(norm.asnumpy())
        return float(loss.asnumpy()), logits.asnumpy(), bool(finite.asnumpy())

    @property
    def variant(self):
        return self.net.variant

    def loss_scale(self):
        """The dynamic loss scale now, None without scaling."""
        return None if self.scaler is None else float(self.scaler.scale_value.asnumpy())

    def state(self, step: int) -> dict:
        """Everything a resume needs, as numpy, in `recipe.checkpoints`' layout: net, momentum
        buffers, step, loss scale."""
        out = {p.name: p.asnumpy() for p in self.net.get_parameters()}
        out.update({p.name: p.asnumpy() for p in self.opt.moments})
        out["global_step"] = np.array([step], np.int64)
        if self.scaler is not None:
            out["scale_sense"] = np.array([self.scaler.scale_value.asnumpy(),
                                           self.scaler.counter.asnumpy()], np.float32)
        return out

    def restore(self, flat: dict) -> int:
        set_all([*self.net.get_parameters(), *self.opt.moments], flat, "checkpoint")
        self.opt.global_step.set_data(ms.Tensor(flat["global_step"].astype(np.int32)))
        if self.scaler is not None and "scale_sense" in flat:
            self.scaler.scale_value.set_data(ms.Tensor(flat["scale_sense"][0], ms.float32))
            self.scaler.counter.set_data(ms.Tensor(int(flat["scale_sense"][1]), ms.int32))
        return int(flat["global_step"][0])


class _Float64Momentum:
    """`nn.Momentum`'s update written out, on its own parameters, moments and step counter
    (so `state`/`restore` are unchanged): g + wd * w (the decayed group), v = m v + g,
    w -= lr[step] v. MindSpore 2.10's CPU ApplyMomentum rounds float64 parameters to float32
    (an update off by ~1e-3 of itself), and the optimizer keeps its learning rates in float32
    (a fresh head's weights 5e-9 off after one step), which the training parity's exact runs
    cannot have: the schedule is indexed here, in float64."""

    def __init__(self, opt, decayed: set, t: dict, schedule):
        # float64 tensors: MindSpore makes a Python float times a float64 tensor a float32
        # scalar (0.9 -> 0.89999998)
        f64 = ms.float64
        self.opt, self.momentum = opt, ms.Tensor(t["momentum"], f64)
        self.wd = [ms.Tensor(t["weight_decay"], f64) if p.name in decayed else None
                   for p in opt.parameters]
        self.global_step, self.lrs = opt.global_step, ms.Tensor(schedule, f64)

    def __call__(self, grads):
        momentum_step64(self.opt.parameters, self.opt.moments, grads,
                        self.lrs[self.global_step[0]], self.momentum, self.wd)
        ops.assign_add(self.global_step, ops.ones((1,), ms.int32))


def cross_entropy64(logits, onehot):
    """Mean cross entropy written out for float64: the fused op takes no float64, and
    ops.log_softmax computes float64 at float32's precision (5e-6 off) on the CPU."""
    z = logits - ops.stop_gradient(logits.max(1, keepdims=True))
    return -((z - ops.log(ops.exp(z).sum(1, keepdims=True))) * onehot).sum(1).mean()


def global_norm(grads):
    """sqrt(sum of every gradient's squares), in the gradients' dtype."""
    return ops.sqrt(ops.addn([(g * g).sum() for g in grads]))


def clip_by_norm(grads, norm, clip):
    """`ops.clip_by_global_norm`'s rule, g * clip / max(norm, clip), on the norm the step has
    computed anyway (MindSpore's own computes the norm of float64 gradients at float32's
    precision: every gradient 1e-8 off)."""
    factor = clip / ops.maximum(norm, clip)
    return tuple(g * factor for g in grads)


def momentum_step64(params, moments, grads, lr, momentum, decays):
    """nn.Momentum's update in float64 (g + wd w; v = m v + g; w -= lr v): its CPU kernel
    rounds float64 parameters to float32. `lr`, `momentum` and each decay (None: no decay)
    are float64 tensors: a Python float times a float64 tensor is a float32 scalar here."""
    for p, v, g, wd in zip(params, moments, grads, decays):
        if wd is not None:
            g = g + wd * p
        ops.assign(v, v * momentum + g)
        ops.assign(p, p - lr * v)


def distributed():
    """(rank, world): msrun's workers join the collective; a plain process is rank 0 of 1."""
    if "MS_ROLE" not in os.environ and "RANK_SIZE" not in os.environ:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init

    init()
    world = get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                 gradients_mean=True, device_num=world)
    return get_rank(), world
