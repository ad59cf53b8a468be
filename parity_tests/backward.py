"""Training steps in both twins from the same weights and batch: BatchNorm in training mode,
no dropout, SGD with momentum and weight decay. Everything comes back keyed by canonical
(unit, param) names, so the two frameworks' tensors line up through the shared map."""
from __future__ import annotations

import numpy as np

from convert import names
from convert.architecture import DEEPMIND
from convert.weights import has_bn_scale, num_classes


def _canonical(scheme, weights, tensors: dict) -> dict:
    keys = names.keys(scheme, num_classes(weights), has_bn_scale(weights))
    return {f"{u.name}:{p}": np.asarray(tensors[k], np.float64) for k, (u, p) in keys.items()
            if k in tensors}


def torch_steps(weights, x, y, steps=1, lr=1e-3, momentum=0.9, weight_decay=1e-4,
                variant=DEEPMIND, float64=False, **kw) -> dict:
    """{'losses', 'grads' (of the first step), 'state' (weights and BN statistics after it)}."""
    import torch

    import i3d_torch

    model = i3d_torch.build(weights, variant, **kw).train()
    if float64:
        model = model.double()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    xt = xt.double() if float64 else xt
    out = {"losses": []}
    for i in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        if i == 0:
            out["grads"] = _canonical("torch", weights, {k: p.grad.numpy()
                                                         for k, p in model.named_parameters()})
        opt.step()
        if i == 0:
            out["state"] = _canonical("torch", weights, {k: v.detach().numpy()
                                                         for k, v in model.state_dict().items()})
        out["losses"].append(float(loss.detach()))
    return out


def ms_steps(weights, x, y, steps=1, lr=1e-3, momentum=0.9, weight_decay=1e-4,
             variant=DEEPMIND, float64=False, **kw) -> dict:
    import mindspore as ms

    import i3d_ms

    i3d_ms.set_mode("pynative")
    net = i3d_ms.build(weights, variant, dtype="float64" if float64 else "float32", **kw)
    x = x.astype(np.float64) if float64 else x
    net.set_train(True)
    params = net.trainable_params()
    opt = ms.nn.Momentum(params, learning_rate=lr, momentum=momentum, weight_decay=weight_decay)
    if float64:  # its CPU kernel rounds float64 parameters to float32: written out
        opt = _momentum64(params, lr, momentum, weight_decay)
    onehot = ms.Tensor(np.eye(num_classes(weights), dtype=x.dtype)[y])
    ops = ms.ops

    def loss_fn(a, b):  # cross entropy, written out: the fused op takes no float64, and
        logits = net(a)  # ops.log_softmax computes float64 at float32's precision on the CPU
        z = logits - ops.stop_gradient(logits.max(1, keepdims=True))
        return -((z - ops.log(ops.exp(z).sum(1, keepdims=True))) * b).sum(1).mean()

    grad_fn = ms.value_and_grad(loss_fn, None, params)
    xm, ym = ms.Tensor(x), onehot
    out = {"losses": []}
    for i in range(steps):
        loss, grads = grad_fn(xm, ym)
        if i == 0:
            out["grads"] = _canonical("mindspore", weights,
                                      {p.name: g.asnumpy() for p, g in zip(params, grads)})
        opt(grads)
        if i == 0:
            out["state"] = _canonical("mindspore", weights,
                                      {p.name: p.asnumpy() for p in net.get_parameters()})
        out["losses"].append(float(loss.asnumpy()))
    return out


def _momentum64(params, lr, momentum, weight_decay):
    """SGD with momentum and weight decay on every parameter, as `nn.Momentum` (and torch's
    SGD) define it, in float64: v = m v + (g + wd w); w -= lr v."""
    import mindspore as ms
    from mindspore import ops

    moments = [ms.Parameter(ops.zeros_like(p), name=f"v.{p.name}", requires_grad=False)
               for p in params]
    # float64 tensors: MindSpore makes a Python float times a float64 tensor a float32 scalar
    lr, momentum, weight_decay = (ms.Tensor(v, ms.float64) for v in (lr, momentum, weight_decay))

    def update(grads):
        for p, v, g in zip(params, moments, grads):
            ops.assign(v, v * momentum + (g + weight_decay * p))
            ops.assign(p, p - lr * v)

    return update
