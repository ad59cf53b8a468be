"""InceptionI3d as a torch.nn.Module, walked from the shared architecture table. Public API,
shared with the MindSpore twin: `build`, `end_points`, `predict`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convert import architecture as arch
from convert import checkpoints, formats
from convert.weights import num_classes as _num_classes, to_scheme


class BatchNorm(nn.Module):
    """Sonnet-v1 BatchNorm: beta always, gamma only in the `bn_scale` variant.

    Parameter names follow torch (weight, bias, running_mean, running_var). `momentum` is
    torch's (weight of the new batch): DeepMind's decay 0.999 is 0.001 here.
    """

    def __init__(self, channels: int, eps: float, scale: bool, momentum: float = 0.001):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels)) if scale else None
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        return _batch_norms(x, (self,))


def _stack(tensors):
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _batch_norms(x, bns):
    """x through the BatchNorms `bns` side by side (x's channels: theirs, in order) as one
    batch norm, which works channel by channel: the same function. In training, the running
    statistics, updated in their stacked copy, go back to each."""
    first = bns[0]
    mean, var = _stack([b.running_mean for b in bns]), _stack([b.running_var for b in bns])
    bias = _stack([b.bias for b in bns])
    weight = None if first.weight is None else _stack([b.weight for b in bns])
    if weight is None and first.training:
        # CUDA's training kernels need a scale tensor (weight=None fails in backward with
        # "tensor does not have a device"): gamma = 1 is the same function.
        weight = torch.ones_like(bias)
    y = _batch_norm(x, mean, var, weight, bias, first.training, first.momentum, first.eps)
    if first.training and len(bns) > 1:
        with torch.no_grad():
            sizes = [len(b.bias) for b in bns]
            for b, m, v in zip(bns, mean.split(sizes), var.split(sizes)):
                b.running_mean.copy_(m)
                b.running_var.copy_(v)
    return y


def _batch_norm(x, mean, var, weight, bias, training, momentum, eps):
    """F.batch_norm, a channels_last_3d input handed over in the layout where torch computes it
    best. Measured on an H200 (torch 2.11; the stem's batch norm, training, forward and
    backward, batch 8): bfloat16 (and float64) run on torch's own kernels, fast for 4-D
    channels_last but generic for channels_last_3d, so they get the 4-D view (B, C, T*H, W),
    the same per-channel statistics (2.6 -> 2.1 ms; 12 ms of the bf16 training step had been
    batch norm); float32 (and, by torch's choice, float16) run on cuDNN's, which take
    channels_last_3d as it is (1.6 ms either way; a view of batch 1 came back NCHW, 4x
    slower). Float32 training on the CPU goes as NCDHW: torch's CPU channels-last statistics
    lose precision (the stem's output on the sample clip: relative errors 6e-5 in the output,
    2e-4 in the variance, against 1e-7)."""
    args = (mean, var, weight, bias, training, momentum, eps)
    if x.dim() != 5 or not _channels_last(x):
        return F.batch_norm(x, *args)
    if training and x.device.type == "cpu" and x.dtype == torch.float32:
        return F.batch_norm(x.contiguous(), *args).contiguous(memory_format=torch.channels_last_3d)
    if x.dtype in (torch.float32, torch.float16):
        return F.batch_norm(x, *args)
    t, h = x.shape[2:4]  # a free view: channels_last_3d (B, C, T, H, W) is 4-D channels_last
    return F.batch_norm(x.flatten(2, 3), *args).unflatten(2, (t, h))


def _flat(pads) -> list:
    """((front, back) of each dim, e.g. D, H, W) -> F.pad's order (last dim first)."""
    return [p for pair in reversed(pads) for p in pair]


def _pad(x, pads, value=0.0):
    """Pad D, H, W by `pads` ((front, back) each); returns (x, padding left for the op itself)."""
    if all(a == b for a, b in pads):
        return x, tuple(a for a, _ in pads)  # symmetric: the op pads for free
    return F.pad(x, _flat(pads), value=value), 0


class Unit3d(nn.Module):
    def __init__(self, unit: arch.Unit, variant: arch.Variant):
        super().__init__()
        self.unit, self.variant = unit, variant
        self.conv = nn.Conv3d(unit.cin, unit.cout, unit.kernel, unit.stride, bias=unit.logits)
        self.bn = None if unit.logits else BatchNorm(unit.cout, variant.bn_eps, variant.bn_scale)

    def forward(self, x):
        return _side_by_side((self,), x)[0]


def _side_by_side(units, x) -> tuple:
    """The outputs of Unit3ds that read the same x with the same kernel and stride, computed as
    one unit: one conv with their kernels stacked, then one batch norm and ReLU over the
    stacked channels (both channel by channel: the same function), split. A Mixed block's
    three 1x1x1 units on its input read it once and make one GEMM instead of three, forward
    and backward (H200, bf16 training step, batch 8: 188 -> 193 clips/s channels_last_3d, 125
    -> 131 contiguous); parameters and running statistics stay each unit's own."""
    first, u = units[0], units[0].unit
    pads = arch.conv_padding(first.variant, tuple(x.shape[2:]), u.kernel, u.stride)
    conv = _conv_time_unfolded if x.device.type in UNFOLD_ON and unfolds(u) else _conv3d
    bias = None if first.conv.bias is None else _stack([m.conv.bias for m in units])
    x = conv(x, _stack([m.conv.weight for m in units]), bias, pads, u.stride)
    if first.bn is not None:
        x = F.relu(_batch_norms(x, [m.bn for m in units]))
    return x.split([m.unit.cout for m in units], 1) if len(units) > 1 else (x,)


def _max_pool(x, kernel, stride):
    """'SAME' max-pool, padded with -inf. Without gradients it runs as `_window_max` (no
    indices); with them as `_separable_max_pool`, whose indices route each gradient to one
    maximum."""
    pads = arch.pool_padding(tuple(x.shape[2:]), kernel, stride)
    return (_separable_max_pool if x.requires_grad else _window_max)(x, pads, kernel, stride)


def _torch_max_pool(x, pads, kernel, stride):
    """torch's 3-D pool, the reference the fast paths are held to."""
    x, pad = _pad(x, pads, float("-inf"))
    if pad and any(2 * p > k for p, k in zip(pad, kernel)):  # torch caps implicit padding at k/2
        x, pad = F.pad(x, _flat([(q, q) for q in pad]), value=float("-inf")), 0
    return F.max_pool3d(x, kernel, stride, pad)


def _pool2d_args(sizes, pads, kernel, stride):
    """(padding, ceil_mode) with which max_pool2d pools `sizes` as 'SAME' with `pads`: a
    symmetric pad as padding, one more at the back as ceil_mode's last partial window; None
    where neither gives the 'SAME' size (the caller pads explicitly)."""
    ceil = any(b - a == 1 for a, b in pads)
    for n, (a, b), k, s in zip(sizes, pads, kernel, stride):
        if b - a not in (0, 1) or 2 * a > k:
            return None
        out = (n + 2 * a - k + (s - 1 if ceil else 0)) // s + 1
        if ceil and (out - 1) * s >= n + a:
            out -= 1
        if out != -(-n // s):
            return None
    return tuple(a for a, _ in pads), ceil


def _pool2d(x, sizes, pads, kernel, stride):
    """max_pool2d of a 4-D view as 'SAME' with -inf padding (explicit where it must be)."""
    args = _pool2d_args(sizes, pads, kernel, stride)
    if args is None:
        x, args = F.pad(x, _flat(pads), value=float("-inf")), ((0, 0), False)
    return F.max_pool2d(x, kernel, stride, args[0], ceil_mode=args[1])


def _separable_max_pool(x, pads, kernel, stride):
    """The pool as a 2-D pool over (H, W) then one over T, on views of the input in its own
    layout (channels_last_3d included). The max of a box is the max of its frames' maxima, so
    the forward is torch's pool's bit for bit; each gradient goes to one maximum through
    max_pool2d's indices (without ties, the one torch's 3-D pool picks). On CUDA, torch's 3-D
    pool and its backward took a third of a bf16 training step (H200, batch 8, 64x224x224)."""
    last = _channels_last(x)
    if kernel[1:] != (1, 1) or stride[1:] != (1, 1):
        x = _over(x, 1, last, lambda v: _pool2d(v, x.shape[3:], pads[1:], kernel[1:], stride[1:]))
    if kernel[0] != 1 or stride[0] != 1:
        t = x.shape[2]
        x = _over(x, 0, last, lambda v: _pool2d(v, (t, v.shape[3]), (pads[0], (0, 0)),
                                               (kernel[0], 1), (stride[0], 1)))
    return x


def _over(x, spatial: int, last: bool, op):
    """`op` on a 4-D view of x (B, C, T, H, W) in x's own layout, mapped back to 5-D: spatial=1
    pools (H, W) of every frame, spatial=0 (T, H*W). Channels_last views are made from the
    NDHWC tensor's own (contiguous) order, so size-1 dims keep proper strides (max_pool2d reads
    a layout from strides, not from is_contiguous)."""
    b, c, t, h, w = x.shape
    if last:
        n = x.permute(0, 2, 3, 4, 1)  # contiguous (B, T, H, W, C)
        v = n.reshape(b * t, h, w, c) if spatial else n.reshape(b, t, h * w, c)
        y = op(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # NHWC pooled, contiguous
        y = y.reshape(b, t, *y.shape[1:3], c) if spatial else y.reshape(b, y.shape[1], h, w, c)
        return y.permute(0, 4, 1, 2, 3)
    y = op(x.reshape(b, c * t, h, w) if spatial else x.reshape(b, c, t, h * w))
    return y.reshape(b, c, t, *y.shape[2:]) if spatial else y.reshape(b, c, y.shape[2], h, w)


def _channels_last(x) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)


def _window_max(x, pads, kernel, stride):
    """Max over (T, H, W) windows as a max over W, then H, then T windows of strided views of
    the -inf padded input: a max is exact and separable over a box, so the result is bit for
    bit torch's pool's, without the indices torch's CUDA pool always writes (int64: four
    times a bf16 output). Works in the input's memory layout (NCDHW or channels_last_3d)."""
    if any(_flat(pads)):
        x = F.pad(x, _flat(pads), value=float("-inf"))
    last = _channels_last(x)
    v, first = (x.permute(0, 2, 3, 4, 1), 1) if last else (x, 2)  # contiguous either way
    for d in (2, 1, 0):
        if kernel[d] > 1 or stride[d] > 1:
            v = v.unfold(first + d, kernel[d], stride[d]).amax(-1)
    # the windowed reduction may leave a strided result: hand on the layout the input had
    return (v.permute(0, 4, 1, 2, 3) if last else v).contiguous(
        memory_format=torch.channels_last_3d if last else torch.contiguous_format)


# Convs whose input has few channels (the RGB stem: 3 channels x 7 taps) run, on these devices,
# as one 2-D conv over (batch x output time): cuDNN's 3-D kernels for 3 input channels are
# slow (an H200 spent 43% of a forward in the stem), oneDNN's on the CPU are not.
UNFOLD_ON = ("cuda",)
UNFOLD_MAX_CHANNELS = 32
# cuDNN's NHWC tensor-core kernels take channels in multiples of 8 and pad other counts
# themselves, a pass over the whole unfolded input (3 x 7 = 21 channels: 1.8 ms of an H200's
# bf16 training step). Zero taps appended to the kernel align them in the unfold's own copy.
UNFOLD_ALIGN = 8


def unfolds(unit: arch.Unit) -> bool:
    """Whether `unit` runs as `_conv_time_unfolded` on the devices of UNFOLD_ON."""
    return unit.kernel[0] > 1 and unit.cin * unit.kernel[0] <= UNFOLD_MAX_CHANNELS


def _conv3d(x, weight, bias, pads, stride):
    x, pad = _pad(x, pads)
    return F.conv3d(x, weight, bias, stride, pad)


def _conv_time_unfolded(x, weight, bias, pads, stride):
    """conv3d(pad(x)) as conv2d: the kt temporal taps of the C input channels become C*kt
    channels of a (B*T')-batched 2-D conv with the reshaped (O, C*kt, kh, kw) kernel, kt
    lengthened by zero taps to make C*kt a multiple of UNFOLD_ALIGN. The same sums (in another
    order, plus zeros); the output keeps the input's memory layout."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind):  # cast before the copy that multiplies the input by kt/st
        x = x.to(torch.get_autocast_dtype(kind))
    last = _channels_last(x)
    b, c, kt = x.shape[0], x.shape[1], weight.shape[2]
    zeros = next(e for e in range(UNFOLD_ALIGN) if c * (kt + e) % UNFOLD_ALIGN == 0)
    if zeros:  # the extra taps read zero frames past the end: the same output length
        weight = F.pad(weight, (0, 0, 0, 0, 0, zeros))
        pads, kt = ((pads[0][0], pads[0][1] + zeros), *pads[1:]), kt + zeros
    x = F.pad(x, _flat(pads))
    u = x.unfold(2, kt, stride[0])  # (B, C, T', H, W, kt)
    t, h, w = u.shape[2:5]
    if last:  # one copy to (B, T', H, W, C, kt), seen as channels_last (B*T', C*kt, H, W)
        u = u.permute(0, 2, 3, 4, 1, 5).reshape(b * t, h, w, c * kt).permute(0, 3, 1, 2)
    else:
        u = u.permute(0, 2, 1, 5, 3, 4).reshape(b * t, c * kt, h, w)
    y = F.conv2d(u, weight.reshape(weight.shape[0], c * kt, *weight.shape[3:]), bias, stride[1:])
    y = y.unflatten(0, (b, t)).transpose(1, 2)  # (B, O, T', H', W')
    return y.contiguous(memory_format=torch.channels_last_3d if last else torch.contiguous_format)


class Mixed(nn.Module):
    def __init__(self, block: arch.Mixed, variant: arch.Variant):
        super().__init__()
        for unit in block.units:
            self.add_module(unit.path.rsplit(".", 1)[1], Unit3d(unit, variant))

    def forward(self, x):
        y0, y1, y2 = _side_by_side((self.b0, self.b1a, self.b2a), x)  # the 1x1x1s on x
        pool = _max_pool(x, *arch.BRANCH3_POOL)
        return torch.cat([y0, self.b1b(y1), self.b2b(y2), self.b3b(pool)], 1)


class InceptionI3d(nn.Module):
    """I3D, RGB stream. Input (B, 3, T, H, W) in [-1, 1].

    forward(x) returns the final end point (the (B, classes) logits by default);
    end_points(x) returns every end point on the way, and with the head also
    'PerTimeFeatures' (B, 1024, T': the head's pooled Mixed_5c map, one vector per 8 frames),
    'Features' (B, 1024, those averaged over time) and 'PerTimeLogits' (B, classes, T').
    head='deepmind' is DeepMind's (2, 7, 7) VALID average pool; head='global' averages all of
    H and W instead, for inputs whose Mixed_5c map is not 7x7.
    """

    def __init__(self, num_classes: int = 400, variant: arch.Variant = arch.DEEPMIND,
                 final_endpoint: str = "Logits", head: str = "deepmind",
                 dropout_keep_prob: float = 1.0):
        super().__init__()
        if head not in ("deepmind", "global"):
            raise ValueError(f"head must be 'deepmind' or 'global', got {head!r}")
        self.num_classes, self.variant, self.head = num_classes, variant, head
        self.final_endpoint = arch.check_end_point(final_endpoint)
        self.dropout = nn.Dropout(1.0 - dropout_keep_prob)
        self.layers = []  # the table's layers up to the final end point, in order
        stop = arch.END_POINTS.index(self.final_endpoint)
        for layer in arch.layers(num_classes)[: stop + 1]:
            if isinstance(layer, arch.Unit):
                self.add_module(layer.path, Unit3d(layer, variant))
            elif isinstance(layer, arch.Mixed):
                self.add_module(layer.name, Mixed(layer, variant))
            elif isinstance(layer, arch.Head):
                self.add_module(layer.unit.path, Unit3d(layer.unit, variant))
            self.layers.append(layer)

    def _walk(self, x):
        """Yields (end point name, tensor) up to the final end point."""
        for layer in self.layers:
            if isinstance(layer, arch.Pool):
                x = _max_pool(x, layer.kernel, layer.stride)
            elif isinstance(layer, arch.Head):
                yield from self._head(x, layer)
                return
            else:
                x = getattr(self, layer.name)(x)
            yield layer.name, x
            if layer.name == self.final_endpoint:
                return

    def _head(self, x, head: arch.Head):
        if self.head == "global":
            x = x.mean(dim=(3, 4), keepdim=True)
        else:
            if any(n < k for n, k in zip(x.shape[2:], head.pool)):
                raise ValueError(f"Mixed_5c map {tuple(x.shape[2:])} is smaller than the "
                                 f"{head.pool} pool; use head='global' for this input size")
            x = F.avg_pool3d(x, head.pool, 1)
        yield "PerTimeFeatures", x.mean(dim=(3, 4))
        yield "Features", x.mean(dim=(2, 3, 4))
        per_time = getattr(self, head.unit.path)(self.dropout(x)).squeeze(4).squeeze(3)
        yield "PerTimeLogits", per_time
        logits = per_time.mean(dim=2)
        yield "Logits", logits
        if self.final_endpoint == "Predictions":
            yield "Predictions", F.softmax(logits, dim=1)

    def forward(self, x):
        for _, out in self._walk(x):
            pass
        return out

    def load_state_dict(self, state_dict, *args, **kwargs):
        """Refuses a state_dict whose metadata (`_metadata`, as this project's files carry it)
        records another variant: it would load, and run wrongly."""
        checkpoints.check_recorded(formats.recorded(state_dict), self.variant, "state_dict")
        return super().load_state_dict(state_dict, *args, **kwargs)

    def end_points(self, x) -> dict:
        return dict(self._walk(x))

    def head_outputs(self, x) -> dict:
        """{name: tensor} of `arch.HEAD_OUTPUTS` alone (the maps on the way are let go)."""
        return {k: v for k, v in self._walk(x) if k in arch.HEAD_OUTPUTS}


def state_dict_from(weights: dict) -> dict:
    """Canonical weights -> a state_dict for this twin (float tensors sharing no memory)."""
    return {k: torch.from_numpy(a.copy()) for k, a in to_scheme(weights, "torch").items()}


def load_weights(model: InceptionI3d, weights) -> InceptionI3d:
    """Strict load; a model cut at an earlier end point takes just the units it has. `weights`
    may be a weight file's path: one that records another variant than the model's is refused."""
    if isinstance(weights, str):
        weights = checkpoints.read_weights(weights, model.variant)[0]
    own = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in state_dict_from(weights).items() if k in own}, strict=True)
    return model


def build(weights: dict | None = None, variant: arch.Variant = arch.DEEPMIND, **kwargs) -> InceptionI3d:
    """A twin in eval mode, sized by `weights` (number of classes) and loaded with them."""
    if weights is not None:
        kwargs.setdefault("num_classes", _num_classes(weights))
    model = InceptionI3d(variant=variant, **kwargs).eval()
    return load_weights(model, weights) if weights is not None else model


def predict(weights: dict, clip, variant: arch.Variant = arch.DEEPMIND, **kwargs):
    """Logits (B, classes) as numpy for a numpy clip (B, 3, T, H, W) in [-1, 1]."""
    model = build(weights, variant, **kwargs)
    with torch.inference_mode():
        return model(torch.from_numpy(clip)).numpy()


def end_points(weights: dict, clip, variant: arch.Variant = arch.DEEPMIND, **kwargs) -> dict:
    """{end point: numpy array} up to Predictions (or `final_endpoint`) for a numpy clip."""
    kwargs.setdefault("final_endpoint", "Predictions")
    model = build(weights, variant, **kwargs)
    with torch.inference_mode():
        return {k: v.float().numpy() for k, v in model.end_points(torch.from_numpy(clip)).items()}
