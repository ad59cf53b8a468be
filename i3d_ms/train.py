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
from convert.fileio import atomic_output, remove_stale

from . import checkpoint
from .config import variant
from .data import TrainSource, num_classes, split_videos, train_dataset, workers
from .data.sources import check_labels, source_name
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
    if resume and not checkpoint.checkpoints(folder):  # a job killed before its first one:
        print(f"i3d: note: --resume: no checkpoint in {folder} yet, starting at step 0",
              file=sys.stderr)  # the same command line serves the first start and restarts
        resume = False
    state = _resumable(cfg, *checkpoint.latest(folder, variant(m))) if resume else None
    videos, names = split_videos(d, "train")
    classes = num_classes(m["num_classes"], videos, names)
    check_labels(videos, classes, source_name(d, "train"))
    if _has_val(d):  # the validation set's labels too, before the first step
        check_labels(split_videos(d, "val")[0], classes, source_name(d, "val"))
    set_mode(t["mode"], t["device"])
    rank, world = distributed()
    ms.set_seed(rank_seed(t["seed"], rank))  # dropout: nn.Dropout takes its seed when built
    np.random.seed(t["seed"])  # initial weights come from numpy's generator: alike on all ranks
    net = build_net(m, classes, t["precision"])
    source = pretrained or m["weights"]
    if source and source != "scratch":
        checkpoint.load_pretrained(net, source, keep_head=classes == NUM_CLASSES
                                   and m["final_endpoint"] == "Logits")
    trainer = Trainer(net, t, world, m["freeze_bn"])

    start = trainer.restore(state) if resume else 0
    if rank == 0:
        os.makedirs(folder, exist_ok=True)
        remove_stale(folder, "step_*.ckpt")  # what a SIGKILL mid-write left
        with atomic_output(os.path.join(out, "config.yaml"), force=True) as tmp, open(tmp, "w") as f:
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
        for step, (x, y, flip) in enumerate(_batches(batches, data), start):
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
                    checkpoint.save(trainer.state(step + 1), folder, step + 1, t["keep_checkpoints"],
                                    net.variant)
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
        with atomic_output(os.path.join(out, "summary.json"), force=True) as tmp, \
                open(tmp, "w") as f:
            json.dump(summary, f, indent=1)
    return summary, trainer


def _batches(batches, data: TrainSource):
    """The pipeline's batches; a worker's I3DError as itself, not as MindSpore's wrapping."""
    try:
        yield from batches
    except RuntimeError:
        if data.failed is not None:
            raise data.failed from None
        raise


# What fixes a run's trajectory: a resume under other values would not continue it.
RESUME_KEYS = ("train.steps", "train.batch_size", "train.seed", "train.lr", "train.lr_batch",
               "train.warmup_steps", "train.final_lr")


def _resumable(cfg: dict, state: dict, path: str) -> dict:
    """`state` (the checkpoint at `path`) if the configured run can continue from it: not
    finished, and started with the same schedule and data order (its config.yaml)."""
    t, step = cfg["train"], int(state["global_step"][0])
    saved = os.path.join(t["out"], "config.yaml")
    if os.path.isfile(saved):
        with open(saved) as f:
            try:
                then = yaml.safe_load(f)
            except yaml.YAMLError:
                then = None
        for key in RESUME_KEYS if isinstance(then, dict) else ():
            section, name = key.split(".")
            was = then[section].get(name, cfg[section][name]) if isinstance(
                then.get(section), dict) else cfg[section][name]
            if was != cfg[section][name]:
                raise I3DError(f"{saved}: the run was started with {key}={was}, now "
                               f"{cfg[section][name]}: a resume would not continue it; start a "
                               f"new run (another train.out) from {path} (model.weights)")
    if step >= t["steps"]:
        raise I3DError(f"{path}: the run finished (step {step} of {t['steps']}, train.steps): "
                       "nothing to resume")
    return state


def rank_seed(seed: int, rank: int) -> int:
    """A seed of its own for each rank of a run."""
    return int(np.random.SeedSequence((seed, rank)).generate_state(1)[0])


def _has_val(d):
    return bool(d.get("val") or (d.get("root") and os.path.isfile(
        os.path.join(d["root"], "kinetics-400_val.csv"))))
