"""The recipe's numbers, one definition for both frameworks' loops (numpy only)."""
from __future__ import annotations

import math

import numpy as np


def scaled_lr(t: dict, world: int = 1) -> dict:
    """`t` with lr and final_lr scaled to the global batch: lr x batch_size x world / lr_batch
    (unchanged when lr_batch is unset)."""
    if not t.get("lr_batch"):
        return t
    k = t["batch_size"] * world / t["lr_batch"]
    return {**t, "lr": t["lr"] * k, "final_lr": t["final_lr"] * k}


def learning_rate(step: int, t: dict) -> float:
    """Linear warmup from lr/warmup to lr, then cosine decay to final_lr at the last step."""
    if step < t["warmup_steps"]:
        return t["lr"] * (step + 1) / t["warmup_steps"]
    span = max(t["steps"] - t["warmup_steps"], 1)
    p = min((step - t["warmup_steps"]) / span, 1.0)
    return t["final_lr"] + (t["lr"] - t["final_lr"]) * 0.5 * (1 + math.cos(math.pi * p))


def decayed(param: str) -> bool:
    """Whether a canonical parameter (`convert.names.unit_params`) takes weight decay: the
    convolution weights alone, as MindSpore's `nn.Momentum` recipes group them (BatchNorm's
    beta and gamma and the logits' bias are exempt; torch's SGD would decay every one)."""
    return param == "w"


def clip_scale(global_norm: float, clip: float) -> float:
    """The factor MindSpore's `clip_by_global_norm` multiplies every gradient by:
    clip / max(norm, clip), no epsilon (torch's `clip_grad_norm_` adds 1e-6 to the norm)."""
    return clip / max(global_norm, clip)


def adjust_loss_scale(scale: float, counter: int, finite: bool, factor: int, window: int) -> tuple:
    """(scale, counter) after a step, as MindSpore's `DynamicLossScaler.adjust` computes them
    (in float32): an overflowing step divides the scale by `factor` (not below 1) and restarts
    the count; the `window`-th finite step in a row multiplies it by `factor` (if finite)."""
    scale = np.float32(scale)
    if not finite:
        return float(max(np.float32(1), scale / np.float32(factor))), 0
    if counter == window - 1 and np.isfinite(scale * np.float32(factor)):
        scale = scale * np.float32(factor)
    return float(scale), (counter + 1) % window
