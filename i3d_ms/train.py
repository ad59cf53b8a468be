"""The one training loop: MindSpore, one device or many (msrun), resumable to the step.

Why it is built this way:
- The learning rate is a pure function of the step (linear warmup, then cosine), handed to the
  optimizer whole and indexed by its step counter, which a resume restores and a skipped
  (overflowing) step advances: it never depends on the loss scale.
- Loss scaling is done right: the loss is multiplied by the scale, the gradients are divided by
  it (after the all-reduce), non-finite steps are skipped and the scale backs off. The lr is
  never touched by the scale.
- The data order is a function of (seed, step) (see `i3d_ms.data.dataset`); a checkpoint holds
  weights, BN statistics, momentum buffers, the step and the loss scale, so `--resume` continues
  the uninterrupted run exactly.
- Only rank 0 writes checkpoints, logs and plots.
"""
from __future__ import annotations

import copy
import glob
import json
import math
import os
import sys
import time

import numpy as np
import yaml

from convert.errors import I3DError

DEFAULTS = {
    "data": {"root": None, "train": None, "val": None, "frames": 64, "stride": 1, "resize": 256,
             "crop": 224, "scales": [1.0, 0.875, 0.75], "flip": True, "clips": 10,
             "workers": 4},
    "model": {"weights": "default", "num_classes": None, "final_endpoint": "Logits",
              "head": "deepmind", "dropout_keep_prob": 0.5, "variant": "deepmind",
              "freeze_bn": False},
    "train": {"device": "CPU", "mode": "graph", "precision": "fp32", "loss_scale": "none",
              "loss_scale_init": 65536.0, "loss_scale_window": 1000, "steps": 1000,
              "batch_size": 8, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
              "warmup_steps": 100, "final_lr": 0.0, "clip_norm": 1.0, "seed": 0,
              "checkpoint_every": 500, "keep_checkpoints": 3, "eval_every": 0, "log_every": 1,
              "out": "runs/i3d"},
    "eval": {"protocol": "centre", "batch_clips": 30},
}


def load_config(path: str, overrides=()) -> dict:
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


def learning_rate(step: int, t: dict) -> float:
    """Linear warmup from lr/warmup to lr, then cosine decay to final_lr at the last step."""
    if step < t["warmup_steps"]:
        return t["lr"] * (step + 1) / t["warmup_steps"]
    span = max(t["steps"] - t["warmup_steps"], 1)
    p = min((step - t["warmup_steps"]) / span, 1.0)
    return t["final_lr"] + (t["lr"] - t["final_lr"]) * 0.5 * (1 + math.cos(math.pi * p))


def _variant(name):
    from convert import architecture as arch

    variants = {"deepmind": arch.DEEPMIND, "mindvideo": arch.MINDVIDEO}
    if name not in variants:
        raise I3DError(f"model.variant must be deepmind or mindvideo, got {name!r}")
    return variants[name]


def build_net(m: dict, num_classes: int):
    """I3D with a `num_classes` head. A `final_endpoint` before Logits (for small, fast runs)
    gets a global average pool and a Dense head on that end point's features instead."""
    from mindspore import nn

    import i3d_ms

    if m["final_endpoint"] == "Logits":
        return i3d_ms.InceptionI3d(num_classes, _variant(m["variant"]), head=m["head"],
                                   dropout_keep_prob=m["dropout_keep_prob"])

    class Truncated(i3d_ms.InceptionI3d):
        def __init__(self):
            super().__init__(num_classes, _variant(m["variant"]), m["final_endpoint"])
            # pooled features share a large mean: standardise them so that SGD on the head
            # is well conditioned (momentum 0.9: the running statistics settle in short runs)
            self.norm = nn.BatchNorm1d(_channels(m["final_endpoint"]), momentum=0.9, affine=False)
            self.fc = nn.Dense(_channels(m["final_endpoint"]), num_classes)

        def construct(self, x):
            return self.fc(self.norm(self.walk(x)[-1].mean(axis=(2, 3, 4))))

    return Truncated()


def _channels(end_point: str) -> int:
    from convert import architecture as arch

    out = 3
    for layer in arch.layers(1):
        out = getattr(layer, "cout", out)
        if isinstance(layer, arch.Mixed):
            w = layer.widths
            out = w[0] + w[2] + w[4] + w[5]
        if layer.name == end_point:
            return out
    raise I3DError(f"unknown end point {end_point!r}")


