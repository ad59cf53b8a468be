"""The MindSpore twin's clip logits on a split (`i3d eval` is `recipe.evaluation`'s, with this
as its backend, and the training loop's evaluation).

Sharded: with many ranks (msrun) each takes every world-th video and the clip logits are
gathered, so every rank works and every rank ends with the whole split's metrics. Memory is
bounded by `eval.batch_clips` clips of uint8 in flight, whatever the protocol; in graph mode
every batch has the compiled shape (the last one is padded), so the network compiles once
('whole' compiles once per video length).
"""
from __future__ import annotations

import json

import mindspore as ms
import numpy as np

from convert.errors import I3DError
from recipe.samples import EvalSource, workers
from recipe.sources import split_videos

from .network import to_input
from .pipeline import eval_dataset


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
