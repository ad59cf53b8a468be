"""The benchmark machinery: FLOPs from the table, and a small real run of `i3d bench`."""
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import i3d_torch
from convert import architecture as arch
from tests.helpers import fails, i3d, ok


@pytest.mark.parametrize("size,head", [((64, 224, 224), "deepmind"), ((15, 199, 211), "global")])
def test_flops_from_the_table_match_torchs_own_count(size, head):
    # on the meta device: shapes and FLOPs without arithmetic
    model = i3d_torch.InceptionI3d(head=head).eval().to("meta")
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(torch.zeros(1, 3, *size, device="meta"))
    assert arch.flops(size=size, head=head) == counter.get_total_flops()


@pytest.mark.slow
def test_bench_cli_writes_json_markdown_and_chart(tmp_path):
    ok("bench", "--suite", "infer", "convert", "--frameworks", "torch", "--frames", "8",
       "--size", "64", "--repeat", "1", "--out", tmp_path, "--name", "t")
    result = json.load(open(tmp_path / "t.json"))
    names = {row["name"] for row in result["rows"]}
    assert {"torch eager", "torch channels_last_3d", "torch.compile"} <= names
    assert {"default -> mindspore", "mindspore -> torch"} <= names
    assert result["ceilings"]["float32"]["gflops"] > 0 and result["bandwidth"]["gb_per_s"] > 0
    assert result["environment"]["versions"]["torch"] and result["config"]["batch"] == 1
    for row in result["rows"]:
        assert row["median_s"] > 0 and row["min_s"] <= row["median_s"] <= row["max_s"]
        if row["suite"] == "infer":  # the row against the ceiling measured in the same run
            # (a ratio of two timings: over 1 when the matmul ran under more load than the row)
            assert row["fraction_of_ceiling"] == pytest.approx(
                row["gflops"] / result["ceilings"]["float32"]["gflops"]) and row["gflops"] > 0
    assert "| torch eager |" in (tmp_path / "t.md").read_text()
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_bench_train_honours_dtype_and_ops_compares_the_fast_paths(tmp_path):
    ok("bench", "--suite", "train", "ops", "--frameworks", "torch", "--dtype", "bfloat16",
       "--frames", "8", "--size", "32", "--train-frames", "8", "--train-size", "40",
       "--repeat", "1", "--out", tmp_path, "--name", "t")
    result = json.load(open(tmp_path / "t.json"))
    assert set(result["ceilings"]) == {"float32", "bfloat16"}
    train = [r for r in result["rows"] if r["suite"] == "train"]
    assert [(r["name"], r["dtype"], r["clip"], r["batch"]) for r in train] == \
        [("torch eager", "bfloat16", "8x40x40", 2)]
    roof = max(c["gflops"] for c in result["ceilings"].values())  # CPU: the better of the two
    assert train[0]["fraction_of_ceiling"] == pytest.approx(train[0]["gflops"] / roof)
    assert train[0]["gflops"] > 0
    ops = {r["name"]: r for r in result["rows"] if r["suite"] == "ops"}
    assert set(ops) == {"stem: conv3d", "stem: time unfold + conv2d",
                        "13 max-pools: torch max_pool3d", "13 max-pools: window max"}
    assert all(r["median_s"] > 0 and r["clip"] == "8x32x32" for r in ops.values())
    md = (tmp_path / "t.md").read_text()
    assert "| torch eager | bfloat16 | 8x40x40 | 2 |" in md and "| stem: conv3d |" in md


# The ratio guard as CI runs it (docs/benchmarks.md): a 16x112x112 clip, where the 3x3x3
# convolutions carry most of the work as at 64x224x224. There the native Conv3D (oneDNN's
# reference kernel on this AVX-512 CPU) took 83x (graph) and 92x (PyNative) torch eager's time.
# The matmul kernels, with `make test`'s one thread per framework (I3D_THREADS=1): 0.65x and
# 1.80x on an idle machine, 2.11x and 2.28x beside a busy loop (the other test worker); with
# two threads each, PyNative took 12x its idle time beside two busy loops (MindSpore's pools
# spin). Held to 4x and 6x: the native kernel fails both by 14x or more.
GUARD = ("bench", "--suite", "infer", "--frameworks", "torch", "mindspore", "--frames", "16",
         "--size", "112", "--repeat", "3", "--no-compile")
LIMITS = {"mindspore graph": 4.0, "mindspore pynative": 6.0}


