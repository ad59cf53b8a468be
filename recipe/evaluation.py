"""`i3d eval`, one for both frameworks: the split's labels checked, the checkpoint loaded and
every clip run by a backend (`i3d_ms.train`, `i3d_torch.train`: `setup`, `load`, `predict`),
then the metrics of `recipe.metrics` and a CSV of per-video predictions. Sharded under msrun or
torchrun: each rank scores every world-th video and the clip logits are gathered; rank 0 writes
the CSV (an existing one only with `force`, checked on every rank before the ranks join,
written whole or not at all)."""
from __future__ import annotations

import contextlib
import csv

import numpy as np

from convert.architecture import NUM_CLASSES
from convert.fileio import atomic_output, check_destination
from convert.labels import labels

from .metrics import split_metrics, video_scores
from .sources import check_labels, num_classes, source_name, split_videos


def evaluate(cfg: dict, checkpoint: str, backend, protocol: str | None = None, csv_path=None,
             force: bool = False) -> dict:
    videos, names = split_videos(cfg["data"], "val")
    classes = num_classes(cfg["model"]["num_classes"], videos, names)
    check_labels(videos, classes, source_name(cfg["data"], "val"))
    if names is None and classes == NUM_CLASSES:  # a list file scored by a Kinetics head
        names = labels()
    if csv_path:  # on every rank, before the ranks join: all refuse alike, none waits
        check_destination(csv_path, force)
    rank, world = backend.setup(cfg)
    writing = csv_path and rank == 0
    with atomic_output(csv_path, force) if writing else contextlib.nullcontext() as tmp:
        model = backend.load(cfg, checkpoint, classes)
        predicted = backend.predict(model, cfg, protocol or cfg["eval"]["protocol"], rank, world)
        if tmp:
            write_csv(tmp, predicted[0], predicted[2], predicted[3], names)
        return scored(predicted, classes)


def scored(predicted: tuple, classes: int) -> dict:
    """The metrics (`recipe.metrics`) of a backend's `predict` (clip logits, clip labels, video
    ids, videos, skipped), the skipped videos with them."""
    logits, labels_, ids, _, bad = predicted
    return {**split_metrics(logits, labels_, ids, classes), "skipped": bad}


def write_csv(path: str, logits, ids, videos, names=None):
    """One row per video: path, label, predicted class, its probability, top-5."""
    vids, scores = video_scores(logits, ids)
    name = (lambda c: names[c]) if names else str
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "label", "prediction", "probability", "top5"])
        for i, s in zip(vids, scores):
            top = np.argsort(-s)[:5]
            v = videos[i]
            w.writerow([v.path, name(v.label) if v.label >= 0 else "", name(int(top[0])),
                        f"{s[top[0]]:.6f}", ";".join(name(int(c)) for c in top)])
