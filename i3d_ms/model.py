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

from . import kernels


class BatchNorm(nn.Cell):
    """Sonnet-v1 BatchNorm: beta always, gamma only in the `bn_scale` variant.

    Parameter names follow MindSpore (gamma, beta, moving_mean, moving_variance). `momentum`
    follows MindSpore too: running = momentum * running + (1 - momentum) * batch, with the
    unbiased batch variance, as torch does. Training mode computes the statistics in two passes
    (mean, then mean of squared deviations): MindSpore's fused CPU kernel loses digits when
    |mean| >> std, enough to flip ReLUs whose input is near zero and so move gradients.
    NCDHW maps go through `construct`; channels-last ones as (positions, channels) rows through
    `train_rows` (training) or `folded` (inference: the conv takes the scale, a BiasAdd the
    shift).
    """

    def __init__(self, channels: int, eps: float, scale: bool, momentum: float = 0.999,
                 dtype: str = "float32"):
        super().__init__()
        f32 = getattr(ms, dtype)
        # per channel, as a Tensor: a bare float is float32, and MindSpore's CPU broadcasting
        # add is slow on the channels-last rows (see kernels)
        self.eps, self.momentum = Tensor(np.full(channels, eps), f32), momentum
        # the running statistics' weights as tensors of the parameters' dtype: a Python float
        # times a float64 tensor becomes a float32 scalar in MindSpore (0.999 -> 0.99900001)
        self.keep, self.take = Tensor(momentum, f32), Tensor(1 - momentum, f32)
        self.gamma = Parameter(Tensor(np.ones(channels), f32), name="gamma") if scale else None
        self.ones = Tensor(np.ones(channels), f32)
        self.beta = Parameter(Tensor(np.zeros(channels), f32), name="beta")
        self.moving_mean = Parameter(Tensor(np.zeros(channels), f32), name="moving_mean",
                                     requires_grad=False)
        self.moving_variance = Parameter(Tensor(np.ones(channels), f32), name="moving_variance",
                                         requires_grad=False)
        self.bn_infer = ops.BatchNorm(is_training=False, epsilon=eps)
        self.reduce_mean = ops.ReduceMean(keep_dims=True)

    def construct(self, x):
        n, c, d, h, w = x.shape
        x = x.astype(self.beta.dtype)  # fp16 activations (mixed precision): statistics in fp32
        if not self.training:
            gamma = self.ones if self.gamma is None else self.gamma
            y = self.bn_infer(x.reshape(n, c, d * h, w), gamma, self.beta, self.moving_mean,
                              self.moving_variance)[0]  # the primitive is 4-D: per channel anyway
            return y.reshape(n, c, d, h, w)
        mean = self.reduce_mean(x, (0, 2, 3, 4))
        centred = x - mean
        var = self.reduce_mean(centred * centred, (0, 2, 3, 4))
        scale = ops.rsqrt(var + self.eps.reshape(1, c, 1, 1, 1))
        if self.gamma is not None:
            scale = scale * self.gamma.reshape(1, c, 1, 1, 1)
        self._update(mean.reshape(c), var.reshape(c), n * d * h * w)
        return centred * scale + self.beta.reshape(1, c, 1, 1, 1)

    def _update(self, mean, var, count):
        ops.assign(self.moving_mean, self.keep * self.moving_mean
                   + self.take * ops.stop_gradient(mean))
        unbiased = ops.stop_gradient(var) * count / max(count - 1, 1)  # integers: exact
        ops.assign(self.moving_variance, self.keep * self.moving_variance + self.take * unbiased)

    def folded(self):
        """(scale, shift) of inference: y = x * scale + shift per channel."""
        scale = ops.rsqrt(self.moving_variance + self.eps)
        if self.gamma is not None:
            scale = scale * self.gamma
        return scale, self.beta - self.moving_mean * scale

    def train_rows(self, x):
        """Training mode on channels-last rows x (positions, channels)."""
        x = x.astype(self.beta.dtype)
        count = x.shape[0]
        mean = x.sum(0) / count
        centred = ops.bias_add(x, -mean)
        var = (centred * centred).sum(0) / count
        scale = ops.rsqrt(var + self.eps)
        if self.gamma is not None:
            scale = scale * self.gamma
        self._update(mean, var, count)
        return ops.bias_add(kernels.channel_scale(centred, scale), self.beta)


