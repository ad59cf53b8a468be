"""InceptionI3d as a MindSpore nn.Cell, walked from the shared architecture table.

Runs in graph and pynative mode. Padding is computed in construct from the static input shape
by the shared rule (`convert.architecture.conv_padding`), so every input size gets TF 'SAME'
right. The public API is the torch twin's: `build`, `end_points`, `predict`.
Only `nn.*`/`ops.*` ops are used: `mint.nn` 3-D ops have no CPU kernels.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from convert import architecture as arch
from convert.checkpoints import read_weights
from convert.weights import num_classes as _num_classes, to_scheme


class BatchNorm(nn.Cell):
    """Sonnet-v1 BatchNorm: beta always, gamma only in the `bn_scale` variant.

    Parameter names follow MindSpore (gamma, beta, moving_mean, moving_variance). `momentum`
    follows MindSpore too: running = momentum * running + (1 - momentum) * batch, with the
    unbiased batch variance, as torch does. Training mode computes the statistics in two passes
    (mean, then mean of squared deviations): MindSpore's fused CPU kernel loses digits when
    |mean| >> std, enough to flip ReLUs whose input is near zero and so move gradients.
    """

    def __init__(self, channels: int, eps: float, scale: bool, momentum: float = 0.999,
                 dtype: str = "float32"):
        super().__init__()
        f32 = getattr(ms, dtype)
        self.eps, self.momentum = Tensor(eps, f32), momentum  # a Tensor: a bare float is float32
        self.gamma = Parameter(Tensor(np.ones(channels), f32), name="gamma") if scale else None
        self.ones = Tensor(np.ones(channels), f32)
        self.beta = Parameter(Tensor(np.zeros(channels), f32), name="beta")
        self.moving_mean = Parameter(Tensor(np.zeros(channels), f32), name="moving_mean",
                                     requires_grad=False)
        self.moving_variance = Parameter(Tensor(np.ones(channels), f32), name="moving_variance",
                                         requires_grad=False)
        self.bn_infer = ops.BatchNorm(is_training=False, epsilon=eps)

    def construct(self, x):
        n, c, d, h, w = x.shape
        x4 = x.reshape(n, c, d * h, w)  # the primitive is 4-D; statistics are per channel anyway
        gamma = self.ones if self.gamma is None else self.gamma
        if not self.training:
            y = self.bn_infer(x4, gamma, self.beta, self.moving_mean, self.moving_variance)[0]
            return y.reshape(n, c, d, h, w)
        mean = x.mean(axis=(0, 2, 3, 4), keep_dims=True)
        centred = x - mean
        var = (centred * centred).mean(axis=(0, 2, 3, 4), keep_dims=True)
        y = centred * ops.rsqrt(var + self.eps) * gamma.reshape(1, c, 1, 1, 1) \
            + self.beta.reshape(1, c, 1, 1, 1)
        count = n * d * h * w
        m = self.momentum
        batch_mean = ops.stop_gradient(mean.reshape(c))
        batch_var = ops.stop_gradient(var.reshape(c)) * (count / max(count - 1, 1))
        ops.assign(self.moving_mean, m * self.moving_mean + (1 - m) * batch_mean)
        ops.assign(self.moving_variance, m * self.moving_variance + (1 - m) * batch_var)
        return y


def _pad(x, pads, value=None):
    flat = ()
    for front, back in reversed(pads):
        flat = flat + (front, back)
    if sum(flat) == 0:
        return x
    return ops.pad(x, flat, value=value)


class Conv3d(nn.Cell):
    """VALID Conv3d (padding is done by the caller) with two kernels.

    'native' is MindSpore's Conv3D: the one to use on GPU (cuDNN). On CPU MindSpore's
    convolutions run at about 1 GFLOP/s while its matmul reaches 200 (measured here), so
    'matmul' computes the same sum as one im2col matmul per temporal tap. 'auto' picks by
    device target.
    """

    def __init__(self, cin, cout, kernel, stride, has_bias, impl="auto", dtype="float32"):
        super().__init__()
        if impl == "auto":
            impl = "matmul" if ms.get_context("device_target") == "CPU" else "native"
        if impl not in ("matmul", "native"):
            raise ValueError(f"conv impl must be 'auto', 'matmul' or 'native', got {impl!r}")
        self.kernel, self.stride, self.matmul = tuple(kernel), tuple(stride), impl == "matmul"
        fan_in = cin * int(np.prod(kernel))
        bound = 1.0 / np.sqrt(fan_in)  # torch's default init, so fresh twins start alike
        init = np.random.uniform(-bound, bound, (cout, cin, *kernel)).astype(dtype)
        self.weight = Parameter(Tensor(init), name="weight")
        self.bias = Parameter(Tensor(np.zeros(cout, dtype)), name="bias") if has_bias else None

    def construct(self, x):
        y = self._matmul(x) if self.matmul else ops.conv3d(x, self.weight, None, self.stride)
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1, 1)
        return y

    def _matmul(self, x):
        n, c, d, h, w = x.shape
        o = self.weight.shape[0]
        (kd, kh, kw), (sd, sh, sw) = self.kernel, self.stride
        do, ho, wo = (d - kd) // sd + 1, (h - kh) // sh + 1, (w - kw) // sw + 1
        y = None
        for i in range(kd):
            cols = ()
            for j in range(kh):
                for k in range(kw):
                    cols = cols + (x[:, :, i:i + sd * (do - 1) + 1:sd, j:j + sh * (ho - 1) + 1:sh,
                                     k:k + sw * (wo - 1) + 1:sw],)
            patches = cols[0] if kh * kw == 1 else ops.stack(cols, 2)
            part = ops.matmul(self.weight[:, :, i].reshape(o, c * kh * kw),
                              patches.reshape(n, c * kh * kw, do * ho * wo))
            y = part if y is None else y + part
        return y.reshape(n, o, do, ho, wo)


class Unit3d(nn.Cell):
    def __init__(self, unit: arch.Unit, variant: arch.Variant, dtype: str = "float32"):
        super().__init__()
        self.kernel, self.stride, self.variant = unit.kernel, unit.stride, variant
        self.logits = unit.logits
        self.conv = Conv3d(unit.cin, unit.cout, unit.kernel, unit.stride, unit.logits, dtype=dtype)
        self.bn = None if unit.logits else BatchNorm(unit.cout, variant.bn_eps, variant.bn_scale,
                                                     dtype=dtype)
        self.relu = nn.ReLU()

    def construct(self, x):
        x = self.conv(_pad(x, arch.conv_padding(self.variant, x.shape[2:], self.kernel, self.stride)))
        if self.logits:
            return x
        return self.relu(self.bn(x))


class MaxPool3d(nn.Cell):
    """'SAME' max-pool, padded with -inf."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def construct(self, x):
        x = _pad(x, arch.pool_padding(x.shape[2:], self.kernel, self.stride), float("-inf"))
        return ops.max_pool3d(x, self.kernel, self.stride)


