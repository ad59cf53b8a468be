"""Training and evaluation settings: the defaults, a YAML file over them, `section.key=value`
overrides over that."""
from __future__ import annotations

import copy
import os

import yaml

from convert import architecture as arch
from convert.errors import I3DError

DEFAULTS = {
    "data": {"root": None, "train": None, "val": None, "frames": 64, "stride": 1, "resize": 256,
             "crop": 224, "scales": [1.0, 0.875, 0.75], "flip": True, "clips": 10,
             "workers": "auto"},
    "model": {"weights": "default", "num_classes": None, "final_endpoint": "Logits",
              "head": "deepmind", "dropout_keep_prob": 0.5, "variant": "deepmind",
              "freeze_bn": False, "conv": "auto"},
    "train": {"device": "CPU", "mode": "graph", "precision": "fp32", "loss_scale": "none",
              "loss_scale_init": 65536.0, "loss_scale_window": 1000, "steps": 1000,
              "batch_size": 8, "lr": 0.01, "lr_batch": None, "momentum": 0.9,
              "weight_decay": 1e-4,
              "warmup_steps": 100, "final_lr": 0.0, "clip_norm": 1.0, "seed": 0,
              "checkpoint_every": 500, "keep_checkpoints": 3, "eval_every": 0, "log_every": 1,
              "out": "runs/i3d"},
    "eval": {"protocol": "centre", "batch_clips": 30, "max_frames": 300},
}


def load_config(path: str | None, overrides=()) -> dict:
    """DEFAULTS, updated by the YAML file, updated by `section.key=value` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        if not os.path.isfile(path):
            raise I3DError(f"{path}: no such config file")
        with open(path) as f:
            user = yaml.safe_load(f) or {}
        for section, values in user.items():
            if section not in cfg or not isinstance(values, dict):
                raise I3DError(f"{path}: unknown section {section!r} (known: {', '.join(cfg)})")
            for k, v in values.items():
                _set(cfg, f"{section}.{k}", v, path)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise I3DError(f"override {item!r}: expected section.key=value")
        _set(cfg, key, yaml.safe_load(value), "override")
    return cfg


def _set(cfg, key, value, where):
    section, _, name = key.partition(".")
    if section not in cfg or name not in cfg[section]:
        raise I3DError(f"{where}: unknown setting {key!r}")
    cfg[section][name] = value


def variant(model: dict) -> arch.Variant:
    """The numerical variant that `model.variant` names (a name or the custom form)."""
    try:
        return arch.variant(str(model["variant"]))
    except ValueError as e:
        raise I3DError(f"model.variant: {e}") from None
