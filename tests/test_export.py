"""`i3d export` and the runtime-only predict, on real weights (DeepMind's, and a checkpoint of
cd-fvd's copy of piergiaj's pytorch_i3d, whose own forward is the judge) and DeepMind's real
sample clip: each format run by its own runtime, against the twins and the independent
reference logits; dynamic batches, the recorded metadata, shapes that do not fit, files that are
not exports of this tool."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from convert.errors import I3DError
from tests.helpers import expect_error, fails, i3d, ok

TOL = 1e-4


@pytest.fixture(scope="module")
def onnx79(tmp_path_factory):
    """DeepMind's weights as ONNX for the sample's 79 frames (dynamic batch)."""
    path = str(tmp_path_factory.mktemp("onnx") / "i3d79.onnx")
    out = ok("export", "default", path, "--frames", "79")
    assert "verified at batch 1, 3" in out and "onnx, opset" in out
    return path


def _predict_json(*args) -> dict:
    return json.loads(ok("predict", *args, "--json"))


def test_onnx_predict_matches_the_reference_and_the_twin_without_torch(onnx79, reference_logits):
    from i3d_video import SAMPLE

    code = ("import json, sys; from i3d_cli.main import main; "
            f"rc = main(['predict', {SAMPLE!r}, '--framework', 'onnx', '--weights', {onnx79!r},"
            " '--json']); "
            "print(json.dumps(sorted(m for m in ('torch', 'mindspore', 'onnx', 'jax') "
            "if m in sys.modules)), file=sys.stderr); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stderr.strip().splitlines()[-1]) == []  # onnxruntime and numpy alone
    got = np.asarray(json.loads(r.stdout)["logits"])
    twin = np.asarray(_predict_json(SAMPLE)["logits"])
    assert np.abs(got - reference_logits).max() < TOL
    assert np.abs(got - twin).max() < TOL
    assert json.loads(r.stdout)["top"][0]["label"] == "playing cricket"


def test_dynamic_batch_and_metadata(onnx79, cricket_clip, weights):
    from convert.architecture import DEEPMIND
    from convert.labels import labels
    from convert.weights import weights_id
    from export.onnx_model import OnnxModel

    model = OnnxModel(onnx79)
    e = model.exported
    assert (e.frames, e.size, e.batch, e.output, e.variant) == (79, 224, None, "Logits", DEEPMIND)
    assert list(e.labels) == labels(400) and e.weights == weights_id(weights)
    flipped = np.ascontiguousarray(cricket_clip[..., ::-1])  # three different real clips
    three = np.concatenate([cricket_clip, flipped, -cricket_clip])
    together = model(three)
    apart = np.concatenate([model(c[None]) for c in three])
    assert together.shape == (3, 400) and np.abs(together - apart).max() < 1e-5
    with pytest.raises(I3DError, match="exported for clips"):
        model(np.ascontiguousarray(cricket_clip[:, :, :64]))


def test_a_wrong_length_or_a_foreign_file_is_one_line(onnx79, tmp_path):
    from i3d_video import SAMPLE

    fails("predict", SAMPLE, "--framework", "onnx", "--weights", onnx79, "--frames", "64",
          words=[onnx79, "79-frame", "--frames 64"])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07" + os.urandom(64))
    fails("predict", SAMPLE, "--framework", "onnx", "--weights", garbage, words=[str(garbage)])
    fails("predict", SAMPLE, "--framework", "onnx", words=["--weights"])
    import onnx

    plain = onnx.load(onnx79)  # the same model without this tool's metadata
    del plain.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(plain, bare)
    fails("predict", SAMPLE, "--framework", "onnx", "--weights", bare,
          words=[str(bare), "not an I3D export"])


def test_external_data_is_refused_before_onnxruntime_reads_anything(onnx79, tmp_path):
    """A tensor whose data sits 'in another file' (any path the model names) is refused by
    name, and the file it names is never opened (it is a FIFO: opening it would block)."""
    import onnx

    model = onnx.load(onnx79)
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = onnx.TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "trap"
    os.mkfifo(tmp_path / "trap")
    evil = tmp_path / "evil.onnx"
    onnx.save(model, evil)
    from i3d_video import SAMPLE

    fails("predict", SAMPLE, "--framework", "onnx", "--weights", evil,
          words=[str(evil), "external data", t.name])


def test_an_export_of_a_cdfvd_checkpoint_computes_what_cdfvd_computes(tmp_path, cricket_clip):
    """cd-fvd's copy of pytorch_i3d with random weights and BN statistics (its numbers are
    mindvideo-same: BN eps 1e-5, gamma, 'same' padding), its state_dict exported to ONNX:
    onnxruntime's logits are cd-fvd's own forward's."""
    import torch

    from export.onnx_model import OnnxModel
    from tests.test_variants import cdfvd_logits, randomised_cdfvd

    clip = np.ascontiguousarray(cricket_clip[:, :, :16])
    model = randomised_cdfvd(clip)
    want = cdfvd_logits(model, clip)
    pt, out = tmp_path / "fvd.pt", tmp_path / "fvd.onnx"
    torch.save(model.state_dict(), pt)
    ok("export", pt, out, "--frames", "16", "--variant", "mindvideo-same")
    onnx_model = OnnxModel(str(out))
    assert onnx_model.exported.variant.name == "mindvideo-same"
    assert len(onnx_model.exported.labels) == 7
    assert np.abs(onnx_model(clip) - want).max() < TOL


