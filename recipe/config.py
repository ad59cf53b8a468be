"""Training and evaluation settings: the defaults, a YAML file over them, `section.key=value`
overrides over that."""
from __future__ import annotations

import copy
import math
import reprlib

import yaml

from convert import architecture as arch
from convert.errors import I3DError, printable
from convert.fileio import read_prefix
from i3d_video.clips import PROTOCOLS
from i3d_video.decode import MAX_FRAMES

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


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few hundred bytes; more is not one
# A bad value as errors show it: a few items of a few levels (YAML aliases can nest a small
# file's lists into billions of items, which a plain repr would spell out)
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring = 2, 4, 4, 60


def _int(low, high=None, none=False, words=()):
    """An integer in [low, high] (not a bool), or None with `none`, or one of `words`."""
    def check(v):
        ok = v in words or (none and v is None) or (
            isinstance(v, int) and not isinstance(v, bool) and low <= v <= (high or v))
        what = f"a whole number >= {low}" + (f" and <= {high}" if high else "")
        return None if ok else " or ".join([what, *map(repr, words)] + (["null"] if none else []))
    return check


def _num(low, high=None, low_open=False):
    """A finite number in [low, high] (low excluded with `low_open`)."""
    def check(v):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (
            v > low if low_open else v >= low) and (high is None or v <= high)
        return None if ok else (f"a number {'>' if low_open else '>='} {low}"
                                + (f" and <= {high}" if high is not None else ""))
    return check


def _one_of(*choices):
    return lambda v: None if v in choices else "one of " + ", ".join(map(str, choices))


def _text(none=True):
    return lambda v: None if isinstance(v, str) or (none and v is None) else "a text" + (
        " or null" if none else "")


def _flag(v):
    return None if isinstance(v, bool) else "true or false"


def _scales(v):
    ok = isinstance(v, list) and v and all(_num(0, low_open=True)(x) is None for x in v)
    return None if ok else "a non-empty list of numbers > 0"


SETTINGS = {  # section.key: the check of its value (None when good, else what it must be)
    "data.root": _text(), "data.train": _text(), "data.val": _text(),
    # sizes that become allocations are bounded too: a clip decodes at most MAX_FRAMES frames
    "data.frames": _int(1, MAX_FRAMES), "data.stride": _int(1), "data.resize": _int(1, 4096),
    "data.crop": _int(1, 4096), "data.scales": _scales, "data.flip": _flag,
    "data.clips": _int(1, 1000), "data.workers": _int(1, words=("auto",)),
    "model.weights": _text(), "model.num_classes": _int(1, none=True),
    "model.final_endpoint": _one_of(*arch.END_POINTS[:-1]),
    "model.head": _one_of("deepmind", "global"), "model.dropout_keep_prob": _num(0, 1, True),
    "model.variant": _text(none=False), "model.freeze_bn": _flag,
    "model.conv": _one_of("auto", "native", "matmul"),
    "train.device": _one_of("CPU", "GPU", "Ascend"), "train.mode": _one_of("graph", "pynative"),
    "train.precision": _one_of("fp32", "fp16", "bf16", "fp64"), "train.loss_scale": _one_of("dynamic", "none"),
    "train.loss_scale_init": _num(0, low_open=True), "train.loss_scale_window": _int(1),
    "train.steps": _int(1), "train.batch_size": _int(1), "train.lr": _num(0),
    "train.lr_batch": _int(1, none=True), "train.momentum": _num(0, 1),
    "train.weight_decay": _num(0), "train.warmup_steps": _int(0), "train.final_lr": _num(0),
    "train.clip_norm": _num(0), "train.seed": _int(0), "train.checkpoint_every": _int(0),
    "train.keep_checkpoints": _int(0), "train.eval_every": _int(0), "train.log_every": _int(1),
    "train.out": _text(none=False),
    "eval.protocol": _one_of(*PROTOCOLS), "eval.batch_clips": _int(1),
    "eval.max_frames": _int(1, MAX_FRAMES),
}


def load_config(path: str | None, overrides=()) -> dict:
    """DEFAULTS, updated by the YAML file, updated by `section.key=value` overrides; every
    value checked before anything runs (an error names the file or override and the key)."""
    cfg, origin = copy.deepcopy(DEFAULTS), {}
    if path:
        user = _read_yaml(path)
        for section, values in user.items():
            if section not in cfg or not isinstance(values, dict):
                raise I3DError(f"{path}: unknown section {printable(section)!r} "
                               f"(known: {', '.join(cfg)})")
            for k, v in values.items():
                _set(cfg, f"{section}.{k}", v, path, origin)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise I3DError(f"override {printable(item)!r}: expected section.key=value")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise I3DError(f"override {printable(item)!r}: not a YAML value "
                           f"({printable(getattr(e, 'problem', None) or e)})") from None
        _set(cfg, key, parsed, f"override {printable(item)!r}", origin)
    _check(cfg, origin)
    return cfg


def _read_yaml(path: str) -> dict:
    """The file's mapping of sections; a YAML error names its line."""
    blob = read_prefix(path, MAX_CONFIG_BYTES + 1)
    if len(blob) > MAX_CONFIG_BYTES:
        raise I3DError(f"{path}: more than {MAX_CONFIG_BYTES} bytes: not a config file")
    try:
        user = yaml.safe_load(blob.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise I3DError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise I3DError(f"{where}: YAML error: {printable(getattr(e, 'problem', None) or e)}") from None
    if user is None:
        return {}
    if not isinstance(user, dict):
        raise I3DError(f"{path}: expected sections (data:, model:, train:, eval:), got a "
                       f"{type(user).__name__}")
    return user


def _set(cfg, key, value, where, origin):
    section, _, name = str(key).partition(".")
    if section not in cfg or name not in cfg[section]:
        raise I3DError(f"{where}: unknown setting {printable(key)!r}")
    cfg[section][name] = value
    origin[key] = where


def _check(cfg: dict, origin: dict):
    for key, check in SETTINGS.items():
        section, name = key.split(".")
        value = cfg[section][name]
        want = check(value)
        if want:
            raise I3DError(f"{origin.get(key, 'defaults')}: {key} must be {want}, got "
                           f"{printable(_SHORT.repr(value))}")
    d = cfg["data"]
    if d["crop"] > d["resize"]:
        key = "data.crop" if "data.crop" in origin else "data.resize"
        raise I3DError(f"{origin.get(key, 'defaults')}: data.crop ({d['crop']}) is larger than "
                       f"data.resize ({d['resize']}), the frames' shorter side")
    variant(cfg["model"], origin.get("model.variant", "defaults"))


def variant(model: dict, where: str | None = None) -> arch.Variant:
    """The numerical variant that `model.variant` names (a name or the custom form)."""
    try:
        return arch.variant(str(model["variant"]))
    except ValueError as e:
        raise I3DError(f"{where + ': ' if where else ''}model.variant: {e}") from None