def load_pretrained(net, source: str, keep_head: bool):
    """Kinetics (or any readable) weights into `net`; the logits are left fresh unless
    `keep_head` (same classes). Everything else must fit exactly."""
    import mindspore as ms

    import i3d_ms
    from convert.formats import read_weights

    weights, info = read_weights(source)
    params = i3d_ms.parameters_from(weights)
    own = {p.name: p for p in net.get_parameters()}
    head = ("Logits.", "fc.", "norm.")  # the classifier: fresh unless keep_head
    take = {k: p for k, p in params.items() if k in own and (keep_head or not k.startswith(head))}
    missing = [k for k in own if k not in take and not k.startswith(head)]
    if missing:
        raise I3DError(f"{source}: lacks {len(missing)} parameters of the network ({missing[0]}, ...)")
    for k, p in take.items():
        if tuple(p.shape) != tuple(own[k].shape):
            raise I3DError(f"{source}: {k} has shape {tuple(p.shape)}, the network {tuple(own[k].shape)}")
    for k, p in take.items():  # set directly: load_param_into_net warns about the fresh head
        own[k].set_data(ms.Tensor(p.asnumpy()))
    return info


class Trainer:
    """Network, optimizer, loss scaler and the compiled step; `state()`/`restore()` for
    checkpoints."""

    def __init__(self, net, t: dict, world: int = 1, freeze_bn: bool = False):
        import mindspore as ms
        from mindspore import amp, nn, ops

        import i3d_ms

        self.net, self.t = net, t
        # Frozen BN: the trunk normalises with its running statistics while training too, as
        # fine-tuning with small per-device batches wants (train and eval then see one network).
        self.frozen = [c for _, c in net.cells_and_names() if isinstance(c, i3d_ms.BatchNorm)] if freeze_bn else []
        if t["precision"] not in ("fp32", "fp16"):
            raise I3DError(f"train.precision must be fp32 or fp16, got {t['precision']!r}")
        # fp16: MindSpore's 'auto' level runs its white list (convolutions, matmuls) in fp16 and
        # keeps BN, reductions and the loss in fp32; the parameters stay fp32 (master weights).
        model = amp.auto_mixed_precision(net, "auto", ms.float16) if t["precision"] == "fp16" else net
        params = net.trainable_params()
        decay = [p for p in params if p.name.endswith("weight")]
        rest = [p for p in params if not p.name.endswith("weight")]
        # The whole schedule goes in, indexed by the optimizer's global_step (restored on resume;
        # advanced on skipped steps too). Setting a learning-rate Parameter between steps does
        # not work: pynative MindSpore keeps the value it first ran with.
        self.schedule = np.array([learning_rate(s, t) for s in range(t["steps"])], np.float32)
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
        loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        scaler, clip = self.scaler, float(t["clip_norm"])

        def forward(x, y):
            logits = model(x)
            loss = loss_fn(logits.astype(ms.float32), y)
            return (loss if scaler is None else scaler.scale(loss)), loss, logits

        grad_fn = ms.value_and_grad(forward, None, self.opt.parameters, has_aux=True)
        reducer, opt = self.reducer, self.opt

        def step(x, y):
            (_, loss, logits), grads = grad_fn(x, y)
            if reducer is not None:
                grads = reducer(grads)
            finite = ops.ones((), ms.bool_)
            if scaler is not None:
                grads = scaler.unscale(grads)
                finite = amp.all_finite(grads)
                scaler.adjust(finite)
            if finite:
                if clip > 0:
                    grads = ops.clip_by_global_norm(grads, clip)
                opt(grads)
            else:  # skipped, but the schedule moves on: lr stays a function of the step
                ops.assign_add(opt.global_step, ops.ones((1,), ms.int32))
            return loss, logits, finite

        self.step_fn = ms.jit(step) if t["mode"] == "graph" else step

    def step(self, x, y):
        """One optimizer step at the lr of `schedule[global_step]`: (loss, logits, finite)."""
        import mindspore as ms

        self.net.set_train(True)
        for cell in self.frozen:
            cell.set_train(False)
        loss, logits, finite = self.step_fn(ms.Tensor(x), ms.Tensor(y))
        return float(loss.asnumpy()), logits.asnumpy(), bool(finite.asnumpy())

    def state(self, step: int) -> dict:
        """Everything a resume needs, as numpy: net, momentum buffers, step, loss scale."""
        out = {p.name: p.asnumpy() for p in self.net.get_parameters()}
        out.update({p.name: p.asnumpy() for p in self.opt.moments})
        out["global_step"] = np.array([step], np.int64)
        if self.scaler is not None:
            out["scale_sense"] = np.array([self.scaler.scale_value.asnumpy(),
                                           self.scaler.counter.asnumpy()], np.float32)
        return out

    def restore(self, flat: dict) -> int:
        import mindspore as ms

        own = {p.name: p for p in self.net.get_parameters()}
        own.update({p.name: p for p in self.opt.moments})
        missing = [k for k in own if k not in flat]
        if missing:
            raise I3DError(f"checkpoint lacks {len(missing)} entries ({missing[0]}, ...)")
        for k, p in own.items():
            p.set_data(ms.Tensor(flat[k]))
        self.opt.global_step.set_data(ms.Tensor(flat["global_step"].astype(np.int32)))
        if self.scaler is not None and "scale_sense" in flat:
            self.scaler.scale_value.set_data(ms.Tensor(flat["scale_sense"][0], ms.float32))
            self.scaler.counter.set_data(ms.Tensor(int(flat["scale_sense"][1]), ms.int32))
        return int(flat["global_step"][0])