@pytest.mark.slow
def test_mindir_and_exported_program_of_a_variant_run_by_their_runtimes(tmp_path, cricket_clip):
    """A cd-fvd checkpoint declared `mindvideo` (symmetric padding, BN eps 1e-5, gamma: other
    numerics than DeepMind's at every layer) exported as MindIR and as a torch.export program:
    each runtime computes what its twin of that variant computes."""
    import torch

    import i3d_ms
    import i3d_torch
    from convert.architecture import MINDVIDEO
    from convert.checkpoints import read_weights
    from export.writers import MindirModel, ProgramModel
    from tests.test_variants import randomised_cdfvd

    clip = np.ascontiguousarray(cricket_clip[:, :, :16])
    pt = tmp_path / "fvd.pt"
    torch.save(randomised_cdfvd(clip).state_dict(), pt)
    weights, _ = read_weights(str(pt), MINDVIDEO)
    mindir, pt2 = str(tmp_path / "i3d.mindir"), str(tmp_path / "i3d.pt2")
    out = ok("export", pt, mindir, "--frames", "16", "--variant", "mindvideo")
    assert "max |export - mindspore twin|" in out and "variant mindvideo" in out
    ok("export", pt, pt2, "--frames", "16", "--variant", "mindvideo")
    i3d_ms.set_mode("pynative")
    ms_logits = i3d_ms.predict(weights, clip, MINDVIDEO)
    torch_logits = i3d_torch.predict(weights, clip, MINDVIDEO)
    m = MindirModel(mindir)
    assert (m.exported.batch, m.exported.frames, m.exported.variant) == (1, 16, MINDVIDEO)
    assert json.load(open(mindir + ".json"))["i3d.variant_name"] == "mindvideo"
    assert np.abs(m(clip) - ms_logits).max() < TOL
    p = ProgramModel(pt2)
    assert p.exported.batch is None and p.exported.variant == MINDVIDEO
    assert np.abs(p(np.concatenate([clip, clip])) - np.concatenate([torch_logits] * 2)).max() < TOL
    garbage = tmp_path / "garbage.mindir"  # a valid record beside bytes that are no model
    garbage.write_bytes(b"not a model")
    os.rename(mindir + ".json", str(garbage) + ".json")
    with pytest.raises(I3DError, match="garbage.mindir: MindSpore cannot load it"):
        MindirModel(str(garbage))
    with pytest.raises(I3DError, match="metadata file"):
        MindirModel(mindir)


def test_export_refusals_leave_nothing(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    fails("export", "default", out, words=[str(out), "--force"])
    assert out.read_bytes() == b"keep me"
    fails("export", "default", tmp_path / "m.mindir", "--batch", "dynamic",
          words=["mindir", "--batch N"])
    fails("export", "default", tmp_path / "short.onnx", "--frames", "4", words=["--frames 4"])
    fails("export", "default", tmp_path / "m.bin", words=[str(tmp_path / "m.bin"), "--format"])
    r = i3d("export", "default", tmp_path / "x.onnx", "--batch", "0")
    expect_error(r, "--batch")
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_exports_take_part_in_parity(onnx79, tmp_path):
    report = tmp_path / "parity.json"
    out = ok("parity", "--frameworks", "torch", "--exports", onnx79, "--frames", "all",
             "--json", report)
    assert "onnx i3d79.onnx vs torch" in out and out.rstrip().endswith("PASS")
    (comparison,) = json.load(open(report))["reports"][0]["comparisons"]
    assert [r["name"] for r in comparison["rows"]] == ["Logits"]
    assert comparison["rows"][0]["max_abs"] < TOL
    fails("parity", "--frameworks", "torch", "--exports", onnx79, "--frames", "64",
          words=[onnx79, "exported for clips"])
    fails("parity", "--frameworks", "torch", "--exports", onnx79, "--variant", "mindvideo",
          "--frames", "all", words=[onnx79, "variant deepmind", "mindvideo"])