class Mixed(nn.Cell):
    def __init__(self, block: arch.Mixed, variant: arch.Variant, dtype: str = "float32"):
        super().__init__()
        for unit in block.units:
            setattr(self, unit.path.rsplit(".", 1)[1], Unit3d(unit, variant, dtype))
        self.pool = MaxPool3d(*arch.BRANCH3_POOL)

    def construct(self, x):
        return ops.cat((self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                        self.b3b(self.pool(x))), 1)


class Head(nn.Cell):
    """Returns (Features, PerTimeLogits, Logits), as the torch twin's end points."""

    def __init__(self, head: arch.Head, variant, kind: str, keep_prob: float, dtype: str):
        super().__init__()
        self.pool, self.kind = head.pool, kind
        self.dropout = nn.Dropout(p=1.0 - keep_prob) if keep_prob < 1.0 else nn.Identity()
        self.unit = Unit3d(head.unit, variant, dtype)

    def construct(self, x):
        if self.kind == "global":
            x = x.mean(axis=(3, 4), keep_dims=True)
        else:
            x = ops.avg_pool3d(x, self.pool, 1)
        features = x.mean(axis=(2, 3, 4))
        per_time = self.unit(self.dropout(x)).squeeze(4).squeeze(3)
        return features, per_time, per_time.mean(axis=2)