@pytest.mark.slow
def test_ratio_guard_holds_mindspore_near_torch(tmp_path):
    """MindSpore's median time over torch eager's, both modes, one process (a ratio holds on a
    loaded machine where a time limit does not), in the JSON and the markdown; `--max-ratio`
    over the limit names the rows on stderr and exits 1, the results written all the same."""
    ok(*GUARD, "--out", tmp_path, "--name", "g")
    result = json.load(open(tmp_path / "g.json"))
    ratios = {x["name"]: x["ratio"] for x in result["ratios"]}
    assert ratios.keys() == LIMITS.keys()
    assert all(0 < ratios[k] <= LIMITS[k] for k in LIMITS), ratios
    assert "MindSpore / torch eager, median time: infer graph" in (tmp_path / "g.md").read_text()
    from benchmarks.run import over

    assert over(result, max(ratios.values())) == []
    lines = over(result, min(ratios.values()) / 2)
    assert len(lines) == 2 and "infer: mindspore graph takes" in lines[0]
    r = i3d("bench", "--suite", "infer", "--frameworks", "torch", "mindspore", "--frames", "8",
            "--size", "32", "--repeat", "1", "--no-compile", "--max-ratio", "0.001",
            "--out", tmp_path, "--name", "over")
    assert r.returncode == 1 and "over --max-ratio 0.001" in r.stderr, r.stderr
    assert (tmp_path / "over.json").exists()  # the measurement is kept


def test_ratio_guard_refuses_runs_without_both_twins(tmp_path):
    for args in (("--frameworks", "torch"), ("--suite", "convert"), ("--dtype", "bfloat16")):
        fails("bench", "--max-ratio", "2", *args, "--out", tmp_path,
              words=("--max-ratio compares MindSpore with torch",))
    fails("bench", "--max-ratio", "-1", "--out", tmp_path, words=("--max-ratio",))
    assert not any(tmp_path.iterdir())


def test_benchmark_scripts_refuse_bad_arguments_before_any_work(tmp_path, capsys):
    """benchmarks/train_ab.py and gpu_check.py: bad numbers, results they would overwrite
    (without --force), a file for a folder or on its way, no CUDA for the profile: exit 2 and
    one line on stderr saying why, before any work; nothing is written."""
    from benchmarks import gpu_check, ms_kernels, train_ab

    for name in ("train-kernels.txt", "gpu-check.json", "kernels.md"):
        (tmp_path / name).write_text("precious")
    cases = [(train_ab, ("--rounds", "0"), "train_ab: error: --rounds must be at least 1"),
             (train_ab, ("--rounds", "x"), "train_ab: error: argument --rounds: invalid int"),
             (train_ab, ("--device", "cpu", "--size", "-3"), "--size must be at least 1"),
             (train_ab, ("--profile", tmp_path), "already exists (use --force to overwrite)"),
             (train_ab, ("--device", "cpu", "--profile", tmp_path / "new"), "needs --device cuda"),
             (gpu_check, (tmp_path,), "gpu_check: error: "),
             (gpu_check, (tmp_path / "gpu-check.json",), "not a folder"),
             (gpu_check, (tmp_path / "gpu-check.json" / "out",), "Not a directory"),
             (gpu_check, (tmp_path / "new", "--budget", "nan"), "--budget must be a number"),
             (gpu_check, (tmp_path / "new", "--budget", "0"), "--budget must be a number"),
             (ms_kernels, (tmp_path / "k.md", "--frames", "0"), "--frames must be at least 1"),
             (ms_kernels, (tmp_path / "k.md", "--native-limit", "nan"), "--native-limit must"),
             (ms_kernels, (tmp_path / "k.md", "--convs", "im2col"), "invalid choice"),
             (ms_kernels, (tmp_path / "kernels.md",), "already exists (use --force")]
    for script, argv, words in cases:
        try:
            code = script.main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and len(err.splitlines()) == 1 and words in err, (argv, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-check.json", "kernels.md",
                                                           "train-kernels.txt"]
    assert {p.read_text() for p in tmp_path.iterdir()} == {"precious"}



def test_ms_kernels_writes_its_layer_table(tmp_path):
    """`python -m benchmarks.ms_kernels` end to end at a small clip, one mode and kernel: the
    table lists every step of the twin and the whole network beside the torch twin."""
    import os
    import subprocess
    import sys

    out = tmp_path / "kernels.md"
    r = subprocess.run([sys.executable, "-m", "benchmarks.ms_kernels", str(out), "--frames", "16",
                        "--size", "112", "--repeat", "1", "--convs", "matmul", "--modes",
                        "pynative"], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr[-2000:]
    table = out.read_text()
    result = json.load(open(tmp_path / "kernels.json"))
    (run,) = result["runs"]
    assert [s["name"] for s in run["steps"]][:2] == ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3"]
    assert len(run["steps"]) == 16 and run["ratio"] > 0 and "| Mixed_5c |" in table
