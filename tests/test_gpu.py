"""The torch twin on CUDA: predict parity with the reference logits, autocast top-5, training
steps (the DeepMind variant's BatchNorm without gamma), end points against the CPU, and the
bench suites. Marked `gpu`; skipped without a CUDA device. `make gpu-check` runs them on a
GPU machine with a short bench (benchmarks/gpu_check.py). MindSpore's GPU path is not here:
its GPU plugin needs CUDA 11, so its GPU-only code is exercised on the CPU instead."""
import json

import numpy as np
import pytest
import torch

import i3d_torch
from convert import architecture as arch
from tests.helpers import POOLS, ok

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason=f"no CUDA device: torch {torch.__version__} (built for CUDA "
           f"{torch.version.cuda or 'none'}) sees none on this machine")]

CL = torch.channels_last_3d
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@pytest.fixture
def fp32_exact():
    """Plain float32 on CUDA (TF32 off for matmuls and convolutions), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def cuda_model(weights):
    return i3d_torch.build(weights).cuda()


def _top(logits, k=5):
    return list(np.argsort(-np.asarray(logits, np.float64))[:k])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last_3d"])
def test_predict_on_cuda_reproduces_reference(cuda_model, cricket_clip, reference_logits,
                                              fp32_exact, layout):
    fmt = CL if layout == "channels_last_3d" else torch.contiguous_format
    x = torch.from_numpy(cricket_clip).cuda().contiguous(memory_format=fmt)
    with torch.inference_mode():
        logits = cuda_model.to(memory_format=fmt)(x)[0].cpu().numpy()
    err = np.abs(logits - reference_logits).max()
    assert err < 1e-4, f"max |logits - reference| = {err:.2e} on CUDA, float32, {layout}"
    assert _top(logits) == _top(reference_logits)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_autocast_keeps_the_top5(cuda_model, cricket_clip, reference_logits, dtype):
    x = torch.from_numpy(cricket_clip).cuda().contiguous(memory_format=CL)
    with torch.inference_mode(), torch.autocast("cuda", DTYPES[dtype]):
        logits = cuda_model.to(memory_format=CL)(x)[0].float().cpu().numpy()
    assert _top(logits) == _top(reference_logits), (dtype, np.abs(logits - reference_logits).max())
    assert np.abs(logits - reference_logits).max() < 0.5


def test_end_points_on_cuda_match_the_cpu(weights, clip64, fp32_exact):
    x = np.ascontiguousarray(clip64[:, :, :24])
    cpu = i3d_torch.end_points(weights, x)
    model = i3d_torch.build(weights, final_endpoint="Predictions").cuda()
    with torch.inference_mode():
        cuda = {k: v.cpu().numpy() for k, v in model.end_points(torch.from_numpy(x).cuda()).items()}
    assert list(cuda) == list(cpu)
    for name in cpu:
        scale = max(1.0, float(np.abs(cpu[name]).max()))
        err = float(np.abs(cuda[name] - cpu[name]).max())
        assert err < 1e-4 * scale, f"{name}: max abs {err:.2e} (scale {scale:.1f})"


def _bn_train(x, grad):
    """Output, input gradient and running statistics of the twin's training-mode batch norm."""
    from i3d_torch import model as twin

    kind = dict(device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
    stats = [torch.zeros(x.shape[1], **kind), torch.ones(x.shape[1], **kind)]
    v = x.clone().requires_grad_()
    y = twin._batch_norm(v, *stats, torch.ones_like(stats[0]), torch.zeros_like(stats[0]), True,
                         0.1, 1e-3)
    y.backward(grad)
    return y.detach(), v.grad, *stats


def test_fast_paths_on_cuda_equal_torchs_ops(cuda_model, cricket_clip, fp32_exact):
    """The unfolded stem against cuDNN's conv3d, the pools (without indices, and training's
    separable one with its gradient) against torch's max_pool3d, and training's batch norm in
    float32 (cuDNN's) and bf16 (torch's, channels_last_3d as a 4-D view) against torch's in
    float64, on the real stem weights and activations, in both layouts, layouts kept."""
    from i3d_torch import model as twin

    stem = next(u for u in arch.units() if twin.unfolds(u))
    w = getattr(cuda_model, stem.path).conv.weight
    for fmt in (torch.contiguous_format, CL):
        x = torch.from_numpy(cricket_clip[:, :, :33]).cuda().contiguous(memory_format=fmt)
        pads = arch.conv_padding(arch.DEEPMIND, tuple(x.shape[2:]), stem.kernel, stem.stride)
        with torch.inference_mode():
            ref = twin._conv3d(x, w, None, pads, stem.stride)
            out = twin._conv_time_unfolded(x, w, None, pads, stem.stride)
            assert out.is_contiguous(memory_format=fmt)
            assert (out - ref).abs().max() < 1e-5 * ref.abs().max()
            act = torch.relu(ref)
            for kernel, stride in POOLS:
                pads = arch.pool_padding(tuple(act.shape[2:]), kernel, stride)
                a = twin._window_max(act, pads, kernel, stride)
                assert torch.equal(a, twin._torch_max_pool(act, pads, kernel, stride))
                # in the layout of its input (cuDNN may hand the stem's output on as NDHWC)
                layout = CL if twin._channels_last(act) else torch.contiguous_format
                assert a.is_contiguous(memory_format=layout)
        # training's pool, on the conv's output (distinct values: one maximum a window)
        for kernel, stride in POOLS:
            pads = arch.pool_padding(tuple(ref.shape[2:]), kernel, stride)
            outs, grads = [], []
            for f in (twin._torch_max_pool, twin._separable_max_pool):
                v = ref.clone().requires_grad_()
                y = f(v, pads, kernel, stride)
                y.backward(torch.ones_like(y))
                outs.append(y.detach())
                grads.append(v.grad)
            layout = CL if twin._channels_last(ref) else torch.contiguous_format
            assert torch.equal(*outs) and outs[1].is_contiguous(memory_format=layout)
            assert torch.allclose(*grads, rtol=0, atol=1e-5)
        g = torch.randn_like(ref)
        for dtype, tol in ((torch.float32, 1e-3), (torch.bfloat16, 2e-2)):
            a, b = ref.to(dtype), g.to(dtype)
            got = _bn_train(a.contiguous(memory_format=fmt), b.contiguous(memory_format=fmt))
            want = _bn_train(a.double().contiguous(), b.double().contiguous())
            assert got[0].is_contiguous(memory_format=fmt) and got[1].is_contiguous(memory_format=fmt)
            for name, x, y in zip(("output", "gradient", "mean", "var"), got, want):
                err = (x.float() - y.float()).abs().max().item()
                assert err <= tol * y.float().abs().max().item(), (name, dtype, fmt, err)


@pytest.mark.parametrize("variant,dtype,layout", [
    ("deepmind", "float32", "contiguous"),      # BatchNorm without gamma: the failing path
    ("deepmind", "bfloat16", "channels_last_3d"),
    ("pytorch-i3d", "float16", "channels_last_3d"),
])
def test_training_steps_on_cuda_reduce_the_loss(weights, variant, dtype, layout):
    torch.manual_seed(0)
    fmt = CL if layout == "channels_last_3d" else torch.contiguous_format
    v = arch.VARIANTS[variant]
    if v.bn_scale:  # DeepMind's weights with an identity gamma: the same function, affine BN
        weights = {u: {**p, **({"gamma": np.ones_like(p["beta"])} if "beta" in p else {})}
                   for u, p in weights.items()}
    model = i3d_torch.build(weights, v, head="global").cuda().train()
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 10, enabled=dtype == "float16")
    rng = np.random.RandomState(0)
    x = torch.from_numpy(rng.uniform(-1, 1, (4, 3, 16, 112, 112)).astype(np.float32)).cuda()
    x = x.contiguous(memory_format=fmt)
    y = torch.from_numpy(rng.randint(0, 400, 4)).cuda()
    stats0 = model.Conv3d_1a_7x7.bn.running_mean.clone()
    losses = []
    for _ in range(6):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", torch.bfloat16 if dtype == "bfloat16" else torch.float16,
                            enabled=dtype != "float32"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses
    assert not torch.equal(model.Conv3d_1a_7x7.bn.running_mean, stats0)  # BN trained
    assert model.Conv3d_1a_7x7.bn.bias.grad is not None


