"""The training loop: MindSpore, one device or many (msrun), resumable to the step.

The data order is a function of (seed, step) (see `i3d_ms.data.dataset`) and a checkpoint holds
everything the step needs (`i3d_ms.trainer`), so `--resume` continues the uninterrupted run
(dropout masks aside: MindSpore's generator state is not saved). Every rank starts from the
same weights (numpy's generator, seeded alike) but draws its own dropout masks and crops
(`rank_seed`). Every rank evaluates its share of the validation videos; only rank 0 writes
checkpoints, logs and plots.
"""
from __future__ import annotations

import json
import os
import sys
import time

import mindspore as ms
import numpy as np
import yaml

from convert.architecture import NUM_CLASSES
from convert.errors import I3DError

from . import checkpoint
from .data import TrainSource, num_classes, split_videos, train_dataset, workers
from .evaluate import evaluate_net
from .model import set_mode
from .network import build_net
from .report import Progress, plot
from .trainer import Trainer, distributed


def train(cfg: dict, resume: bool = False, pretrained: str | None = None) -> tuple:
    """Runs (or resumes) the configured training; returns (summary, trainer), the trainer's
    network holding this rank's trained weights. Rank 0 writes the files."""
    d, m, t = cfg["data"], cfg["model"], cfg["train"]
    out, folder = t["out"], os.path.join(t["out"], "checkpoints")
    if not resume and checkpoint.checkpoints(folder):
        raise I3DError(f"{folder} holds checkpoints of an earlier run: --resume it, or set "
                       "another train.out")
    set_mode(t["mode"], t["device"])
    rank, world = distributed()
    videos, names = split_videos(d, "train")
    classes = num_classes(m["num_classes"], videos, names)
    ms.set_seed(rank_seed(t["seed"], rank))  # dropout: nn.Dropout takes its seed when built
    np.random.seed(t["seed"])  # initial weights come from numpy's generator: alike on all ranks
    net = build_net(m, classes)
    source = pretrained or m["weights"]
    if source and source != "scratch":
        checkpoint.load_pretrained(net, source, keep_head=classes == NUM_CLASSES
                                   and m["final_endpoint"] == "Logits")
    trainer = Trainer(net, t, world, m["freeze_bn"])

    start = trainer.restore(checkpoint.latest(folder)) if resume else 0
    if rank == 0:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(out, "config.yaml"), "w") as f:
            yaml.safe_dump(cfg, f)
    log_path = os.path.join(out, "train.jsonl")
    data = TrainSource(videos, d, t["batch_size"], t["steps"], start, t["seed"], rank, world)
    batches = train_dataset(data, workers(d["workers"], world)).create_tuple_iterator(
        output_numpy=True, num_epochs=1)
    progress, log, skipped, loss = Progress(t["steps"], start), None, 0, float("nan")
    if rank == 0:
        log = open(log_path, "a")
    t0 = time.perf_counter()
    try:
        for step, (x, y, flip) in enumerate(batches, start):
            lr = float(trainer.schedule[step])
            loss, logits, finite = trainer.step(x, y, flip)
            last = step + 1 == t["steps"]
            if rank == 0:
                progress.update(step, loss, lr)
                row = {"step": step, "loss": loss, "lr": lr,
                       "acc": float((logits.argmax(1) == y).mean()), "finite": finite,
                       "time": round(time.perf_counter() - t0, 3)}
                if trainer.scaler is not None:
                    row["loss_scale"] = float(trainer.scaler.scale_value.asnumpy())
                if len(data.bad) > skipped:
                    skipped = len(data.bad)
                    row["skipped_videos"] = skipped
                log.write(json.dumps(row) + "\n")
                log.flush()
                if (t["checkpoint_every"] and (step + 1) % t["checkpoint_every"] == 0) or last:
                    checkpoint.save(trainer.state(step + 1), folder, step + 1, t["keep_checkpoints"])
            if (t["eval_every"] and (step + 1) % t["eval_every"] == 0) or (last and _has_val(d)):
                metrics = evaluate_net(net, cfg, classes, cfg["eval"]["protocol"], rank=rank,
                                       world=world)  # every rank its share, gathered
                if rank == 0:
                    log.write(json.dumps({"step": step + 1, "val_top1": metrics["video_top1"],
                                          "val_top5": metrics["video_top5"],
                                          "val_mean_class": metrics["video_mean_class"],
                                          "val_videos": metrics["videos"]}) + "\n")
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


def rank_seed(seed: int, rank: int) -> int:
    """A seed of its own for each rank of a run."""
    return int(np.random.SeedSequence((seed, rank)).generate_state(1)[0])


def _has_val(d):
    return bool(d.get("val") or (d.get("root") and os.path.isfile(
        os.path.join(d["root"], "kinetics-400_val.csv"))))
