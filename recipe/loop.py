"""The training loop, one for both frameworks: a framework's `Backend` (`i3d_ms.train`,
`i3d_torch.train`) builds the network and its step, feeds batches and evaluates; everything
else is here, once: the checks before the first step, the data order, resume, checkpoints,
the jsonl log, the progress line, in-training evaluation and the plot.

The data order is a function of (seed, step) (`recipe.samples`) and a checkpoint holds
everything the step needs (`recipe.checkpoints`), so `--resume` continues the uninterrupted
run (with dropout off: a framework's generator state is not saved), in either framework.
Every rank starts from the same weights but draws its own dropout masks and crops
(`rank_seed`). Every rank evaluates its share of the validation videos; only rank 0 writes
checkpoints, logs and plots.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import yaml

from convert.errors import I3DError
from convert.fileio import atomic_output, remove_stale

from . import checkpoints
from .config import variant
from .evaluation import scored
from .report import Progress, plot
from .samples import TrainSource, workers
from .sources import check_labels, num_classes, source_name, split_videos


class Backend:
    """What a framework provides the loop. `setup(cfg)` -> (rank, world) (joins the collective
    of msrun's or torchrun's workers); `trainer(cfg, classes, pretrained, world)` -> a trainer
    with `schedule` (lr per step), `step(x, y, flip)` -> (loss, logits, finite) and then
    `grad_norm` (of the unclipped gradients), `state(step)`
    and `restore(flat)` in the checkpoint layout, `loss_scale()` (None without scaling) and
    `variant`; `batches(source, workers)` -> (x, y, flip) per step; `predict(net, cfg,
    protocol, rank, world)` -> the validation split's clip logits, labels, video ids, videos
    and skipped videos, every rank's gathered (`recipe.evaluation` scores them)."""

    name = "?"