def test_bench_suites_on_cuda(tmp_path):
    ok("bench", "--device", "cuda", "--suite", "infer", "train", "ops", "--frameworks", "torch",
       "--frames", "16", "--size", "112", "--batch", "2", "--repeat", "2", "--no-compile",
       "--out", tmp_path, "--name", "t")
    result = json.load(open(tmp_path / "t.json"))
    cfg, env = result["config"], result["environment"]
    assert cfg["dtype"] == "bfloat16" and cfg["layout"] == "channels_last_3d"  # GPU defaults
    assert cfg["cudnn_benchmark"] and (cfg["train_frames"], cfg["train_size"]) == (16, 112)
    c = result["ceilings"]
    assert c["bfloat16"]["n"] == 8192 and c["bfloat16"]["gflops"] > c["float32"]["gflops"] > 0
    assert result["bandwidth"]["gb_per_s"] > 100
    rows = {(r["suite"], r["name"]): r for r in result["rows"]}
    for key in [("infer", "torch eager"), ("infer", "torch channels_last_3d"),
                ("train", "torch eager"), ("train", "torch channels_last_3d")]:
        r = rows[key]
        assert r["dtype"] == "bfloat16" and r["clip"] == "16x112x112" and r["peak_gb"] > 0
        assert 0 < r["fraction_of_ceiling"] < 1, key
    assert len([k for k in rows if k[0] == "ops"]) == 4
    assert env["gpu"] in (tmp_path / "t.md").read_text()
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
