"""Clip- and video-level top-1, top-5 and mean class accuracy: plain numpy functions, so that
they can be checked by hand. A video's score is the mean softmax of its clips."""
from __future__ import annotations

import numpy as np

from convert.errors import I3DError
from convert.labels import softmax


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


def split_metrics(logits, labels, ids, classes: int) -> dict:
    """`metrics` of a split's clip logits, its videos of unknown label (-1) left out; refuses a
    network of another width than the `classes` the labels were checked against."""
    if logits.shape[1] != classes:
        raise I3DError(f"the network has {logits.shape[1]} classes, expected {classes}")
    known = labels >= 0
    return metrics(logits[known], labels[known], ids[known]) if known.any() else {}
