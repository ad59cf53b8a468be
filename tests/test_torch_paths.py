"""The torch twin's GPU-minded code paths, run on the CPU: BatchNorm in training mode without
gamma (the CUDA training fix), the max-pools without indices, the stem as a temporal unfold +
2-D conv, and channels_last_3d. Each is held against torch's plain op or a numpy brute force,
and the whole network against the reference logits. The same paths on CUDA: tests/test_gpu.py."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import i3d_torch
from convert import architecture as arch
from i3d_torch import model as twin
from tests.helpers import POOLS

CL = torch.channels_last_3d


def _bn_reference(x, beta, mean, var, eps, momentum):
    """Sonnet BatchNorm in training mode, in float64 numpy: (output, new running mean, var)."""
    x = x.astype(np.float64)
    m, v = x.mean(axis=(0, 2, 3, 4)), x.var(axis=(0, 2, 3, 4))
    n = x.size // x.shape[1]
    y = (x - m[:, None, None, None]) / np.sqrt(v[:, None, None, None] + eps) + beta[:, None, None, None]
    return (y, (1 - momentum) * mean + momentum * m,
            (1 - momentum) * var + momentum * v * n / (n - 1))


def test_batchnorm_without_gamma_trains_as_unit_gamma():
    rng = np.random.RandomState(0)
    x = (rng.randn(2, 8, 3, 5, 4) * 3 + 1).astype(np.float32)
    bn = i3d_torch.BatchNorm(8, eps=1e-3, scale=False).train()
    assert bn.weight is None and "weight" not in bn.state_dict()  # no gamma in the checkpoint
    with torch.no_grad():
        bn.bias.copy_(torch.from_numpy(rng.randn(8).astype(np.float32)))
        bn.running_mean.copy_(torch.from_numpy(rng.randn(8).astype(np.float32)))
    beta, mean0, var0 = (t.detach().numpy().copy() for t in (bn.bias, bn.running_mean,
                                                                bn.running_var))
    xt = torch.from_numpy(x).requires_grad_()
    y = bn(xt)
    g = torch.from_numpy(rng.randn(*x.shape).astype(np.float32))
    (y * g).sum().backward()
    ref_y, ref_mean, ref_var = _bn_reference(x, beta, mean0, var0, 1e-3, bn.momentum)
    assert np.abs(y.detach().numpy() - ref_y).max() < 1e-5
    assert np.allclose(bn.running_mean.numpy(), ref_mean, atol=1e-6)
    assert np.allclose(bn.running_var.numpy(), ref_var, atol=1e-6)
    # gradients: exactly those of torch's batch_norm without a weight (the path it replaces)
    x2 = torch.from_numpy(x).requires_grad_()
    beta2 = torch.from_numpy(beta).requires_grad_()
    y2 = F.batch_norm(x2, torch.from_numpy(mean0), torch.from_numpy(var0), None, beta2, True,
                      bn.momentum, 1e-3)
    (y2 * g).sum().backward()
    assert torch.allclose(xt.grad, x2.grad, atol=1e-6) and xt.grad.abs().max() > 0
    assert torch.allclose(bn.bias.grad, beta2.grad, atol=1e-5)
    assert torch.allclose(bn.bias.grad, g.sum((0, 2, 3, 4)), atol=1e-4)  # d(out)/d(beta) = 1


class _AtenInputs(TorchDispatchMode):
    """Records the tensor arguments of more than one dimension of every aten op whose name
    contains `word`: what torch's kernels are handed, which decides the kernels they pick."""

    def __init__(self, word):
        super().__init__()
        self.word, self.seen = word, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.word in func.__name__:
            self.seen += [a for a in args if isinstance(a, torch.Tensor) and a.dim() > 1]
        return func(*args, **(kwargs or {}))