@ms.constexpr
def _pointwise_plan(shape: tuple) -> tuple:
    n, c, d, h, w = shape
    return (n, c, d * h * w), (n, -1, d, h, w)


class Conv3d(nn.Cell):
    """Conv3d with explicit (front, back) padding per dimension, run by the kernel `impl` that
    `kernels.choose` resolves ('auto': the table `kernels.KERNELS`).

    'native' is MindSpore's Conv3D with the padding folded into it (cuDNN on GPU, oneDNN on
    CPU), on NCDHW maps. 'matmul' runs on channels-last maps, through `kernels`: its weight stays
    in the (out, in, kd, kh, kw) layout of every checkpoint. The head's 1x1x1 logits conv sees an
    NCDHW map either way: natively, or as one matmul (float64).
    """

    def __init__(self, cin, cout, kernel, stride, has_bias, impl="auto", dtype="float32"):
        super().__init__()
        impl = kernels.choose(impl, dtype)
        self.kernel, self.stride, self.matmul = tuple(kernel), tuple(stride), impl == "matmul"
        fan_in = cin * int(np.prod(kernel))
        bound = 1.0 / np.sqrt(fan_in)  # torch's default init, so fresh twins start alike
        init = np.random.uniform(-bound, bound, (cout, cin, *kernel)).astype(dtype)
        self.weight = Parameter(Tensor(init), name="weight")
        self.bias = Parameter(Tensor(np.zeros(cout, dtype)), name="bias") if has_bias else None

    def construct(self, x, pads):
        """NCDHW in and out."""
        if not self.matmul:
            conv = ops.Conv3D(self.weight.shape[0], self.kernel, pad_mode="pad",
                              pad=pads[0] + pads[1] + pads[2], stride=self.stride)
            y = conv(x, self.weight)
        else:
            flat, out = _pointwise_plan(x.shape)
            cout = self.weight.shape[0]
            y = ops.matmul(self.weight.reshape(cout, -1), x.reshape(flat)).reshape(out)
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1, 1)
        return y

    def rows(self, x, pads, scale=None):
        """Channels-last: x (n, d, h, w, c) (the strided stem: its NCDHW clip), the weight times
        the per-channel `scale` if given -> ((positions, cout) rows, (n, do, ho, wo))."""
        if self.stride != (1, 1, 1):
            y, out = kernels.conv_strided(x, self.weight, self.stride, pads, scale)
            return y, (x.shape[0],) + out
        out = kernels.out_size(x.shape[1:4], self.kernel, self.stride, pads)
        taps = kernels.taps(self.weight, scale)
        return kernels.conv_frames(x, taps, self.kernel, pads, out), (x.shape[0],) + out


@ms.constexpr
def _conv_padding(symmetric: bool, sizes: tuple, kernel: tuple, stride: tuple) -> tuple:
    """`arch.conv_padding`, run in Python at graph compile time rather than compiled into the
    graph (whose compiler is slow on generator expressions)."""
    variant = arch.Variant(padding="symmetric" if symmetric else "same")
    return arch.conv_padding(variant, sizes, kernel, stride)


class Unit3d(nn.Cell):
    """Conv -> BatchNorm -> ReLU (or the logits conv). NCDHW maps with the native conv;
    channels-last ones with the matmul kernels (the stem takes the NCDHW clip)."""

    def __init__(self, unit: arch.Unit, variant: arch.Variant, dtype: str = "float32",
                 conv: str = "auto"):
        super().__init__()
        self.kernel, self.stride = unit.kernel, unit.stride
        self.symmetric = variant.padding == "symmetric"
        self.logits = unit.logits
        self.conv = Conv3d(unit.cin, unit.cout, unit.kernel, unit.stride, unit.logits, conv, dtype)
        self.channels_last = self.conv.matmul and not unit.logits
        self.bn = None if unit.logits else BatchNorm(unit.cout, variant.bn_eps, variant.bn_scale,
                                                     dtype=dtype)
        self.relu = nn.ReLU()

    def construct(self, x):
        if self.channels_last:
            return self._rows(x)
        x = self.conv(x, _conv_padding(self.symmetric, x.shape[2:], self.kernel, self.stride))
        if self.logits:
            return x
        return self.relu(self.bn(x))

    def _rows(self, x):
        sizes = x.shape[2:] if self.stride != (1, 1, 1) else x.shape[1:4]
        pads = _conv_padding(self.symmetric, sizes, self.kernel, self.stride)
        if self.bn.training:
            y, shape = self.conv.rows(x, pads)
            y = self.bn.train_rows(y)
        else:
            scale, shift = self.bn.folded()
            y, shape = self.conv.rows(x, pads, scale)
            y = ops.bias_add(y, shift)
        return self.relu(y).reshape(shape + (-1,))


