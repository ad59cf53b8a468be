"""Evaluation of the MindSpore twin on a split: every clip through the network, then the
metrics of `recipe.metrics` and a CSV of per-video predictions.

Sharded: with many ranks (msrun) each takes every world-th video and the clip logits are
gathered, so every rank works and every rank ends with the whole split's metrics. Memory is
bounded by `eval.batch_clips` clips of uint8 in flight, whatever the protocol; in graph mode
every batch has the compiled shape (the last one is padded), so the network compiles once
('whole' compiles once per video length).
"""
from __future__ import annotations

import contextlib
import csv
import json

import mindspore as ms
import numpy as np

from convert.architecture import NUM_CLASSES
from convert.errors import I3DError
from convert.fileio import atomic_output, check_destination
from convert.labels import labels

from recipe.metrics import split_metrics, video_scores
from recipe.samples import EvalSource, workers
from recipe.sources import check_labels, num_classes, source_name, split_videos

from .checkpoint import load_for_eval
from .model import set_mode
from .network import to_input
from .pipeline import eval_dataset
from .trainer import distributed


def _infer(net):
    """net(uint8 clips) -> logits, compiled once per net in graph mode."""
    if "_infer" not in net.__dict__:
        dtype = next(iter(net.get_parameters())).dtype  # float64: the parity runs' nets

        def infer(x):
            return net(to_input(x, None, dtype))

        graph = ms.get_context("mode") == ms.GRAPH_MODE
        net.__dict__["_infer"] = ms.jit(infer) if graph else infer
    return net.__dict__["_infer"]


def predict_videos(net, cfg: dict, protocol: str, split: str = "val", rank: int = 0,
                   world: int = 1):
    """Runs `net` over every clip of this rank's share of the split and gathers all ranks':
    (clip logits, clip labels, video ids, videos, skipped {path: reason})."""
    videos, _ = split_videos(cfg["data"], split)
    d, e = cfg["data"], cfg["eval"]
    source = EvalSource(videos, d, protocol, rank, world, uint8=True, max_frames=e["max_frames"])
    rows = source.rows_per_batch(int(e["batch_clips"]))
    infer, pad = _infer(net), ms.get_context("mode") == ms.GRAPH_MODE
    net.set_train(False)
    logits, labels_, ids = [], [], []
    batches = eval_dataset(source, workers(d["workers"], world), int(e["batch_clips"]))
    for clips, label, index, valid in batches.create_tuple_iterator(output_numpy=True, num_epochs=1):
        b, keep = len(valid), valid.astype(bool)  # bad videos came as zeros
        if not keep.any():
            continue
        if pad and b < rows:
            clips = np.concatenate([clips, np.zeros((rows - b, *clips.shape[1:]), clips.dtype)])
        out = infer(ms.Tensor(clips.reshape(-1, *clips.shape[2:]))).asnumpy().astype(np.float32)
        logits.append(out.reshape(len(clips), source.k, -1)[:b][keep].reshape(-1, out.shape[-1]))
        labels_.append(np.repeat(label[keep], source.k))
        ids.append(np.repeat(index[keep], source.k))
    classes = net.num_classes
    local = (np.concatenate(logits) if logits else np.zeros((0, classes), np.float32),
             np.concatenate(labels_) if labels_ else np.zeros(0, np.int32),
             np.concatenate(ids) if ids else np.zeros(0, np.int32))
    bad = dict(source.bad)
    if world > 1:
        logits, labels_, ids = _gather(local, world)
        bad = {}  # every rank's skipped videos, their reasons travelling as JSON bytes (int32:
        # what the CPU AllGather takes)
        text = np.frombuffer(json.dumps(source.bad).encode(), np.uint8).astype(np.int32)
        for part in _gather((text,), world, split=True)[0]:
            bad.update(json.loads(part.astype(np.uint8).tobytes().decode()))
    else:
        logits, labels_, ids = local
    if not len(ids):
        raise I3DError("no video of the evaluation set could be read")
    return logits, labels_, ids, videos, bad


def _gather(arrays: tuple, world: int, split: bool = False) -> tuple:
    """Each rank's rows (any number) of each array, concatenated in rank order on every rank
    (with `split`, a list of the ranks' arrays)."""
    from mindspore import ops

    gather = ops.AllGather()
    counts = gather(ms.Tensor(np.array([len(arrays[0])], np.int32))).asnumpy()
    most, out = max(int(counts.max()), 1), []
    for a in arrays:
        padded = np.zeros((most, *a.shape[1:]), a.dtype)
        padded[:len(a)] = a
        every = gather(ms.Tensor(padded)).asnumpy().reshape(world, most, *a.shape[1:])
        parts = [every[r, :counts[r]] for r in range(world)]
        out.append(parts if split else np.concatenate(parts))
    return tuple(out)


def evaluate_net(net, cfg: dict, classes: int, protocol: str = "centre", csv_path=None,
                 names=None, rank: int = 0, world: int = 1) -> dict:
    logits, labels_, ids, videos, bad = predict_videos(net, cfg, protocol, rank=rank, world=world)
    out = split_metrics(logits, labels_, ids, classes)
    out["skipped"] = bad
    if csv_path and rank == 0:
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


def evaluate(cfg: dict, checkpoint: str, protocol: str | None = None, csv_path=None,
             force: bool = False) -> dict:
    """`i3d eval`: on one device, or sharded over msrun's workers (rank 0 writes the CSV: an
    existing one only with `force`, checked before the run, written whole or not at all)."""
    t = cfg["train"]
    videos, names = split_videos(cfg["data"], "val")
    classes = num_classes(cfg["model"]["num_classes"], videos, names)
    check_labels(videos, classes, source_name(cfg["data"], "val"))
    if names is None and classes == NUM_CLASSES:  # a list file scored by a Kinetics head
        names = labels()
    if csv_path:  # on every rank, before the ranks join: all refuse alike, none waits
        check_destination(csv_path, force)
    set_mode(t["mode"], t["device"])
    rank, world = distributed()
    writing = csv_path and rank == 0
    with atomic_output(csv_path, force) if writing else contextlib.nullcontext() as tmp:
        net = load_for_eval(cfg["model"], checkpoint, classes)
        return evaluate_net(net, cfg, classes, protocol or cfg["eval"]["protocol"], tmp, names,
                            rank, world)