def checkpoints(folder: str) -> list:
    return sorted(glob.glob(os.path.join(folder, "step_*.ckpt")))


def save_checkpoint(state: dict, folder: str, step: int, keep: int) -> str:
    """Written whole or not at all (temp file, then rename); only the last `keep` are kept."""
    from convert.formats import mindspore_ckpt
    from convert.fileio import atomic_output

    path = os.path.join(folder, f"step_{step:08d}.ckpt")
    with atomic_output(path, force=True) as tmp:
        mindspore_ckpt.write(state, tmp)
    for old in checkpoints(folder)[:-keep] if keep > 0 else []:
        os.remove(old)
    return path


def distributed():
    """(rank, world): msrun's workers join the collective; a plain process is rank 0 of 1."""
    if "MS_ROLE" not in os.environ and "RANK_SIZE" not in os.environ:
        return 0, 1
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    init()
    world = get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                 gradients_mean=True, device_num=world)
    return get_rank(), world


def dataset_videos(d: dict, split: str) -> tuple:
    """([Video], class names or None) of a split: Kinetics root or a list file."""
    from i3d_ms.data import class_names, read_kinetics, read_list

    if d.get(split):
        return read_list(d[split]), None
    if d.get("root"):
        return read_kinetics(d["root"], split), class_names(d["root"])
    raise I3DError(f"set data.root (Kinetics layout) or data.{split} (a list file)")


class Progress:
    """One self-rewriting line on stderr: step, loss, lr, speed and ETA."""

    def __init__(self, total: int, start: int):
        self.total, self.start, self.t0 = total, start, time.perf_counter()

    def update(self, step: int, loss: float, lr: float):
        done = step + 1 - self.start
        per = (time.perf_counter() - self.t0) / max(done, 1)
        eta = int(per * (self.total - step - 1))
        bar = "#" * int(30 * (step + 1) / self.total)
        sys.stderr.write(f"\r[{bar:<30}] {step + 1}/{self.total} loss {loss:.4f} lr {lr:.2e} "
                         f"{per:.2f} s/step ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}")
        sys.stderr.flush()


