"""`i3d parity` as users run it: table, JSON, markdown and PNG; exit status follows the verdict."""
import json

from tests.helpers import i3d


def test_parity_cli_writes_every_report(tmp_path):
    out = {k: str(tmp_path / f"parity.{k}") for k in ("json", "md", "png")}
    r = i3d("parity", "--frames", "16", "--frameworks", "torch", "mindspore", "--json",
            out["json"], "--markdown", out["md"], "--plot", out["png"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mindspore vs torch" in r.stdout and r.stdout.strip().endswith("PASS")
    report = json.load(open(out["json"]))
    assert report["ok"] and report["reports"][0]["kind"] == "forward"
    rows = report["reports"][0]["comparisons"][0]["rows"]
    assert [row["name"] for row in rows][:2] == ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3"]
    assert {"max_abs", "max_rel", "mean_abs", "cosine", "within", "ok"} <= set(rows[0])
    assert "| Mixed_5c |" in open(out["md"]).read()
    with open(out["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(out["png"]).size[0] > 500


def test_parity_cli_fails_on_a_too_tight_tolerance(tmp_path):
    r = i3d("parity", "--frames", "9", "--frameworks", "torch", "mindspore", "--tolerance",
            "1e-9")
    assert r.returncode == 1 and "first end point over tolerance: Conv3d_1a_7x7" in r.stdout
