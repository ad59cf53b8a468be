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
    from i3d_ms.trainer import cross_entropy64

    i3d_ms.set_mode("pynative")
    net = i3d_ms.build(weights, variant, dtype="float64" if float64 else "float32", **kw)
    x = x.astype(np.float64) if float64 else x
    net.set_train(True)
    params = net.trainable_params()
    opt = ms.nn.Momentum(params, learning_rate=lr, momentum=momentum, weight_decay=weight_decay)
    if float64:  # its CPU kernel rounds float64 parameters to float32: written out
        opt = _momentum64(params, lr, momentum, weight_decay)
    onehot = ms.Tensor(np.eye(num_classes(weights), dtype=x.dtype)[y])

    def loss_fn(a, b):  # cross entropy, written out: the fused op takes no float64
        return cross_entropy64(net(a), b)

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
    """SGD with momentum and weight decay on every parameter (nn.Momentum's, torch's SGD's),
    in float64 (`i3d_ms.trainer.momentum_step64`)."""
    import mindspore as ms
    from mindspore import ops

    from i3d_ms.trainer import momentum_step64

    moments = [ms.Parameter(ops.zeros_like(p), name=f"v.{p.name}", requires_grad=False)
               for p in params]
    lr, momentum, wd = (ms.Tensor(v, ms.float64) for v in (lr, momentum, weight_decay))
    return lambda grads: momentum_step64(params, moments, grads, lr, momentum,
                                         [wd] * len(params))