def plot(log_path: str, png: str):
    """loss, lr and accuracy against step, from the JSON-lines log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_path) as f:
        rows = [json.loads(line) for line in f]
    train = {r["step"]: r for r in rows if "loss" in r}  # a resumed run's repeats: last wins
    evals = [r for r in rows if "val_top1" in r]
    steps = sorted(train)
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.5))
    ax[0].plot(steps, [train[s]["loss"] for s in steps])
    ax[0].set_title("training loss")
    ax[1].plot(steps, [train[s]["lr"] for s in steps])
    ax[1].set_title("learning rate")
    ax[2].plot(steps, [train[s]["acc"] for s in steps], label="train (batch)", alpha=0.5)
    if evals:
        ax[2].plot([r["step"] for r in evals], [r["val_top1"] for r in evals], "o-", label="val top-1")
    ax[2].set_title("accuracy")
    ax[2].legend()
    for a in ax:
        a.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def train(cfg: dict, resume: bool = False, pretrained: str | None = None) -> tuple:
    """Runs (or resumes) the configured training; returns (summary, trainer), the trainer's
    network holding this rank's trained weights. Rank 0 writes the files."""
    os.environ.setdefault("GLOG_v", "3")
    import mindspore as ms  # before decord: MindSpore aborts if imported after it

    import i3d_ms
    from i3d_ms.data import TrainSource, train_dataset

    d, m, t = cfg["data"], cfg["model"], cfg["train"]
    out, folder = t["out"], os.path.join(t["out"], "checkpoints")
    if not resume and checkpoints(folder):
        raise I3DError(f"{folder} holds checkpoints of an earlier run: --resume it, or set "
                       "another train.out")
    i3d_ms.set_mode(t["mode"], t["device"])
    rank, world = distributed()
    videos, names = dataset_videos(d, "train")
    num_classes = m["num_classes"] or (len(names) if names else 1 + max(v.label for v in videos))
    ms.set_seed(t["seed"])
    np.random.seed(t["seed"])  # the twins initialise from numpy's generator: same on all ranks
    net = build_net(m, num_classes)
    source = pretrained or m["weights"]
    if source and source != "scratch":
        load_pretrained(net, source, keep_head=num_classes == 400 and m["final_endpoint"] == "Logits")
    trainer = Trainer(net, t, world, m["freeze_bn"])

    start = 0
    if resume:
        found = checkpoints(folder)
        if not found:
            raise I3DError(f"--resume: no checkpoint in {folder}")
        from convert.formats import mindspore_ckpt

        start = trainer.restore(mindspore_ckpt.read(found[-1]))
    if rank == 0:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(out, "config.yaml"), "w") as f:
            yaml.safe_dump(cfg, f)
    log_path = os.path.join(out, "train.jsonl")
    data = TrainSource(videos, d, t["batch_size"], t["steps"], start, t["seed"], rank, world)
    batches = train_dataset(data, d["workers"]).create_tuple_iterator(output_numpy=True, num_epochs=1)
    progress, log, skipped, loss = Progress(t["steps"], start), None, 0, float("nan")
    if rank == 0:
        log = open(log_path, "a")
    t0 = time.perf_counter()
    try:
        for step, (x, y) in enumerate(batches, start):
            lr = float(trainer.schedule[step])
            loss, logits, finite = trainer.step(x, y)
            if rank != 0:
                continue
            progress.update(step, loss, lr)
            row = {"step": step, "loss": loss, "lr": lr, "acc": float((logits.argmax(1) == y).mean()),
                   "finite": finite, "time": round(time.perf_counter() - t0, 3)}
            if trainer.scaler is not None:
                row["loss_scale"] = float(trainer.scaler.scale_value.asnumpy())
            if len(data.bad) > skipped:
                skipped = len(data.bad)
                row["skipped_videos"] = skipped
            log.write(json.dumps(row) + "\n")
            log.flush()
            last = step + 1 == t["steps"]
            if (t["checkpoint_every"] and (step + 1) % t["checkpoint_every"] == 0) or last:
                save_checkpoint(trainer.state(step + 1), folder, step + 1, t["keep_checkpoints"])
            if (t["eval_every"] and (step + 1) % t["eval_every"] == 0) or (last and _has_val(d)):
                from i3d_ms.evaluate import evaluate_net

                metrics = evaluate_net(net, cfg, num_classes, protocol=cfg["eval"]["protocol"])
                log.write(json.dumps({"step": step + 1, "val_top1": metrics["video_top1"],
                                      "val_top5": metrics["video_top5"],
                                      "val_mean_class": metrics["video_mean_class"]}) + "\n")
                log.flush()
                plot(log_path, os.path.join(out, "train.png"))
    finally:
        if log is not None:
            sys.stderr.write("\n")
            log.close()
    summary = {"rank": rank, "world": world, "start": start, "steps": t["steps"],
               "last_loss": loss, "seconds": round(time.perf_counter() - t0, 1),
               "skipped": dict(data.bad)}
    if rank == 0:
        plot(log_path, os.path.join(out, "train.png"))
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return summary, trainer


def _has_val(d):
    return bool(d.get("val") or (d.get("root") and os.path.isfile(
        os.path.join(d["root"], "kinetics-400_val.csv"))))
