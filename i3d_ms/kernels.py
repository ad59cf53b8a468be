"""Which kernels the MindSpore twin runs, and the channels-last ones it builds from matmuls.

MindSpore 2.10's CPU Conv3D hands plain NCDHW tensors to oneDNN, whose 'ncsp' wrapper then
runs the reference convolution on CPUs with AVX-512: about 1 GFLOP/s (its matmul reaches 440),
so a 64x224x224 clip took minutes. On the CPU the twin therefore runs channels-last (NDHWC) and
turns every convolution into matmuls at the machine's rate (`benchmarks/results/
cpu-2core-mindspore.md` has the measurements that chose each kernel below):

- a 1x1x1 conv is one matmul of the (positions, channels) map;
- a kxkxk conv gathers the (kh, kw) patch of every position of every input frame once, with
  one `Gather` from a constant index (padding = an appended zero row), and runs one matmul per
  temporal tap over all frames; the taps' outputs are summed shifted by whole frames (cheaper
  than shifting the 9x larger patches);
- the strided stem becomes a stride-1 conv by space-to-depth (each 2x2x2 block of the padded
  clip becomes 24 channels, the 7x7x7 kernel a zero-padded 4x4x4 one);
- BatchNorm at inference is folded into the conv's weights and a BiasAdd; in training it
  normalises the (positions, channels) view, its statistics by ReduceSum (MindSpore's CPU
  ReduceMean and broadcast multiply are 10x slower on that view than ReduceSum, BiasAdd and
  a Tile'd multiply);
- max-pools run MaxPool3D on the channels-last map read as NCDHW, spatial then temporal
  (`MaxPool`); float64 training takes separable maxima over shifted row ranges instead, whose
  gradient is exact (`max_pool_separable`).

In PyNative every reshape is a view, and MatMul copies a view on one thread before it
starts: a matmul on a reshaped map took 2x its time on a fresh tensor at 64x224x224. So the
patches come out of the Gather as (rows, kh*kw, c) and `ops.flatten` (a fresh tensor) makes
them (rows, kh*kw*c), and a 1x1 conv flattens its map the same way.

Index tables are numpy, computed once per input shape (`ms.constexpr`: constants of the graph
in graph mode, cached tensors in pynative).
"""
from __future__ import annotations

import functools

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

# (device, execution mode) -> convolution kernel for float32 ('matmul': channels-last matmuls
# built here; 'native': MindSpore's Conv3D, NCDHW). float64 always takes 'matmul' (Conv3D has
# no float64 kernel). Measured at 64x224x224 on the CPU (see the module docstring); the GPU rows
# are assumed, not measured: MindSpore 2.10's GPU plugin needs CUDA 11, which no lent machine
# has; there Conv3D is cuDNN's, the kernel every GPU framework relies on.
KERNELS = {
    ("CPU", "pynative"): "matmul",
    ("CPU", "graph"): "matmul",
    ("GPU", "pynative"): "native",
    ("GPU", "graph"): "native",
}
CONVS = ("auto", "matmul", "native")


def choose(conv: str, dtype: str) -> str:
    """'auto' -> the table's kernel for the current device and mode; float64 -> 'matmul';
    'float16' (mixed precision) -> 'native'. MindSpore's fp16 CPU matmul (what mixed precision
    makes of the 'matmul' kernel) missed float32's loss by 0.8% on the full network at 8x32x32
    and overflowed every step of a dynamic loss scale that Conv3D's fp16 passed; mixed
    precision is the GPU's recipe, where Conv3D is cuDNN's, so the CPU runs it as the GPU
    would."""
    if conv not in CONVS:
        raise ValueError(f"conv must be one of {', '.join(CONVS)}, got {conv!r}")
    if dtype == "float64":
        return "matmul"
    if conv != "auto":
        return conv
    if dtype == "float16":
        return "native"
    device = ms.get_context("device_target")
    mode = "graph" if ms.get_context("mode") == ms.GRAPH_MODE else "pynative"
    return KERNELS.get((device, mode), "native")


@functools.lru_cache(maxsize=256)
def _tensor(array_fn, *args):
    """The index table array_fn(*args) as a Tensor, built once per shape."""
    return Tensor(array_fn(*args))


