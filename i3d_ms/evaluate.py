"""Evaluation of the MindSpore twin on a split: every clip through the network, then the
metrics of `i3d_ms.metrics` and a CSV of per-video predictions."""
from __future__ import annotations

import csv

import mindspore as ms
import numpy as np

from convert.architecture import NUM_CLASSES
from convert.errors import I3DError
from convert.labels import labels

from .checkpoint import load_for_eval
from .data import EvalSource, eval_dataset, num_classes, split_videos
from .metrics import metrics, video_scores
from .model import set_mode


def predict_videos(net, cfg: dict, protocol: str, split: str = "val"):
    """Runs `net` over every clip of the split: (clip logits, clip labels, video ids, videos,
    skipped {path: reason})."""
    videos, _ = split_videos(cfg["data"], split)
    if protocol not in ("centre", "multi"):
        raise I3DError(f"protocol must be centre or multi, got {protocol!r}")
    source = EvalSource(videos, cfg["data"], protocol)
    net.set_train(False)
    logits, labels_, ids = [], [], []
    rows = eval_dataset(source, cfg["data"]["workers"], int(cfg["eval"]["batch_clips"]))
    for clips, label, index, valid in rows.create_tuple_iterator(output_numpy=True, num_epochs=1):
        keep = valid.astype(bool)  # (videos,): bad videos came as zeros
        if not keep.any():
            continue
        clips, n = clips[keep], clips.shape[1]
        batch = clips.reshape(-1, *clips.shape[2:])
        logits.append(net(ms.Tensor(batch)).asnumpy().astype(np.float32))
        labels_.append(np.repeat(label[keep], n))
        ids.append(np.repeat(index[keep], n))
    if not logits:
        raise I3DError("no video of the evaluation set could be read")
    return (np.concatenate(logits), np.concatenate(labels_), np.concatenate(ids), videos,
            dict(source.bad))


def evaluate_net(net, cfg: dict, classes: int, protocol: str = "centre", csv_path=None,
                 names=None) -> dict:
    logits, labels_, ids, videos, bad = predict_videos(net, cfg, protocol)
    if logits.shape[1] != classes:
        raise I3DError(f"the network has {logits.shape[1]} classes, expected {classes}")
    known = labels_ >= 0
    out = metrics(logits[known], labels_[known], ids[known]) if known.any() else {}
    out["skipped"] = bad
    if csv_path:
        write_csv(csv_path, logits, ids, videos, names)
    return out


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


def evaluate(cfg: dict, checkpoint: str, protocol: str | None = None, csv_path=None) -> dict:
    t = cfg["train"]
    set_mode(t["mode"], t["device"])
    videos, names = split_videos(cfg["data"], "val")
    classes = num_classes(cfg["model"]["num_classes"], videos, names)
    if names is None and classes == NUM_CLASSES:  # a list file scored by a Kinetics head
        names = labels()
    net = load_for_eval(cfg["model"], checkpoint, classes)
    return evaluate_net(net, cfg, classes, protocol or cfg["eval"]["protocol"], csv_path, names)
