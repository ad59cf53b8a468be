"""Class names in model order, and logits turned into named probabilities. numpy only."""
from __future__ import annotations

import os

import numpy as np

from .architecture import NUM_CLASSES

KINETICS400 = os.path.join(os.path.dirname(__file__), "data", "kinetics400_labels.txt")


def labels(num_classes: int = NUM_CLASSES) -> list:
    """Kinetics-400's names (alphabetical, the model's order) for a 400-way head, else
    'class i'."""
    if num_classes == NUM_CLASSES:
        with open(KINETICS400) as f:
            return [line.strip() for line in f if line.strip()]
    return [f"class {i}" for i in range(num_classes)]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, stable for large logits."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int, names: list | None = None) -> list:
    """[{'label', 'prob'}] of the k most likely classes of one clip's logits (`names`: the
    labels an export recorded; default `labels`)."""
    probs, names = softmax(logits), names or labels(len(logits))
    return [{"label": names[i], "prob": float(probs[i])} for i in np.argsort(-logits)[:k]]
