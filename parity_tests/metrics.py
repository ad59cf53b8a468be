"""How two tensors differ, in numbers people act on. numpy only."""
from __future__ import annotations

import numpy as np

MIN_COSINE = 0.99999


def compare(a: np.ndarray, b: np.ndarray, tolerance: float, min_cosine: float = MIN_COSINE) -> dict:
    """a against the reference b: max abs, max relative (to max |b|), mean abs, cosine similarity,
    fraction of elements within `tolerance`, and whether both limits hold."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return {"shape": [list(a.shape), list(b.shape)], "ok": False, "max_abs": float("inf"),
                "max_rel": float("inf"), "mean_abs": float("inf"), "cosine": 0.0, "within": 0.0}
    diff = np.abs(a - b)
    scale = np.abs(b).max()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cosine = float(a.ravel() @ b.ravel() / (na * nb)) if na and nb else float(na == nb)
    out = {"max_abs": float(diff.max(initial=0.0)),
           "max_rel": float(diff.max(initial=0.0) / scale) if scale else float(diff.max(initial=0.0)),
           "mean_abs": float(diff.mean()) if diff.size else 0.0,
           "cosine": cosine,
           "within": float((diff <= tolerance).mean()) if diff.size else 1.0}
    out["ok"] = bool(out["max_abs"] <= tolerance and cosine >= min_cosine)
    return out


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b||: the gradient and loss criterion."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / nb) if nb else float(np.linalg.norm(a))


def first_failure(rows: list) -> str | None:
    """Name of the first row (in network order) whose comparison failed."""
    return next((r["name"] for r in rows if not r["ok"]), None)
