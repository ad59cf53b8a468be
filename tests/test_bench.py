"""The benchmark machinery: FLOPs from the table, and a small real run of `i3d bench`."""
import json
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import i3d_torch
from convert import architecture as arch
from tests.helpers import ok


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
        if row["suite"] == "infer":
            assert 0 < row["fraction_of_ceiling"] < 1.5
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
    assert 0 < train[0]["fraction_of_ceiling"] < 1.5
    ops = {r["name"]: r for r in result["rows"] if r["suite"] == "ops"}
    assert set(ops) == {"stem: conv3d", "stem: time unfold + conv2d",
                        "13 max-pools: torch max_pool3d", "13 max-pools: window max"}
    assert all(r["median_s"] > 0 and r["clip"] == "8x32x32" for r in ops.values())
    md = (tmp_path / "t.md").read_text()
    assert "| torch eager | bfloat16 | 8x40x40 | 2 |" in md and "| stem: conv3d |" in md


def test_train_ab_refuses_bad_arguments_before_any_work(tmp_path):
    """benchmarks/train_ab.py (a script, with argparse's usage as gpu_check has it): bad
    numbers, a kernels file it would overwrite (refused before the run, without --force), no
    CUDA for the profile: exit 2, no traceback, the last line says why; nothing is written."""
    (tmp_path / "train-kernels.txt").write_text("precious")
    cases = [(("--rounds", "0"), "--rounds must be at least 1"),
             (("--device", "cpu", "--size", "-3"), "--size must be at least 1"),
             (("--profile", tmp_path), "already exists (use --force to overwrite)"),
             (("--device", "cpu", "--profile", tmp_path / "new"), "needs --device cuda")]
    for argv, words in cases:
        r = subprocess.run([sys.executable, "-m", "benchmarks.train_ab", *map(str, argv)],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.splitlines()[-1].startswith("train_ab: error: ") and words in r.stderr
    assert (tmp_path / "train-kernels.txt").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["train-kernels.txt"]
