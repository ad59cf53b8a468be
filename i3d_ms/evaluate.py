"""Evaluation: clip- and video-level top-1, top-5 and mean class accuracy, and a CSV of
per-video predictions. The metrics are plain numpy functions so that they can be checked by
hand; a video's score is the mean softmax of its clips."""
from __future__ import annotations

import csv
import os

import numpy as np

from convert.errors import I3DError


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the k highest scores (ties: lower index first)."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((top == np.asarray(labels)[:, None]).any(axis=1).mean())


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of each class present in `labels`, averaged over those classes."""
    labels, pred = np.asarray(labels), scores.argmax(axis=1)
    return float(np.mean([(pred[labels == c] == c).mean() for c in np.unique(labels)]))


def video_scores(clip_logits: np.ndarray, video_ids: np.ndarray) -> tuple:
    """(ids, mean softmax over each video's clips) in order of first appearance."""
    ids = list(dict.fromkeys(np.asarray(video_ids).tolist()))
    probs = softmax(clip_logits)
    return np.array(ids), np.stack([probs[video_ids == i].mean(axis=0) for i in ids])


def metrics(clip_logits, clip_labels, video_ids) -> dict:
    """Clip- and video-level metrics of the clips' logits (B, classes)."""
    clip_labels, video_ids = np.asarray(clip_labels), np.asarray(video_ids)
    ids, vscores = video_scores(clip_logits, video_ids)
    vlabels = np.array([clip_labels[video_ids == i][0] for i in ids])
    k = min(5, clip_logits.shape[1])
    return {"clips": len(clip_labels), "videos": len(ids),
            "clip_top1": top_k_accuracy(clip_logits, clip_labels, 1),
            "clip_top5": top_k_accuracy(clip_logits, clip_labels, k),
            "clip_mean_class": mean_class_accuracy(clip_logits, clip_labels),
            "video_top1": top_k_accuracy(vscores, vlabels, 1),
            "video_top5": top_k_accuracy(vscores, vlabels, k),
            "video_mean_class": mean_class_accuracy(vscores, vlabels)}


def predict_videos(net, cfg: dict, protocol: str, split: str = "val"):
    """Runs `net` over every clip of the split: (clip logits, clip labels, video ids, videos,
    skipped {path: reason})."""
    import mindspore as ms

    from i3d_ms.data import EvalSource, eval_dataset
    from i3d_ms.train import dataset_videos

    videos, _ = dataset_videos(cfg["data"], split)
    if protocol not in ("centre", "multi"):
        raise I3DError(f"protocol must be centre or multi, got {protocol!r}")
    source = EvalSource(videos, cfg["data"], protocol)
    net.set_train(False)
    logits, labels, ids = [], [], []
    rows = eval_dataset(source, cfg["data"]["workers"], int(cfg["eval"]["batch_clips"]))
    for clips, label, index, valid in rows.create_tuple_iterator(output_numpy=True, num_epochs=1):
        keep = valid.astype(bool)  # (videos,): bad videos came as zeros
        if not keep.any():
            continue
        clips, n = clips[keep], clips.shape[1]
        batch = clips.reshape(-1, *clips.shape[2:])
        logits.append(net(ms.Tensor(batch)).asnumpy().astype(np.float32))
        labels.append(np.repeat(label[keep], n))
        ids.append(np.repeat(index[keep], n))
    if not logits:
        raise I3DError("no video of the evaluation set could be read")
    return (np.concatenate(logits), np.concatenate(labels), np.concatenate(ids), videos,
            dict(source.bad))


def evaluate_net(net, cfg: dict, num_classes: int, protocol: str = "centre", csv_path=None,
                 names=None) -> dict:
    logits, labels, ids, videos, bad = predict_videos(net, cfg, protocol)
    if logits.shape[1] != num_classes:
        raise I3DError(f"the network has {logits.shape[1]} classes, expected {num_classes}")
    known = labels >= 0
    out = metrics(logits[known], labels[known], ids[known]) if known.any() else {}
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


def load_for_eval(cfg: dict, checkpoint: str, num_classes: int):
    """The configured network with `checkpoint`'s weights: a training checkpoint of this tool,
    or anything `i3d convert` reads ('default' = DeepMind's Kinetics-400 weights)."""
    import mindspore as ms

    from convert.formats import detect_format, mindspore_ckpt, resolve
    from i3d_ms.train import build_net, load_pretrained

    net = build_net(cfg["model"], num_classes)
    path = resolve(checkpoint)
    if detect_format(path) == "mindspore":
        flat = mindspore_ckpt.read(path)
        own = {p.name: p for p in net.get_parameters()}
        if "global_step" in flat:  # ours: every parameter of the configured network
            missing = [k for k in own if k not in flat]
            if missing:
                raise I3DError(f"{checkpoint}: does not fit the configured model ({missing[0]}, ...)")
            for k, p in own.items():
                p.set_data(ms.Tensor(flat[k]))
            return net
    load_pretrained(net, checkpoint, keep_head=True)
    return net


def evaluate(cfg: dict, checkpoint: str, protocol: str | None = None, csv_path=None) -> dict:
    os.environ.setdefault("GLOG_v", "3")
    import mindspore  # noqa: F401  (before decord)

    import i3d_ms
    from i3d_ms.train import dataset_videos

    t = cfg["train"]
    i3d_ms.set_mode(t["mode"], t["device"])
    videos, names = dataset_videos(cfg["data"], "val")
    num_classes = cfg["model"]["num_classes"] or (len(names) if names else 1 + max(v.label for v in videos))
    if num_classes == 400 and names is None:
        from convert.cli import labels

        names = labels(400)
    net = load_for_eval(cfg, checkpoint, num_classes)
    return evaluate_net(net, cfg, num_classes, protocol or cfg["eval"]["protocol"], csv_path, names)