def train(cfg: dict, backend: Backend, resume: bool = False, pretrained: str | None = None) -> tuple:
    """Runs (or resumes) the configured training; returns (summary, trainer), the trainer
    holding this rank's trained network. Rank 0 writes the files."""
    d, m, t = cfg["data"], cfg["model"], cfg["train"]
    out, folder = t["out"], os.path.join(t["out"], "checkpoints")
    if not resume and checkpoints.checkpoints(folder):
        raise I3DError(f"{folder} holds checkpoints of an earlier run: --resume it, or set "
                       "another train.out")
    if resume and not checkpoints.checkpoints(folder):  # a job killed before its first one:
        print(f"i3d: note: --resume: no checkpoint in {folder} yet, starting at step 0",
              file=sys.stderr)  # the same command line serves the first start and restarts
        resume = False
    state = _resumable(cfg, *checkpoints.latest(folder, variant(m))) if resume else None
    finished = state is not None and int(state["global_step"][0]) == t["steps"]
    if finished:  # killed after its last checkpoint: the same command line ends the job
        print(f"i3d: note: --resume: the run finished (step {t['steps']} of {t['steps']})",
              file=sys.stderr)
        done = _summary(os.path.join(out, "summary.json"))
        if done is not None:
            return done, None
    videos, names = split_videos(d, "train")
    classes = num_classes(m["num_classes"], videos, names)
    check_labels(videos, classes, source_name(d, "train"))
    if has_val(d):  # the validation set's labels too, before the first step
        check_labels(split_videos(d, "val")[0], classes, source_name(d, "val"))
    rank, world = backend.setup(cfg)
    trainer = backend.trainer(cfg, classes, pretrained, world)
    start = trainer.restore(state) if resume else 0
    if rank == 0:
        os.makedirs(folder, exist_ok=True)
        remove_stale(folder, "step_*.ckpt")  # what a SIGKILL mid-write left
        with atomic_output(os.path.join(out, "config.yaml"), force=True) as tmp, open(tmp, "w") as f:
            yaml.safe_dump(cfg, f)
    log_path = os.path.join(out, "train.jsonl")
    data = TrainSource(videos, d, t["batch_size"], t["steps"], start, t["seed"], rank, world)
    batches = () if finished else backend.batches(data, workers(d["workers"], world))
    progress, log, skipped, loss = Progress(t["steps"], start), None, 0, float("nan")
    if rank == 0:
        log = open(log_path, "a")
    t0 = time.perf_counter()

    def evaluate(step: int):
        metrics = scored(backend.predict(trainer.net, cfg, cfg["eval"]["protocol"], rank,
                                         world), classes)  # every rank its share, gathered
        if rank == 0:
            log.write(json.dumps({"step": step, "val_top1": metrics["video_top1"],
                                  "val_top5": metrics["video_top5"],
                                  "val_mean_class": metrics["video_mean_class"],
                                  "val_videos": metrics["videos"]}) + "\n")
            log.flush()
            plot(log_path, os.path.join(out, "train.png"))

    try:
        for step, (x, y, flip) in enumerate(batches, start):
            lr = float(trainer.schedule[step])
            loss, logits, finite = trainer.step(x, y, flip)
            last = step + 1 == t["steps"]
            if rank == 0:
                progress.update(step, loss, lr)
                row = {"step": step, "loss": loss, "lr": lr,
                       "acc": float((logits.argmax(1) == y).mean()), "finite": finite,
                       "grad_norm": trainer.grad_norm,
                       "time": round(time.perf_counter() - t0, 3)}
                if trainer.loss_scale() is not None:
                    row["loss_scale"] = trainer.loss_scale()
                if len(data.bad) > skipped:
                    skipped = len(data.bad)
                    row["skipped_videos"] = skipped
                log.write(json.dumps(row) + "\n")
                log.flush()
                if (t["checkpoint_every"] and (step + 1) % t["checkpoint_every"] == 0) or last:
                    checkpoints.save(trainer.state(step + 1), folder, step + 1,
                                     t["keep_checkpoints"], trainer.variant, backend.name)
            if (t["eval_every"] and (step + 1) % t["eval_every"] == 0) or (last and has_val(d)):
                evaluate(step + 1)
        if finished and has_val(d):  # the evaluation the killed run did not finish
            evaluate(t["steps"])
    finally:
        if log is not None:
            sys.stderr.write("\n")
            log.close()
    summary = {"rank": rank, "world": world, "start": start, "steps": t["steps"],
               "framework": backend.name, "last_loss": loss,
               "seconds": round(time.perf_counter() - t0, 1), "skipped": dict(data.bad)}
    if rank == 0:
        plot(log_path, os.path.join(out, "train.png"))
        with atomic_output(os.path.join(out, "summary.json"), force=True) as tmp, \
                open(tmp, "w") as f:
            json.dump(summary, f, indent=1)
    return summary, trainer


# What fixes a run's trajectory: a resume under other values would not continue it.
RESUME_KEYS = ("train.steps", "train.batch_size", "train.seed", "train.lr", "train.lr_batch",
               "train.warmup_steps", "train.final_lr")


def _resumable(cfg: dict, state: dict, path: str) -> dict:
    """`state` (the checkpoint at `path`) if the configured run can continue from it: started
    with the same schedule and data order (its config.yaml); a finished run's last checkpoint
    too (its job ends without a step)."""
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
    if step > t["steps"]:
        raise I3DError(f"{path}: step {step} is past train.steps ({t['steps']}): not this run's")
    return state


def _summary(path: str) -> dict | None:
    """A finished run's summary.json, None if there is none that reads as one (then the run's
    end is redone: the final evaluation, the summary)."""
    try:
        with open(path, "rb") as f:
            done = json.loads(f.read(1 << 20))
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) and {"rank", "world", "start"} <= set(done) else None


def rank_seed(seed: int, rank: int) -> int:
    """A seed of its own for each rank of a run."""
    return int(np.random.SeedSequence((seed, rank)).generate_state(1)[0])


def has_val(d: dict) -> bool:
    return bool(d.get("val") or (d.get("root") and os.path.isfile(
        os.path.join(d["root"], "kinetics-400_val.csv"))))