def test_batchnorm_runs_channels_last_3d_as_4d_channels_last():
    """The same function in both layouts (float64: forward against numpy, gradients, running
    statistics, layouts kept), with the channels_last_3d input handed to torch as a 4-D
    channels_last view (B, C, T*H, W): the layout for which torch's own CUDA batch norm (bf16,
    float64) picks its fast kernels (it runs channels_last_3d through generic ones)."""
    rng = np.random.RandomState(0)
    x, beta = rng.randn(2, 16, 3, 5, 4) * 3 + 1, rng.randn(16)
    g = torch.from_numpy(rng.randn(*x.shape))
    results = {}
    for layout in (torch.contiguous_format, CL):
        bn = i3d_torch.BatchNorm(16, eps=1e-3, scale=False).double().train()
        with torch.no_grad():
            bn.bias.copy_(torch.from_numpy(beta))
        xt = torch.from_numpy(x).contiguous(memory_format=layout).requires_grad_()
        with _AtenInputs("batch_norm") as ops:  # forward and backward (input, output gradient)
            y = bn(xt)
            y.backward(g.contiguous(memory_format=layout))  # as a conv's would be
        assert y.is_contiguous(memory_format=layout) and xt.grad.is_contiguous(memory_format=layout)
        assert len(ops.seen) == 3 and all(a.dim() == (4 if layout is CL else 5) for a in ops.seen)
        if layout is CL:
            assert all(a.is_contiguous(memory_format=torch.channels_last) for a in ops.seen)
        results[layout] = [t.detach() for t in (y, xt.grad, bn.bias.grad, bn.running_mean,
                                                bn.running_var)]
    ref = _bn_reference(x, beta, np.zeros(16), np.ones(16), 1e-3, bn.momentum)
    for got, want in zip(results[CL][:1] + results[CL][3:], ref):
        assert np.abs(got.numpy() - want).max() < 1e-12
    for a, b in zip(*results.values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-12 * a.abs().max().item())
    # float32 goes as it is (on CUDA cuDNN's kernels take channels_last_3d; a view was slower)
    bn = i3d_torch.BatchNorm(16, eps=1e-3, scale=False).eval()
    with _AtenInputs("batch_norm") as ops, torch.no_grad():
        y = bn(torch.from_numpy(x).float().contiguous(memory_format=CL))
    assert [a.dim() for a in ops.seen] == [5] and ops.seen[0].is_contiguous(memory_format=CL)
    assert y.is_contiguous(memory_format=CL)


def test_batchnorm_trains_channels_last_3d_on_the_cpu_to_float32_precision(weights, cricket_clip):
    """torch's CPU batch norm computes channels-last statistics less precisely than NCDHW ones
    (float32, the stem's output on the sample clip: relative errors 6e-5 in the output, 2e-4
    in the variance): the twin hands such input to it as NCDHW, so both layouts meet float64
    to float32 precision."""
    stem = i3d_torch.build(weights, final_endpoint="Conv3d_1a_7x7").Conv3d_1a_7x7
    x = torch.from_numpy(cricket_clip[:, :, :33]).double()
    u = stem.unit
    with torch.no_grad():
        pads = arch.conv_padding(stem.variant, tuple(x.shape[2:]), u.kernel, u.stride)
        c = twin._conv3d(x, stem.conv.weight.double(), None, pads, u.stride).numpy()
    ref_y, _, ref_var = _bn_reference(c, np.zeros(64), np.zeros(64), np.ones(64), 1e-3, 1.0)
    for layout in (torch.contiguous_format, CL):
        bn = i3d_torch.BatchNorm(64, eps=1e-3, scale=False, momentum=1.0).train()
        with torch.no_grad():
            y = bn(torch.from_numpy(c).float().contiguous(memory_format=layout))
        assert y.is_contiguous(memory_format=layout)
        assert np.abs(y.numpy() - ref_y).max() < 1e-6 * np.abs(ref_y).max(), layout
        assert np.abs(bn.running_var.numpy() / ref_var - 1).max() < 1e-6, layout


