"""The parity report for people: a table on stdout, markdown, and a PNG of error by end point.
The writers write the file they are given: `i3d parity` hands them the temporary names of one
`convert.fileio.atomic_outputs`, so its outputs appear all together or not at all."""
from __future__ import annotations

import json
import os

from . import training


def _forward_table(c: dict, md: bool) -> list:
    head = ["end point", "max abs", "max rel", "mean abs", "cosine", "within tol", "ok"]
    lines = []
    if md:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    else:
        lines.append(f"{head[0]:<18}{head[1]:>10}{head[2]:>10}{head[3]:>10}{head[4]:>13}"
                     f"{head[5]:>11}  ok")
    for r in c["rows"]:
        cells = [r["name"], f"{r['max_abs']:.2e}", f"{r['max_rel']:.2e}", f"{r['mean_abs']:.2e}",
                 f"{r['cosine']:.8f}", f"{r['within']:.2%}", "yes" if r["ok"] else "NO"]
        lines.append("| " + " | ".join(cells) + " |" if md else
                     f"{cells[0]:<18}{cells[1]:>10}{cells[2]:>10}{cells[3]:>10}{cells[4]:>13}"
                     f"{cells[5]:>11}  {cells[6]}")
    return lines


def text(report: dict, md: bool = False) -> str:
    if report["kind"] == "training":
        return training.text(report, md)
    h = "### " if md else ""
    out = []
    if report["kind"] == "forward":
        out.append(f"{h}Forward parity, input {tuple(report['input_shape'])}, "
                   f"reference: {report['reference']}")
        for s in report["skipped"]:
            out.append(f"skipped: {s}")
        for c in report["comparisons"]:
            out += ["", f"{h}{c['a']} vs {c['b']} (max abs <= {c['tolerance']:g}, cosine >= "
                    f"{c['min_cosine']:g})"]
            out += _forward_table(c, md)
            out.append(f"first end point over tolerance: {c['first_failure'] or 'none'}")
        out += ["", "top-1 class: " + ", ".join(f"{k} {v}" for k, v in report["top1"].items())]
    else:
        out.append(f"{h}Backward parity, input {tuple(report['input_shape'])}, "
                   f"{report['steps']} SGD steps (momentum 0.9, weight decay 1e-4)")
        for name, sec in report["sections"].items():
            out += ["", f"{h}{name}: every tensor within {sec['gate']:g} relative"]
            out.append("  loss  " + "  ".join(f"{s['torch']:.6f}/{s['mindspore']:.6f}"
                                             for s in sec["losses"]) + "  (torch/mindspore)")
            out.append(f"  gradients within {report['tolerance']:g}: "
                       f"{sec['within_tolerance']:.1%}, median rel {sec['median_grad_rel']:.1e}, "
                       f"max {sec['max_grad_rel']:.1e}")
            for r in sorted(sec["rows"], key=lambda r: -r["rel"])[:3]:
                extra = (f"  (torch fp32 vs fp64 {r['torch_fp32_vs_fp64']:.1e}, mindspore vs "
                         f"fp64 {r['mindspore_vs_fp64']:.1e})" if "torch_fp32_vs_fp64" in r else "")
                out.append(f"  {r['name']:<50} rel {r['rel']:.1e}{extra}")
            out.append(f"  first tensor over its limit: {sec['first_failure'] or 'none'}")
    out.append(f"{'PASS' if report['ok'] else 'FAIL'}")
    return "\n".join(out)


def write_json(reports: list, path: str):
    with open(path, "w") as f:
        json.dump({"reports": reports, "ok": all(r["ok"] for r in reports)}, f, indent=1)


def write_markdown(reports: list, path: str):
    with open(path, "w") as f:
        f.write("\n\n".join(text(r, md=True) for r in reports) + "\n")


def write_plot(reports: list, path: str):
    """Max abs error by end point of the forward report, one line per comparison, tolerance
    dashed."""
    report = reports[0]
    if report["kind"] == "training":
        return training.plot(report, path)
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for c in report["comparisons"]:
        names = [r["name"] for r in c["rows"]]
        ax.semilogy(range(len(names)), [max(r["max_abs"], 1e-12) for r in c["rows"]], "o-",
                    label=f"{c['a']} vs {c['b']}")
        ax.axhline(c["tolerance"], ls="--", lw=1, color=ax.lines[-1].get_color())
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("max |difference|")
    ax.set_title(f"I3D parity by end point, input {tuple(report['input_shape'])}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