class InceptionI3d(nn.Cell):
    """I3D, RGB stream. Input (B, 3, T, H, W) in [-1, 1]; same options as the torch twin.

    construct(x) returns the final end point (the (B, classes) logits by default);
    end_points(x) returns every end point on the way, as the torch twin's does.
    dtype='float64' builds it in double precision, for the parity suite's exact comparisons.
    """

    def __init__(self, num_classes: int = 400, variant: arch.Variant = arch.DEEPMIND,
                 final_endpoint: str = "Logits", head: str = "deepmind",
                 dropout_keep_prob: float = 1.0, dtype: str = "float32"):
        super().__init__()
        if head not in ("deepmind", "global"):
            raise ValueError(f"head must be 'deepmind' or 'global', got {head!r}")
        self.num_classes, self.variant = num_classes, variant
        self.final_endpoint = arch.check_end_point(final_endpoint)
        stop = arch.END_POINTS.index(self.final_endpoint)
        steps, names, self.head = [], [], None
        for layer in arch.layers(num_classes)[: stop + 1]:
            if isinstance(layer, arch.Unit):
                cell = Unit3d(layer, variant, dtype)
            elif isinstance(layer, arch.Mixed):
                cell = Mixed(layer, variant, dtype)
            elif isinstance(layer, arch.Pool):
                cell = MaxPool3d(layer.kernel, layer.stride)
            else:
                self.head = Head(layer, variant, head, dropout_keep_prob, dtype)
                break
            steps.append(cell)
            names.append(layer.name)
        self.steps = nn.CellList(steps)
        # Register the cells again under their table paths, last, so that parameter names
        # are the name map's ('Mixed_3b.b1b.conv.weight', not 'steps.5.b1b.conv.weight').
        for layer, cell in zip(arch.layers(num_classes), steps):
            if not isinstance(layer, arch.Pool):
                setattr(self, layer.name, cell)
        if self.head is not None:
            setattr(self, arch.LAYERS[-1].unit.path, self.head.unit)
        self.end_point_names = tuple(names) + (
            ("Features", "PerTimeLogits", "Logits") if self.head is not None else ())
        self.predictions = self.final_endpoint == "Predictions"
        if self.predictions:
            self.end_point_names += ("Predictions",)

    def walk(self, x):
        outs = ()
        for step in self.steps:
            x = step(x)
            outs = outs + (x,)
        if self.head is not None:
            outs = outs + self.head(x)
            if self.predictions:
                outs = outs + (ops.softmax(outs[-1], axis=1),)
        return outs

    def construct(self, x):
        return self.walk(x)[-1]

    def end_points(self, x) -> dict:
        """{end point name: Tensor}. Compiled as a whole in graph mode (through a wrapper cell
        kept outside the cell tree, so parameter names do not change)."""
        if "_walker" not in self.__dict__:
            self.__dict__["_walker"] = _Walker(self)
        return dict(zip(self.end_point_names, self.__dict__["_walker"](x)))


class _Walker(nn.Cell):
    """Calling it returns the tuple of every end point of `net`."""

    def __init__(self, net: InceptionI3d):
        super().__init__(auto_prefix=False)
        self.net = net

    def construct(self, x):
        return self.net.walk(x)


def parameters_from(weights: dict, dtype: str | None = None) -> dict:
    """Canonical weights -> {parameter name: Parameter} for `load_param_into_net`."""
    return {k: Parameter(Tensor(a if dtype is None else a.astype(dtype)), name=k)
            for k, a in to_scheme(weights, "mindspore").items()}


def load_weights(net: InceptionI3d, weights) -> InceptionI3d:
    """Strict load; a net cut at an earlier end point takes just the units it has. `weights`
    may be a weight file's path: one that records another variant than the net's is refused."""
    if isinstance(weights, str):
        weights = read_weights(weights, net.variant)[0]
    own = {p.name: p for p in net.get_parameters()}
    dtype = str(np.dtype(ms.dtype_to_nptype(next(iter(own.values())).dtype)))
    params = {k: v for k, v in parameters_from(weights, dtype).items() if k in own}
    missing, unused = ms.load_param_into_net(net, params, strict_load=True)
    if missing or unused:
        raise ValueError(f"weights do not fit the network: missing {missing}, unused {unused}")
    return net


def build(weights: dict | None = None, variant: arch.Variant = arch.DEEPMIND, **kwargs) -> InceptionI3d:
    """A twin in inference mode, sized by `weights` (number of classes) and loaded with them."""
    if weights is not None:
        kwargs.setdefault("num_classes", _num_classes(weights))
    net = InceptionI3d(variant=variant, **kwargs)
    net.set_train(False)
    return load_weights(net, weights) if weights is not None else net


def set_mode(mode: str = "pynative", device: str = "CPU"):
    """MindSpore's global execution mode ('graph' or 'pynative') and device."""
    if mode not in ("graph", "pynative"):
        raise ValueError(f"mode must be 'graph' or 'pynative', got {mode!r}")
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    ms.set_device(device)


def predict(weights: dict, clip, variant: arch.Variant = arch.DEEPMIND, **kwargs):
    """Logits (B, classes) as numpy for a numpy clip (B, 3, T, H, W) in [-1, 1]."""
    return build(weights, variant, **kwargs)(Tensor(clip)).asnumpy()


def end_points(weights: dict, clip, variant: arch.Variant = arch.DEEPMIND, **kwargs) -> dict:
    """{end point: numpy array} up to Predictions (or `final_endpoint`) for a numpy clip."""
    kwargs.setdefault("final_endpoint", "Predictions")
    out = build(weights, variant, **kwargs).end_points(Tensor(clip))
    return {k: v.asnumpy() for k, v in out.items()}