def test_deepmind_variant_trains(weights):
    """A few SGD steps of the gamma-less twin (cut after Conv3d_2c_3x3) on one batch: the loss
    falls, every parameter gets a gradient, BN statistics move by DeepMind's decay."""
    torch.manual_seed(0)
    model = i3d_torch.build(weights, final_endpoint="Conv3d_2c_3x3").train()
    assert all(m.weight is None for m in model.modules() if isinstance(m, i3d_torch.BatchNorm))
    head = torch.nn.Linear(192, 3)
    x = torch.from_numpy(np.random.RandomState(1).uniform(-1, 1, (3, 3, 8, 48, 48))
                         .astype(np.float32))
    y = torch.tensor([0, 1, 2])
    stats0 = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1)
    losses = []
    for step in range(4):
        opt.zero_grad()
        loss = F.cross_entropy(head(model(x).mean((2, 3, 4))), y)
        loss.backward()
        if step == 0:
            for name, p in model.named_parameters():
                assert p.grad is not None and p.grad.abs().max() > 0, name
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.02, losses
    for k, v in model.state_dict().items():
        if "running" in k:  # 4 steps of decay 0.999: moved, by well under 1% of the way
            moved = (v - stats0[k]).abs().max().item()
            assert 0 < moved < 0.05 * (stats0[k].abs().max().item() + 1), k


