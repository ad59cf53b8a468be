"""The benchmark machinery: FLOPs from the table, and a small real run of `i3d bench`."""
import json

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


def test_bench_cli_writes_json_markdown_and_chart(tmp_path):
    ok("bench", "--suite", "infer", "convert", "--frameworks", "torch", "--frames", "8",
       "--size", "64", "--repeat", "1", "--out", tmp_path, "--name", "t")
    result = json.load(open(tmp_path / "t.json"))
    names = {row["name"] for row in result["rows"]}
    assert {"torch eager", "torch channels_last_3d", "torch.compile"} <= names
    assert {"default -> mindspore", "mindspore -> torch"} <= names
    assert result["ceiling"]["gflops"] > 0 and result["environment"]["versions"]["torch"]
    for row in result["rows"]:
        assert row["median_s"] > 0 and row["min_s"] <= row["median_s"] <= row["max_s"]
        if row["suite"] == "infer":
            assert 0 < row["fraction_of_ceiling"] < 1.5
    assert "| torch eager |" in (tmp_path / "t.md").read_text()
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