def _conv_out(sizes, kernel, stride, pads):
    return tuple((n + a + b - k) // s + 1 for n, k, s, (a, b) in zip(sizes, kernel, stride, pads))


out_size = ms.constexpr(_conv_out)  # the output size of a conv, at graph compile time


def _padded(n, d, h, w, pads):
    """Row of every position of the (front, back) padded (n, d, h, w) map in the unpadded
    one's (n*d*h*w, c) rows; padding positions get the pad row n*d*h*w appended below them."""
    (fd, bd), (fh, bh), (fw, bw) = pads
    src = np.full((n, d + fd + bd, h + fh + bh, w + fw + bw), n * d * h * w, np.int64)
    src[:, fd:fd + d, fh:fh + h, fw:fw + w] = np.arange(n * d * h * w).reshape(n, d, h, w)
    return src


PATCH_BYTES = 128 << 20  # the patches gathered at once: a bound on the conv's working memory
_ITEMSIZE = {ms.float16: 2, ms.bfloat16: 2, ms.float32: 4, ms.float64: 8}


def _patch_index(n, d, h, w, kernel, pads, out, part, parts):
    """Rows of the (kh, kw) patches of output rows `part` of `parts` (ho split in row bands),
    one patch per row of the result: (n*dp*band rows*wo, kh*kw) source rows or the pad row, so
    that the Gather's output flattens to the patch matrix; dp = d + the time padding (padded
    frames are all pad rows); ho, wo = `out`."""
    _, kh, kw = kernel
    src = _padded(n, d, h, w, pads)
    band = np.array_split(np.arange(out[0]), parts)[part]
    r = band[:, None] + np.arange(kh)[None, :]  # (band, kh), in padded coordinates
    c = np.arange(out[1])[:, None] + np.arange(kw)[None, :]  # (wo, kw)
    rows = src[:, :, r[:, None, :, None], c[None, :, None, :]]
    return rows.reshape(-1, kh * kw).astype(np.int32)


@ms.constexpr
def _patch_plan(shape, kernel, pads, out, dtype):
    """Static numbers of a stride-1 conv on an NDHWC map of `shape`: the patch index of each
    band of output rows (as many bands as keep the patches under PATCH_BYTES), the positions
    per frame of each band, the frames per item dp and kh*kw*c."""
    n, d, h, w, c = shape
    dp = d + pads[0][0] + pads[0][1]
    k = kernel[1] * kernel[2] * c
    size = n * dp * out[1] * out[2] * k * _ITEMSIZE.get(dtype, 4)
    parts = int(min(out[1], -(-size // PATCH_BYTES)))
    idx = tuple(_tensor(_patch_index, n, d, h, w, kernel, pads, out[1:], i, parts)
                for i in range(parts))
    bands = tuple(len(b) * out[2] for b in np.array_split(np.arange(out[1]), parts))
    return idx, bands, dp, k


def _frames_index(n, dp, do, f):
    """Rows of the valid output frames when the batch's frames ran as one sequence."""
    rows = np.arange(n * dp * f).reshape(n, dp, f)
    return rows[:, :do].reshape(-1).astype(np.int32)


@ms.constexpr
def _frames_plan(n, dp, do, f):
    return _tensor(_frames_index, n, dp, do, f)


def taps(weight, scale=None):
    """Conv weight (cout, cin, kd, kh, kw) -> (kd, kh*kw*cin, cout), the rows of each temporal
    tap in the patches' order; times the per-channel `scale` (folded BatchNorm) if given."""
    cout, cin, kd, kh, kw = weight.shape
    w = transpose(weight.reshape(cout, cin, kd * kh * kw), (2, 1, 0))  # one 3-D transpose: the
    w = w.reshape(-1, cout)  # fastest form of this permutation on MindSpore's CPU
    if scale is not None:
        w = channel_scale(w, scale)
    return w.reshape(kd, kh * kw * cin, cout)


transpose = ops.Transpose()
matmul = ops.MatMul()  # the primitive: its gradient multiplies transposed, the functional one transposes the patches first
_unstack = ops.Unstack(0)


def conv_frames(x, taps, kernel, pads, out):
    """Stride-1 conv of an NDHWC map x (n, d, h, w, c) with `taps` (see `taps`), `kernel`
    (kd, kh, kw) and (front, back) `pads`, to the output size `out` (do, ho, wo):
    (n*do*ho*wo, cout) rows.

    One matmul per temporal tap over the patches of all frames; tap a's output, shifted a
    frames, is summed. The batch's frames run as one sequence (an item's last taps reach into
    the next item's padding frames only, whose outputs are dropped). Large maps go in bands of
    output rows, so that the patches stay under PATCH_BYTES."""
    n, c = x.shape[0], x.shape[4]
    kd = kernel[0]
    if kernel == (1, 1, 1) and pads == ((0, 0), (0, 0), (0, 0)):
        return matmul(ops.flatten(x, start_dim=0, end_dim=3), taps.reshape(c, -1))
    idx, bands, dp, k = _patch_plan(x.shape, kernel, pads, out, x.dtype)
    taps = _unstack(taps) if kd > 1 else (taps.reshape(k, -1),)
    src = ops.cat((x.reshape(-1, c), ops.zeros((1, c), x.dtype)), 0)
    frames = n * dp - kd + 1
    parts = ()
    for rows, f in zip(idx, bands):
        patches = ops.flatten(ops.gather(src, rows, 0))  # (n*dp*f, kh*kw*c)
        y = None
        for a in range(kd):
            part = matmul(patches, taps[a])
            part = part[a * f:(a + frames) * f] if kd > 1 else part
            y = part if y is None else y + part
        parts = parts + (y.reshape(frames, f, -1),)
    y = (ops.cat(parts, 1) if len(parts) > 1 else parts[0]).reshape(frames * out[1] * out[2], -1)
    if n > 1 and dp != out[0]:
        y = ops.gather(y, _frames_plan(n, dp, out[0], out[1] * out[2]), 0)
    return y


def _pad_zeros(x, axis, front, back):
    """Zero-pad one axis by concatenation: no Pad op, whose CPU backward (PadV3Grad) is wrong
    in graph mode from the second step (docs/training.md, "Graph mode on CPU")."""
    parts = []
    shape = list(x.shape)
    if front:
        shape[axis] = front
        parts.append(ops.zeros(tuple(shape), x.dtype))
    parts.append(x)
    if back:
        shape[axis] = back
        parts.append(ops.zeros(tuple(shape), x.dtype))
    return ops.cat(parts, axis) if len(parts) > 1 else x


def _s2d_index(n, d, h, w, stride, pads, canvas):
    """Rows of the space-to-depth canvas (n, dn, hn, wn, sd, sh) of an NDHWC clip whose rows
    are runs of sw pixels (the padding's front in W a multiple of sw): source row or pad row."""
    sd, sh, sw = stride
    (fd, _), (fh, _), (fw, _) = pads
    dn, hn, wn = canvas
    pairs = w // sw
    t = (np.arange(dn)[:, None] * sd + np.arange(sd)[None, :]) - fd  # (dn, sd)
    r = (np.arange(hn)[:, None] * sh + np.arange(sh)[None, :]) - fh  # (hn, sh)
    m = np.arange(wn) - fw // sw
    b = np.arange(n)
    ok = ((t >= 0) & (t < d))[None, :, None, None, :, None] \
        & ((r >= 0) & (r < h))[None, None, :, None, None, :] \
        & ((m >= 0) & (m < pairs))[None, None, None, :, None, None]
    row = ((b[:, None, None, None, None, None] * d + t[None, :, None, None, :, None]) * h
           + r[None, None, :, None, None, :]) * pairs + m[None, None, None, :, None, None]
    return np.where(ok, row, n * d * h * pairs).reshape(-1).astype(np.int32)


@ms.constexpr
def _strided_plan(shape, kernel, stride, pads):
    """The stem's space-to-depth: the clip's W pre-padding that aligns pixel runs with the
    stride, the canvas index, the canvas (dn, hn, wn), the taps ceil(k / s) per dimension and
    the output size."""
    n, c, d, h, w = shape
    out = _conv_out((d, h, w), kernel, stride, pads)
    taps = tuple(-(-k // s) for k, s in zip(kernel, stride))
    canvas = tuple(o + t - 1 for o, t in zip(out, taps))
    sw, fw = stride[2], pads[2][0]
    front = fw % sw
    back = (-(w + front)) % sw
    w2 = w + front + back
    pads2 = (pads[0], pads[1], (fw - front, 0))
    idx = _tensor(_s2d_index, n, d, h, w2, stride, pads2, canvas)
    return (front, back), idx, canvas, taps, out


def conv_strided(x, weight, stride, pads, scale=None):
    """Strided conv of an NCDHW clip (the stem), by space-to-depth: one Gather turns the clip
    (channels-last, rows of sw pixels) into the padded canvas of stride blocks (2x2x2 blocks
    of RGB: 24 channels), where the 7x7x7 conv is a 4x4x4 stride-1 conv with a zero-padded
    kernel (`conv_frames`). Returns ((n*do*ho*wo, cout) rows, (do, ho, wo))."""
    n, c = x.shape[0], x.shape[1]
    cout = weight.shape[0]
    (front, back), idx, canvas, kernel, out = _strided_plan(x.shape, weight.shape[2:], stride,
                                                            pads)
    x = transpose(x, (0, 2, 3, 4, 1))
    if front or back:
        x = _pad_zeros(x, 3, front, back)
    sd, sh, sw = stride
    runs = ops.cat((x.reshape(-1, sw * c), ops.zeros((1, sw * c), x.dtype)), 0)
    k = sd * sh * sw * c
    blocks = ops.gather(runs, idx, 0).reshape((n,) + canvas + (k,))
    w = weight
    for axis, (t, s) in enumerate(zip(kernel, stride), 2):
        w = _pad_zeros(w, axis, 0, t * s - w.shape[axis])
    td, th, tw = kernel
    w = transpose(w.reshape(cout, c, td, sd, th, sh, tw, sw), (0, 3, 5, 7, 1, 2, 4, 6)) \
        .reshape(cout, k, td, th, tw)
    return conv_frames(blocks, taps(w, scale), kernel, ((0, 0), (0, 0), (0, 0)), out), out


def _canvas_index(n, d, h, w, pads):
    return _padded(n, d, h, w, pads).reshape(-1).astype(np.int32)


def _pool_out_index(n, dims, stride, out):
    """Canvas rows of the outputs of a strided window max, `dims` the canvas (dp, hp, wp)."""
    dp, hp, wp = dims
    b, t, r, q = np.ix_(np.arange(n), np.arange(out[0]) * stride[0],
                        np.arange(out[1]) * stride[1], np.arange(out[2]) * stride[2])
    return (((b * dp + t) * hp + r) * wp + q).reshape(-1).astype(np.int32)


@ms.constexpr
def _pool_plan(shape, kernel, stride, pads):
    n, d, h, w, _ = shape
    dims = tuple(s + a + b for s, (a, b) in zip((d, h, w), pads))
    out = tuple((s + st - 1) // st for s, st in zip((d, h, w), stride))
    canvas = _tensor(_canvas_index, n, d, h, w, pads)
    picks = _tensor(_pool_out_index, n, dims, stride, out)
    return canvas, picks, dims, out


def max_pool_separable(x, kernel, stride, pads):
    """TF 'SAME' max-pool of an NDHWC map: the -inf padded canvas, separable maxima over
    shifted row ranges (W, then H, then D), the strided outputs picked. Slower than `MaxPool`
    (each shifted range is a copy), but its gradient is exact in float64, where MaxPool3D's CPU
    backward accumulates in float32 (3e-7 off)."""
    n, c = x.shape[0], x.shape[4]
    canvas, picks, (_, hp, wp), out = _pool_plan(x.shape, kernel, stride, pads)
    src = ops.cat((x.reshape(-1, c), ops.full((1, c), float("-inf"), dtype=x.dtype)), 0)
    m = ops.gather(src, canvas, 0)
    for k, step in zip(kernel[::-1], (1, wp, hp * wp)):
        if k > 1:
            length = m.shape[0] - (k - 1) * step
            best = m[:length]
            for i in range(1, k):
                best = ops.maximum(best, m[i * step:i * step + length])
            m = best
    return ops.gather(m, picks, 0).reshape(n, *out, c)


class MaxPool(nn.Cell):
    """TF 'SAME' max-pool of an NDHWC map, in place of the channels: MaxPool3D pools the last
    three axes of what it takes for NCDHW, so the map (n, d, h, w, c) read as (N, C, D, H, W)
    is pooled over H and W by a (kh, kw, 1) window, then (n, 1, d, h*w, c) over D by a
    (kd, 1, 1) one. The maximum is separable, and each 'SAME' pass pads its axis as the joint
    window would (`arch.pool_padding`). At 64x224x224 in PyNative 4-6x faster than maxima over
    shifted row ranges (each range a copy), and no transposes to and from NCDHW."""

    def __init__(self, kernel, stride):
        super().__init__()
        (kd, kh, kw), (sd, sh, sw) = kernel, stride
        self.spatial = ops.MaxPool3D((kh, kw, 1), (sh, sw, 1), pad_mode="SAME") \
            if (kh, kw, sh, sw) != (1, 1, 1, 1) else None
        self.temporal = ops.MaxPool3D((kd, 1, 1), (sd, 1, 1), pad_mode="SAME") \
            if (kd, sd) != (1, 1) else None

    def construct(self, x):
        if self.spatial is not None:
            x = self.spatial(x)
        if self.temporal is not None:
            n, d, h, w, c = x.shape
            x = self.temporal(x.reshape(n, 1, d, h * w, c)).reshape(n, -1, h, w, c)
        return x


def channel_scale(rows, scale):
    """rows (R, C) * scale (C,): the scale tiled to the rows' shape first (MindSpore's CPU
    broadcast multiply on this layout is ~10x slower than Tile and a same-shape multiply)."""
    return rows * ops.tile(scale.reshape(1, -1), (rows.shape[0], 1))