def _pool_numpy(x, kernel, stride):
    """TF 'SAME' max-pool by brute force: -inf outside the input."""
    pads = arch.pool_padding(x.shape[2:], kernel, stride)
    xp = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=-np.inf)
    out_shape = [(n + s - 1) // s for n, s in zip(x.shape[2:], stride)]
    out = np.empty(x.shape[:2] + tuple(out_shape), x.dtype)
    for i, j, k in itertools.product(*map(range, out_shape)):
        a, b, c = i * stride[0], j * stride[1], k * stride[2]
        out[:, :, i, j, k] = xp[:, :, a:a + kernel[0], b:b + kernel[1], c:c + kernel[2]] \
            .max(axis=(2, 3, 4))
    return out


@pytest.mark.parametrize("kernel,stride", POOLS)
def test_window_max_is_tf_same_pool_bit_for_bit(kernel, stride):
    rng = np.random.RandomState(0)
    for shape in [(2, 3, 5, 7, 6), (1, 4, 8, 9, 11), (1, 2, 1, 1, 2)]:
        x = -rng.rand(*shape).astype(np.float32) - 1  # all negative: a zero pad would show
        ref = _pool_numpy(x, kernel, stride)
        for layout, dtype in [(torch.contiguous_format, torch.float32), (CL, torch.float32),
                              (CL, torch.bfloat16)]:
            xt = torch.from_numpy(x).to(dtype).contiguous(memory_format=layout)
            with torch.inference_mode():
                out = twin._max_pool(xt, kernel, stride)
            want = _pool_numpy(xt.float().numpy(), kernel, stride)
            assert out.dtype == dtype and np.array_equal(out.float().numpy(), want), (shape, layout)
            assert torch.equal(out, twin._torch_max_pool(xt, arch.pool_padding(
                shape[2:], kernel, stride), kernel, stride))  # torch's pool, the grad path
            if layout is CL and shape[1] > 1 and out.shape[2:].numel() > 1:
                assert out.is_contiguous(memory_format=CL)
        assert np.array_equal(twin._max_pool(torch.from_numpy(x), kernel, stride).numpy(), ref)


# even kernels at stride 1 pad one more at the back than max_pool2d's ceil_mode can: padded
# explicitly (no I3D pool needs it)
@pytest.mark.parametrize("kernel,stride", POOLS + [((2, 2, 2), (1, 1, 1)), ((1, 4, 4), (1, 1, 1))])
def test_training_pool_is_torchs_pool_forward_and_backward(kernel, stride):
    """With gradients the pool runs as two max_pool2d (H, W, then T): torch's max_pool3d's
    output bit for bit and, where the values are distinct, its gradient (sums in another order),
    in both layouts; in bf16 (ties) every window's gradient still goes to one element. Shapes:
    even and odd sizes (ceil_mode and symmetric padding), a 1x1 frame, batch 1 and 2."""
    rng = np.random.RandomState(0)
    for shape in [(2, 3, 5, 7, 6), (1, 4, 8, 9, 11), (1, 2, 1, 1, 2), (2, 8, 16, 28, 28)]:
        x = -rng.rand(*shape) - 1  # all negative: a zero pad would show
        pads = arch.pool_padding(shape[2:], kernel, stride)
        for layout, dtype in [(torch.contiguous_format, torch.float64), (CL, torch.float32),
                              (torch.contiguous_format, torch.float32), (CL, torch.bfloat16)]:
            out, grad = {}, {}
            for f in (twin._torch_max_pool, twin._separable_max_pool):
                xt = torch.from_numpy(x).to(dtype).contiguous(memory_format=layout)
                xt.requires_grad_()
                out[f] = f(xt, pads, kernel, stride)
                g = torch.from_numpy(np.random.RandomState(1).rand(*out[f].shape)).to(dtype)
                out[f].backward(g)
                grad[f] = xt.grad.double()
            fast = out[twin._separable_max_pool]
            assert torch.equal(fast, out[twin._torch_max_pool]), (shape, layout, dtype)
            if layout is CL and shape[1] > 1 and fast.shape[2:].numel() > 1:
                assert fast.is_contiguous(memory_format=CL)
            if dtype == torch.bfloat16:
                assert torch.isclose(grad[twin._separable_max_pool].sum(), g.double().sum(),
                                     rtol=1e-2)
            else:
                ref = grad[twin._torch_max_pool]
                assert torch.allclose(grad[twin._separable_max_pool], ref, rtol=0,
                                      atol=1e-6 * ref.abs().max().item()), (shape, layout, dtype)


def test_max_pool_with_gradients_routes_each_to_one_maximum():
    """Where a window ties (zeros after a ReLU), its gradient goes to one element, as TF's
    MaxPoolGrad does, not split among the ties as amax's would be."""
    x = torch.zeros(1, 2, 4, 5, 5, requires_grad=True)
    twin._max_pool(x, (3, 3, 3), (2, 2, 2)).sum().backward()
    assert x.grad.sum().item() == 2 * 2 * 3 * 3
    assert torch.equal(x.grad, x.grad.round()) and x.grad.max() >= 1


@pytest.mark.parametrize("variant", [arch.DEEPMIND, arch.MINDVIDEO])
def test_time_unfolded_stem_equals_conv3d(weights, cricket_clip, variant):
    model = i3d_torch.build(weights, final_endpoint="Conv3d_1a_7x7")
    stem = next(u for u in arch.units() if twin.unfolds(u))
    assert stem.path == arch.LAYERS[0].path and not any(twin.unfolds(u) for u in arch.units()[1:])
    w = getattr(model, stem.path).conv.weight.detach().requires_grad_()
    for frames in (16, 17):  # SAME pads (2, 3) in time for even T, (3, 3) for odd
        x = torch.from_numpy(cricket_clip[:, :, :frames, :64, :57].copy())
        pads = arch.conv_padding(variant, tuple(x.shape[2:]), stem.kernel, stem.stride)
        ref = twin._conv3d(x, w, None, pads, stem.stride)
        g = torch.randn_like(ref)
        (gw_ref,) = torch.autograd.grad((ref * g).sum(), w)
        for layout in (torch.contiguous_format, CL):
            with _AtenInputs("convolution") as ops:
                out = twin._conv_time_unfolded(x.contiguous(memory_format=layout), w, None, pads,
                                               stem.stride)
            # 3 x 7 = 21 channels, with a zero tap 24: cuDNN's NHWC kernels take multiples of 8
            assert [a.shape[1] for a in ops.seen] == [24, 24]  # input and kernel
            assert out.shape == ref.shape and out.is_contiguous(memory_format=layout)
            assert (out - ref).abs().max() < 1e-5 * ref.abs().max()
            (gw,) = torch.autograd.grad((out * g).sum(), w)
            assert (gw - gw_ref).abs().max() < 1e-5 * gw_ref.abs().max()
        with torch.autocast("cpu", torch.bfloat16):  # cast before the unfold: same as conv3d's
            out = twin._conv_time_unfolded(x, w, None, pads, stem.stride)
            assert out.dtype == torch.bfloat16
            assert (out.float() - ref).abs().max() < 2e-2 * ref.abs().max()


@pytest.mark.slow
def test_gpu_paths_on_cpu_reproduce_reference(weights, cricket_clip, reference_logits,
                                              monkeypatch):
    """The network as CUDA runs it (unfolded stem, pools without indices), in both layouts."""
    monkeypatch.setattr(twin, "UNFOLD_ON", ("cpu", "cuda"))
    model = i3d_torch.build(weights)
    x = torch.from_numpy(cricket_clip)
    with torch.inference_mode():
        for layout in (torch.contiguous_format, CL):
            m = model.to(memory_format=layout)
            logits = m(x.contiguous(memory_format=layout))[0].numpy()
            assert np.abs(logits - reference_logits).max() < 1e-4, layout


def test_channels_last_3d_stays_channels_last(weights, monkeypatch):
    """The GPU path's layout, checked on the CPU: torch's CPU conv3d keeps channels_last_3d
    with two threads, but with one (`make test`'s I3D_THREADS=1) its 1x1x1 kernel returns
    NCDHW; so two threads here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _channels_last_stays(weights, monkeypatch)
    finally:
        torch.set_num_threads(threads)


def _channels_last_stays(weights, monkeypatch):
    monkeypatch.setattr(twin, "UNFOLD_ON", ("cpu", "cuda"))
    model = i3d_torch.build(weights, head="global").to(memory_format=CL)
    x = torch.from_numpy(np.random.RandomState(0).uniform(-1, 1, (2, 3, 16, 64, 64))
                         .astype(np.float32)).contiguous(memory_format=CL)
    with torch.inference_mode():
        points = model.end_points(x)
    maps = {k: v for k, v in points.items() if v.dim() == 5 and v.shape[2:].numel() > 1}
    assert len(maps) >= 10
    for name, v in maps.items():
        assert v.is_contiguous(memory_format=CL), name
    monkeypatch.setattr(twin, "UNFOLD_ON", ("cuda",))
    with torch.inference_mode():
        plain = i3d_torch.build(weights, head="global").end_points(x.contiguous())
    for name in points:  # float32 rounding, relative to each map's scale
        scale = max(1.0, plain[name].abs().max().item())
        assert (points[name] - plain[name]).abs().max() < 2e-5 * scale, name


@pytest.mark.parametrize("scale", [False, True], ids=["deepmind", "bn-scale"])
def test_mixed_block_side_by_side_is_the_block_unit_by_unit(weights, scale):
    """The twin's Mixed block runs its three 1x1x1 units on x as one (`_side_by_side`): the
    same function as the block unit by unit (train_ab's "undo" row), in float64, with the real
    weights of Mixed_3b (and random batch-norm scales for the variants that have them):
    output, every gradient and the running statistics after a training step; and in eval."""
    import copy

    from benchmarks import train_ab

    block = i3d_torch.build(weights, final_endpoint="Mixed_3b").double().Mixed_3b
    g = torch.Generator().manual_seed(0)
    if scale:
        for unit in block.children():
            bias = unit.bn.bias
            unit.bn.weight = torch.nn.Parameter(torch.rand(bias.shape, generator=g,
                                                           dtype=bias.dtype) + 0.5)
    x = torch.randn(2, 192, 3, 6, 5, generator=g, dtype=torch.float64)
    for training in (True, False):
        outs = []
        for forward in (train_ab._mixed_one_by_one, twin.Mixed.forward):
            b = copy.deepcopy(block).train(training)
            xr = x.clone().requires_grad_(training)
            y = forward(b, xr)
            if training:
                (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
            outs.append((y.detach(), xr.grad, b))
        (y0, g0, b0), (y1, g1, b1) = outs
        assert torch.allclose(y0, y1, rtol=0, atol=1e-12)
        if training:
            assert torch.allclose(g0, g1, rtol=0, atol=1e-12)
            for (name, p0), p1 in zip(b0.named_parameters(), b1.parameters()):
                assert torch.allclose(p0.grad, p1.grad, rtol=0, atol=1e-12), name
            for (name, s0), s1 in zip(b0.named_buffers(), b1.buffers()):
                assert not torch.equal(s0, block.get_buffer(name)), name  # the step moved it
                assert torch.allclose(s0, s1, rtol=0, atol=1e-15), name
