"""Both twins against the reference logits, and against each other end point by end point."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import i3d_torch
from convert import architecture as arch


def ms_mode(mode):
    import i3d_ms

    i3d_ms.set_mode(mode)


LABEL = "playing cricket"


def _torch_end_points(weights, x, **kw):
    return i3d_torch.end_points(weights, x, **kw)


def _ms_end_points(weights, x, mode="pynative", **kw):
    import i3d_ms

    ms_mode(mode)
    return i3d_ms.end_points(weights, x, **kw)


def _labels():
    from convert.labels import labels

    return labels()


def test_torch_twin_reproduces_reference(weights, cricket_clip, reference_logits):
    logits = i3d_torch.predict(weights, cricket_clip)[0]
    assert np.abs(logits - reference_logits).max() < 1e-4
    assert _labels()[int(logits.argmax())] == LABEL


def test_mindspore_twin_reproduces_reference(weights, cricket_clip, reference_logits):
    import i3d_ms

    ms_mode("pynative")
    logits = i3d_ms.predict(weights, cricket_clip)[0]
    assert np.abs(logits - reference_logits).max() < 1e-4
    assert _labels()[int(logits.argmax())] == LABEL


def _compare(a, b, tol=1e-4):
    assert list(a) == list(b)
    for name in a:
        assert a[name].shape == b[name].shape, name
        err = np.abs(a[name] - b[name]).max()
        assert err < tol, f"{name}: max abs {err:.2e}"


@pytest.mark.parametrize("frames", [16, 17])
def test_twins_agree_at_224(weights, frames):
    x = np.random.RandomState(frames).uniform(-1, 1, (1, 3, frames, 224, 224)).astype(np.float32)
    a, b = _torch_end_points(weights, x), _ms_end_points(weights, x)
    _compare(a, b)
    assert a["PerTimeLogits"].shape == (1, 400, -(-frames // 8) - 1)


def test_twins_agree_at_224_on_64_real_frames(forward_outputs):
    a, b = forward_outputs["torch"], forward_outputs["mindspore"]
    _compare(a, b)
    assert a["PerTimeLogits"].shape == (1, 400, 7)


def test_twins_agree_at_odd_sizes_with_global_head(weights):
    x = np.random.RandomState(1).uniform(-1, 1, (2, 3, 15, 199, 211)).astype(np.float32)
    a = _torch_end_points(weights, x, head="global")
    _compare(a, _ms_end_points(weights, x, head="global"))
    assert a["Mixed_5c"].shape == (2, 1024, 2, 7, 7)
    assert a["PerTimeLogits"].shape == (2, 400, 2)


def test_twins_agree_in_graph_mode(weights):
    x = np.random.RandomState(2).uniform(-1, 1, (1, 3, 16, 224, 224)).astype(np.float32)
    try:
        b = _ms_end_points(weights, x, mode="graph")
    finally:
        ms_mode("pynative")
    _compare(_torch_end_points(weights, x), b)


def test_mode_switches_after_kernels_have_run():
    """MindSpore fixes the device when the first kernel runs; switching the mode afterwards (as
    the CLI and every test do) must not try to set it again."""
    code = ("import numpy as np, i3d_ms; from mindspore import Tensor; "
            "Tensor(np.ones(2, np.float32)).sum().asnumpy(); "
            "i3d_ms.set_mode('graph'); i3d_ms.set_mode('pynative'); print('switched')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert (r.returncode, r.stdout.strip()) == (0, "switched"), r.stderr[-2000:]


def test_symmetric_padding_variant_differs_and_twins_agree_on_it(weights):
    x = np.random.RandomState(3).uniform(-1, 1, (1, 3, 16, 224, 224)).astype(np.float32)
    variant = arch.Variant(padding="symmetric", bn_eps=1e-5, bn_scale=False)
    sym = _torch_end_points(weights, x, variant=variant)
    _compare(sym, _ms_end_points(weights, x, variant=variant))
    ref = _torch_end_points(weights, x)
    assert np.abs(sym["Conv3d_1a_7x7"] - ref["Conv3d_1a_7x7"]).max() > 1e-2


def test_head_outputs_are_consistent(weights):
    x = np.random.RandomState(4).uniform(-1, 1, (2, 3, 24, 224, 224)).astype(np.float32)
    ep = _torch_end_points(weights, x, final_endpoint="Predictions")
    logits_w = weights["Logits/Conv3d_0c_1x1"]
    from_features = ep["Features"] @ logits_w["w"].reshape(400, 1024).T + logits_w["b"]
    assert np.abs(from_features - ep["Logits"]).max() < 1e-4  # linear head: mean commutes
    assert np.allclose(ep["PerTimeLogits"].mean(2), ep["Logits"], atol=1e-5)
    assert np.allclose(ep["Predictions"].sum(1), 1, atol=1e-5)


def test_final_endpoint_stops_early_and_custom_classes():
    x = np.zeros((1, 3, 16, 112, 112), np.float32)
    model = i3d_torch.InceptionI3d(final_endpoint="Mixed_4c").eval()
    with torch.inference_mode():
        ep = model.end_points(torch.from_numpy(x))
    assert list(ep)[-1] == "Mixed_4c" and tuple(ep["Mixed_4c"].shape) == (1, 512, 4, 7, 7)
    assert not hasattr(model, "Mixed_5c")  # nothing is built past the final end point
    model = i3d_torch.InceptionI3d(num_classes=7, head="global").eval()
    with torch.inference_mode():
        assert tuple(model(torch.from_numpy(x)).shape) == (1, 7)
    with pytest.raises(ValueError, match="head='global'"):
        i3d_torch.InceptionI3d()(torch.from_numpy(x))
    with pytest.raises(ValueError, match="unknown end point"):
        i3d_torch.InceptionI3d(final_endpoint="Mixed_9z")