class MaxPool3d(nn.Cell):
    """TF 'SAME' max-pool. MaxPool3D's own 'SAME' mode pads as `arch.pool_padding` does (the odd
    extra at the end) and never picks a padded cell, as padding with -inf would not; no pad op,
    so no PadV3Grad in the backward. Channels-last maps go through `kernels.MaxPool` (MaxPool3D
    on two views of the map, no transposes), except in float64 training: MaxPool3D's CPU
    backward routes float64 gradients at float32 precision (BatchNorm beta gradients 5e-7 off
    torch's, 6e-14 with the separable maxima of `kernels.max_pool_separable`)."""

    def __init__(self, kernel, stride, channels_last=False, dtype="float32"):
        super().__init__()
        self.kernel, self.stride, self.channels_last = tuple(kernel), tuple(stride), channels_last
        self.pool = kernels.MaxPool(kernel, stride) if channels_last else \
            ops.MaxPool3D(kernel, stride, pad_mode="SAME")
        self.exact_backward = dtype == "float64"

    def construct(self, x):
        if self.channels_last and self.training and self.exact_backward:
            pads = _pool_padding(x.shape[1:4], self.kernel, self.stride)
            return kernels.max_pool_separable(x, self.kernel, self.stride, pads)
        return self.pool(x)


@ms.constexpr
def _pool_padding(sizes: tuple, kernel: tuple, stride: tuple) -> tuple:
    return arch.pool_padding(sizes, kernel, stride)


class Mixed(nn.Cell):
    def __init__(self, block: arch.Mixed, variant: arch.Variant, dtype: str = "float32",
                 conv: str = "auto"):
        super().__init__()
        for unit in block.units:
            setattr(self, unit.path.rsplit(".", 1)[1], Unit3d(unit, variant, dtype, conv))
        self.channels_last = self.b0.channels_last
        self.axis = 4 if self.channels_last else 1
        self.pool = MaxPool3d(*arch.BRANCH3_POOL, self.channels_last, dtype)

    def construct(self, x):
        return ops.cat((self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                        self.b3b(self.pool(x))), self.axis)


class Head(nn.Cell):
    """Returns `arch.HEAD_OUTPUTS`, as the torch twin's end points."""

    def __init__(self, head: arch.Head, variant, kind: str, keep_prob: float, dtype: str,
                 conv: str = "auto"):
        super().__init__()
        self.pool, self.kind = head.pool, kind
        self.dropout = nn.Dropout(p=1.0 - keep_prob) if keep_prob < 1.0 else nn.Identity()
        self.unit = Unit3d(head.unit, variant, dtype, conv)

    def construct(self, x):
        if self.kind == "global":
            x = x.mean(axis=(3, 4), keep_dims=True)
        else:
            x = ops.avg_pool3d(x, self.pool, 1)
        per_time_features = x.mean(axis=(3, 4))
        features = x.mean(axis=(2, 3, 4))
        per_time = self.unit(self.dropout(x)).squeeze(4).squeeze(3)
        return per_time_features, features, per_time, per_time.mean(axis=2)


