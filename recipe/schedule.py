"""The recipe's numbers, one definition for both frameworks' loops."""
from __future__ import annotations

import math


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