class InceptionI3d(nn.Cell):
    """I3D, RGB stream. Input (B, 3, T, H, W) in [-1, 1]; same options as the torch twin.

    construct(x) returns the final end point (the (B, classes) logits by default);
    end_points(x) returns every end point on the way, as the torch twin's does.
    dtype='float64' builds it in double precision, for the parity suite's exact comparisons.
    conv picks the convolution kernel ('auto', 'native', 'matmul': see `Conv3d` and the table
    `kernels.KERNELS`).
    """

    def __init__(self, num_classes: int = 400, variant: arch.Variant = arch.DEEPMIND,
                 final_endpoint: str = "Logits", head: str = "deepmind",
                 dropout_keep_prob: float = 1.0, dtype: str = "float32", conv: str = "auto"):
        super().__init__()
        if head not in ("deepmind", "global"):
            raise ValueError(f"head must be 'deepmind' or 'global', got {head!r}")
        self.num_classes, self.variant = num_classes, variant
        self.final_endpoint = arch.check_end_point(final_endpoint)
        stop = arch.END_POINTS.index(self.final_endpoint)
        # channels-last maps inside (the matmul kernels), NCDHW at every end point
        self.channels_last = kernels.choose(conv, dtype) == "matmul"
        steps, names, self.head = [], [], None
        for layer in arch.layers(num_classes)[: stop + 1]:
            if isinstance(layer, arch.Unit):
                cell = Unit3d(layer, variant, dtype, conv)
            elif isinstance(layer, arch.Mixed):
                cell = Mixed(layer, variant, dtype, conv)
            elif isinstance(layer, arch.Pool):
                cell = MaxPool3d(layer.kernel, layer.stride, self.channels_last, dtype)
            else:
                self.head = Head(layer, variant, head, dropout_keep_prob, dtype, conv)
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
            arch.HEAD_OUTPUTS if self.head is not None else ())
        self.predictions = self.final_endpoint == "Predictions"
        if self.predictions:
            self.end_point_names += ("Predictions",)

    def walk(self, x, every: bool = False, head: bool = False):
        """The end points in a tuple: all of them (`every`), the head's (`head`) or the last
        alone; maps NCDHW."""
        outs = ()
        for step in self.steps:
            x = step(x)
            if every:
                outs = outs + (self._ncdhw(x),)
        if self.head is None:
            return outs if every else (self._ncdhw(x),)
        heads = self.head(self._ncdhw(x))
        if self.predictions:
            heads = heads + (ops.softmax(heads[-1], axis=1),)
        return outs + heads if every else heads if head else heads[-1:]

    def _ncdhw(self, x):
        return x.transpose(0, 4, 1, 2, 3) if self.channels_last else x

    def construct(self, x):
        return self.walk(x)[-1]

    def end_points(self, x) -> dict:
        """{end point name: Tensor}. Compiled as a whole in graph mode (through a wrapper cell
        kept outside the cell tree, so parameter names do not change)."""
        return dict(zip(self.end_point_names, self._walker("every")(x)))

    def head_outputs(self, x) -> dict:
        """{name: Tensor} of `arch.HEAD_OUTPUTS` alone, the maps on the way not kept."""
        return dict(zip(arch.HEAD_OUTPUTS, self._walker("head")(x)))

    def _walker(self, kind: str):
        key = f"_walker_{kind}"  # outside the cell tree: parameter names stay the table's
        if key not in self.__dict__:
            self.__dict__[key] = _Walker(self, kind == "every", kind == "head")
        return self.__dict__[key]


class _Walker(nn.Cell):
    """Calling it returns the tuple of end points of `net` that `walk(x, every, head)` gives."""

    def __init__(self, net: InceptionI3d, every: bool, head: bool):
        super().__init__(auto_prefix=False)
        self.net, self.every, self.head = net, every, head

    def construct(self, x):
        return self.net.walk(x, self.every, self.head)


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
    """MindSpore's global execution mode ('graph' or 'pynative') and device. The mode may change
    at any time; the device only before the first kernel runs (MindSpore's rule), so it is set
    only when it differs from the current one.

    PyNative on the CPU launches each kernel before returning (`launch_blocking`): MindSpore's
    asynchronous launch thread otherwise competes with the kernels' own threads for the cores,
    and a matmul runs at half the rate it has in a graph (2 cores: 230 against 440 GFLOP/s at
    2048^3; benchmarks/results/cpu-2core-mindspore.md)."""
    if mode not in ("graph", "pynative"):
        raise ValueError(f"mode must be 'graph' or 'pynative', got {mode!r}")
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    if ms.get_current_device().device_target != device:
        ms.set_device(device)
    if mode == "pynative" and device == "CPU":
        ms.runtime.launch_blocking()


def predict(weights: dict, clip, variant: arch.Variant = arch.DEEPMIND, **kwargs):
    """Logits (B, classes) as numpy for a numpy clip (B, 3, T, H, W) in [-1, 1]."""
    return build(weights, variant, **kwargs)(Tensor(clip)).asnumpy()


def end_points(weights: dict, clip, variant: arch.Variant = arch.DEEPMIND, **kwargs) -> dict:
    """{end point: numpy array} up to Predictions (or `final_endpoint`) for a numpy clip."""
    kwargs.setdefault("final_endpoint", "Predictions")
    out = build(weights, variant, **kwargs).end_points(Tensor(clip))
    return {k: v.asnumpy() for k, v in out.items()}
