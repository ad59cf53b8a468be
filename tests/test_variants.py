"""Numerical variants in the wild, judged by other projects' real model code.

The judges: cd-fvd's copy of piergiaj's pytorch_i3d (`cdfvd.third_party.i3d.pytorch_i3d`, a
test dependency; its BatchNorm eps is 1e-5, piergiaj's own 1e-3), and MindSpore cells built
here to the two mindvideo layouts from their published structure (not from this project's
table or name map), saved with `mindspore.save_checkpoint`. Their models are randomised the way
a trained one looks (BN statistics of real input, gamma != 1, some channels of small variance,
where the variants' eps differ) and fed even-sized clips, where 'same' and symmetric padding
differ. Every comparison's max abs error is printed (pytest -s) for the record.
"""
import json

import i3d_ms  # MindSpore before anything decodes video
import mindspore as ms
import numpy as np
import pytest
import torch
from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d as CdFvdI3d
from mindspore import Tensor, nn, ops

import i3d_torch
from convert import architecture as arch
from convert.architecture import MINDVIDEO, MINDVIDEO_SAME, PYTORCH_I3D
from convert.checkpoints import describe, load_default, read_weights, write_weights
from convert.errors import I3DError
from convert.formats import METADATA_KEY, mindspore_ckpt
from tests.helpers import call, expect_error, fails, i3d, ok

TOL = 1e-4
MINDVIDEO_NOTICE = ("mindvideo (symmetric) assumed; i3d_mindspore's 'same' build writes the same "
                    "names: --variant mindvideo-same")
CDFVD_NOTICE = "cd-fvd's copy of pytorch_i3d (BN eps 1e-5) writes the same names: --variant mindvideo-same"
ERRORS = {}  # case -> max abs error, printed when the module is done (pytest -s shows them)


def err(a, b, case: str) -> float:
    ERRORS[case] = float(np.abs(np.asarray(a) - np.asarray(b)).max())
    return ERRORS[case]


@pytest.fixture(scope="module", autouse=True)
def _print_errors():
    yield
    for case, e in ERRORS.items():
        print(f"max abs {case}: {e:.2e}")


def notices(stderr: str) -> list:
    return [line for line in stderr.splitlines() if line.startswith("i3d: note:")]


@pytest.fixture(scope="module")
def clip16(cricket_clip):
    """16 real frames at 224 (DeepMind's sample clip)."""
    return np.ascontiguousarray(cricket_clip[:, :, :16])


@pytest.fixture(scope="module")
def clip112(clip16):
    """The same 16 frames at 112x112: even, so 'same' and symmetric padding differ."""
    return np.ascontiguousarray(clip16[:, :, :, ::2, ::2])


def statistics(a: np.ndarray, gamma: np.ndarray, rng) -> tuple:
    """(mean, var, gamma) of a BatchNorm as training leaves it, from its input `a` (N, C, D, H,
    W): this input's statistics, no channel of zero variance, and a quarter of the channels of
    small variance with gamma scaled to match (the same function but where eps counts)."""
    a = a.astype(np.float64)
    mean, var = a.mean(axis=(0, 2, 3, 4)), a.var(axis=(0, 2, 3, 4))
    var = np.maximum(var, 0.01 * (a * a).mean(axis=(0, 2, 3, 4)))
    quiet = rng.rand(len(var)) < 0.25
    var[quiet] *= 1e-3
    return mean, var, gamma * np.where(quiet, np.sqrt(1e-3), 1.0)


# ---------------------------------------------------------------- the variant table and parser

def test_named_variants_and_the_custom_form_parse_back_exactly():
    assert list(arch.VARIANTS) == ["deepmind", "pytorch-i3d", "mindvideo", "mindvideo-same"]
    assert (PYTORCH_I3D.padding, PYTORCH_I3D.bn_eps, PYTORCH_I3D.bn_scale) == ("same", 1e-3, True)
    assert (MINDVIDEO_SAME.padding, MINDVIDEO_SAME.bn_eps) == ("same", 1e-5)
    for name, v in arch.VARIANTS.items():
        assert arch.variant(name) is v and arch.variant(v.spec) == v and v.name == name
    custom = arch.variant(" padding=symmetric, eps=2.5e-4 ,scale=false")
    assert custom == arch.Variant("symmetric", 2.5e-4, False) and arch.variant(custom.name) == custom
    assert arch.variant("scale=true,eps=1e-05,padding=same") == MINDVIDEO_SAME
    for bad, words in (("mindvideo_same", "unknown variant"), ("padding=same,eps=1e-3", "give all"),
                       ("padding=valid,eps=1e-3,scale=true", "padding must be"),
                       ("padding=same,eps=1e-3,scale=yes", "scale must be"),
                       ("padding=same,eps=x,scale=true", "could not convert"),
                       ("padding=same,eps=0,scale=true", "eps must be in"),
                       ("padding=same,eps=nan,scale=true", "eps must be in"),
                       ("padding=same,eps=1e-3,eps=1e-3,scale=true", "each once")):
        with pytest.raises(ValueError, match=words):
            arch.variant(bad)


def test_the_training_config_and_every_command_take_the_same_names():
    from i3d_cli.main import build_parser
    from recipe.config import variant

    assert variant({"variant": "mindvideo-same"}) == MINDVIDEO_SAME
    assert variant({"variant": "padding=symmetric,eps=1e-05,scale=true"}) == MINDVIDEO
    with pytest.raises(I3DError, match="model.variant: unknown variant 'mindvideo2'"):
        variant({"variant": "mindvideo2"})
    parser = build_parser()
    for argv in (["convert", "a", "b"], ["inspect", "a"], ["predict", "v"], ["parity"], ["demo"],
                 ["eval", "--config", "c", "--checkpoint", "k"], ["train", "--config", "c"]):
        assert parser.parse_args(argv + ["--variant", "mindvideo-same"]).variant == MINDVIDEO_SAME
    fails("convert", "default", "x.pt", "--variant", "bogus", words=("--variant", "unknown variant"))


# ---------------------------------------------------------- where each format keeps the variant

def test_ckpt_string_entry_is_byte_for_byte_what_mindspore_writes(tmp_path):
    class Cell(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = ms.Parameter(Tensor(np.arange(6, dtype=np.float32).reshape(2, 3)), name="w")

    for text in ('{"variant": "padding=same,eps=1e-05,scale=true"}', "", "ü€𝄞"):
        ms.save_checkpoint(Cell(), str(tmp_path / "ms.ckpt"), append_dict={METADATA_KEY: text})
        mindspore_ckpt.write({"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
                             str(tmp_path / "ours.ckpt"), {METADATA_KEY: text})
        assert (tmp_path / "ms.ckpt").read_bytes() == (tmp_path / "ours.ckpt").read_bytes()
        assert mindspore_ckpt.read_all(str(tmp_path / "ms.ckpt"))[1] == {METADATA_KEY: text}
        assert ms.load_checkpoint(str(tmp_path / "ours.ckpt"))[METADATA_KEY] == text


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The default weights written as mindvideo-same (gamma 1 added) in every format."""
    folder = tmp_path_factory.mktemp("recorded")
    weights = load_default()
    return {fmt: write_weights(weights, str(folder / f"w.{ext}"), variant=MINDVIDEO_SAME)["path"]
            for fmt, ext in (("mindspore", "ckpt"), ("torch", "pt"), ("safetensors", "safetensors"))}


def test_every_format_records_the_variant_and_reads_it_back(recorded, capsys):
    for path in recorded.values():
        weights, info = read_weights(path)
        assert info["variant"] == MINDVIDEO_SAME and info["variant_source"] == "recorded"
        assert all("gamma" in p for u, p in weights.items() if "beta" in p)
    assert capsys.readouterr().err == ""  # nothing assumed, nothing said
    sd = torch.load(recorded["torch"], weights_only=True)  # torch keeps it, in _metadata
    assert sd._metadata[METADATA_KEY]["variant_name"] == "mindvideo-same"
    model = i3d_torch.InceptionI3d(variant=MINDVIDEO_SAME)
    assert not model.load_state_dict(sd, strict=True).missing_keys  # a plain state_dict still
    ms_dict = ms.load_checkpoint(recorded["mindspore"])
    assert json.loads(ms_dict[METADATA_KEY])["variant"] == MINDVIDEO_SAME.spec
    net = i3d_ms.InceptionI3d(variant=MINDVIDEO_SAME, final_endpoint="Conv3d_1a_7x7")
    not_loaded, extra = ms.load_param_into_net(net, ms_dict)
    assert not_loaded == [] and METADATA_KEY in extra  # reported as not loaded, as documented


def test_bad_metadata_is_one_error_naming_the_file_and_the_entry(recorded, tmp_path):
    from collections import OrderedDict

    flat = mindspore_ckpt.read(recorded["mindspore"])
    good = json.loads(mindspore_ckpt.read_all(recorded["mindspore"])[1][METADATA_KEY])
    for i, (text, words) in enumerate((
            ("not json", f"string entry '{METADATA_KEY}' is not a map"),
            ("[" * 100_000, f"string entry '{METADATA_KEY}' is not a map"),
            ('{"variant": 3}', "is not a map of strings to strings"),
            (json.dumps({**good, "variant": "padding=same,eps=-1,scale=true"}), "unreadable variant"))):
        path = str(tmp_path / f"bad{i}.ckpt")
        mindspore_ckpt.write(flat, path, {METADATA_KEY: text})
        expect_error(i3d("convert", path, tmp_path / "out.safetensors"), path, words)
        assert not (tmp_path / "out.safetensors").exists()
    sd = OrderedDict((k, torch.zeros(1)) for k in ("a",))
    sd._metadata = OrderedDict({METADATA_KEY: {"variant": ["mindvideo"]}})
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(I3DError, match=f"_metadata\\['{METADATA_KEY}'\\] is not a map"):
        read_weights(str(tmp_path / "bad.pt"))


def test_twins_refuse_weights_recorded_as_another_variant(recorded, tmp_path):
    sd = torch.load(recorded["torch"], weights_only=True)
    with pytest.raises(I3DError, match="variant mindvideo-same .* the model is mindvideo "):
        i3d_torch.InceptionI3d(variant=MINDVIDEO).load_state_dict(sd)
    with pytest.raises(I3DError, match="contradicts"):
        i3d_torch.load_weights(i3d_torch.InceptionI3d(variant=MINDVIDEO), recorded["torch"])
    cut = {"final_endpoint": "Conv3d_2c_3x3"}
    with pytest.raises(I3DError, match="contradicts"):
        i3d_ms.load_weights(i3d_ms.InceptionI3d(variant=MINDVIDEO, **cut), recorded["mindspore"])
    i3d_ms.load_weights(i3d_ms.InceptionI3d(variant=MINDVIDEO_SAME, **cut), recorded["mindspore"])
    from i3d_ms.checkpoint import load_pretrained

    with pytest.raises(I3DError, match="contradicts"):  # the training path: model.variant
        load_pretrained(i3d_ms.InceptionI3d(variant=PYTORCH_I3D, **cut), recorded["safetensors"], False)
    dst = tmp_path / "x.pt"
    expect_error(i3d("convert", recorded["mindspore"], dst, "--variant", "mindvideo"),
                 recorded["mindspore"], "mindvideo-same", "contradicts")
    assert not dst.exists()


def test_inspect_shows_the_variant_and_how_it_is_known(recorded):
    out = ok("inspect", recorded["mindspore"])
    assert "mindvideo-same (padding same, BN eps 1e-05, BN scale yes), recorded in the file" in out
    assert "implied by the jax scheme" in ok("inspect", "default")
    d = json.loads(ok("inspect", "default", "--json", "--variant", "pytorch-i3d"))
    assert d["variant_name"] == "pytorch-i3d" and d["variant_source"] == "declared"


def test_legacy_torch_files_are_read_and_unrecorded_gamma_is_assumed(tmp_path, capsys):
    model = i3d_torch.InceptionI3d(num_classes=3, variant=MINDVIDEO)  # random weights, gamma
    path = str(tmp_path / "old.pt")
    torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
    weights, info = read_weights(path)
    assert info["format"] == "torch" and info["scheme"] == "torch"
    assert np.array_equal(weights["Logits/Conv3d_0c_1x1"]["w"], model.Logits.conv.weight.detach().numpy())
    assert info["variant"] == PYTORCH_I3D and info["variant_source"] == "assumed"
    said = notices(capsys.readouterr().err)
    assert said == [f"i3d: note: {path}: pytorch-i3d assumed (the file records no variant); if it "
                    "was trained as another: --variant NAME"]
    assert read_weights(path, "mindvideo")[1]["variant_source"] == "declared"
    with pytest.raises(I3DError, match="BN scale"):  # gamma in the file, none in the variant
        read_weights(path, "padding=symmetric,eps=1e-05,scale=false")


# ------------------------------------------------------------- cd-fvd: piergiaj's pytorch_i3d

def cdfvd_logits(model, clip, head="deepmind"):
    """cd-fvd's forward; head 'global' averages all of H, W as the twins' global head does."""
    if head == "global":
        model.avg_pool = torch.nn.AvgPool3d((1, *[-(-n // 32) for n in clip.shape[3:]]), 1)
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(clip)).numpy()


def set_bn_eps(model, eps):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.eps = eps


@pytest.mark.slow
def test_project_weights_load_strictly_into_cdfvd_and_compute_what_the_twins_do(clip112, tmp_path):
    pt = str(tmp_path / "piergiaj.pt")
    assert call("convert", "default", pt, "--scheme", "pytorch_i3d") == 0
    model = CdFvdI3d(num_classes=400)
    assert model.load_state_dict(torch.load(pt, weights_only=True), strict=True).missing_keys == []
    weights, info = read_weights(pt)
    assert info["variant"] == PYTORCH_I3D and info["variant_source"] == "recorded"
    same = cdfvd_logits(model, clip112, "global")  # cd-fvd's own numbers: BN eps 1e-5
    set_bn_eps(model, 1e-3)  # piergiaj's original
    piergiaj = cdfvd_logits(model, clip112, "global")
    assert err(same, piergiaj, "cd-fvd eps 1e-5 vs 1e-3 (the variants differ)") > 100 * TOL
    assert err(i3d_torch.predict(weights, clip112, MINDVIDEO_SAME, head="global"), same,
               "export -> cd-fvd vs torch twin, mindvideo-same") < TOL
    assert err(i3d_torch.predict(weights, clip112, PYTORCH_I3D, head="global"), piergiaj,
               "export -> cd-fvd (eps 1e-3) vs torch twin, pytorch-i3d") < TOL
    assert err(i3d_ms.predict(weights, clip112, PYTORCH_I3D, head="global"), piergiaj,
               "export -> cd-fvd (eps 1e-3) vs MindSpore twin, pytorch-i3d") < TOL


def randomised_cdfvd(clip, seed=0):
    """cd-fvd's InceptionI3d with random conv weights, gamma, beta, logits bias and BN
    statistics of `clip` (see `statistics`)."""
    torch.manual_seed(seed)
    rng = np.random.RandomState(seed)
    model = CdFvdI3d(num_classes=7).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        model.logits.conv3d.bias.uniform_(-0.5, 0.5)

    def calibrate(bn, inputs):
        mean, var, gamma = statistics(inputs[0].numpy(), bn.weight.numpy(), rng)
        bn.running_mean.copy_(torch.from_numpy(mean))
        bn.running_var.copy_(torch.from_numpy(var))
        bn.weight.copy_(torch.from_numpy(gamma))

    hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules()
             if isinstance(m, torch.nn.BatchNorm3d)]
    cdfvd_logits(model, clip)
    for h in hooks:
        h.remove()
    return model


@pytest.mark.slow
def test_a_cdfvd_checkpoint_converts_to_every_format_and_every_twin_reproduces_it(
        clip16, tmp_path, capsys):
    from i3d_video import SAMPLE

    model = randomised_cdfvd(clip16)
    want = cdfvd_logits(model, clip16)[0]
    zip_pt, legacy_pt = str(tmp_path / "fvd.pt"), str(tmp_path / "fvd_legacy.pt")
    torch.save(model.state_dict(), zip_pt)
    torch.save(model.state_dict(), legacy_pt, _use_new_zipfile_serialization=False)
    ckpt, pt, st, legacy_st, guessed = (str(tmp_path / n) for n in (
        "a.ckpt", "b.pt", "c.safetensors", "legacy.safetensors", "guessed.safetensors"))

    def i3d_(*argv) -> tuple:
        """(stdout, stderr) of `i3d ARGV` (in this process: the CLI's own main)."""
        capsys.readouterr()
        assert call(*argv) == 0
        return capsys.readouterr()

    # the first conversion says what the file cannot: cd-fvd's numbers are mindvideo-same
    out, said = i3d_("convert", zip_pt, ckpt, "--variant", "mindvideo-same")
    assert said == "" and "cannot record" not in out
    assert "dropped 57 training-state entries: *.num_batches_tracked x57" in out
    for src, dst in ((ckpt, pt), (pt, st)):  # then no flag, ever
        assert i3d_("convert", src, dst)[1] == ""
    assert i3d_("convert", legacy_pt, legacy_st, "--variant", "mindvideo-same")[1] == ""
    for path in (ckpt, pt, st, legacy_st):
        assert read_weights(path)[1]["variant"] == MINDVIDEO_SAME

    def predict(path, framework):
        out, said = i3d_("predict", SAMPLE, "--frames", "16", "--weights", path,
                         "--framework", framework, "--json")
        assert said == ""
        return json.loads(out)["logits"]

    assert err(predict(ckpt, "mindspore"), want, "cd-fvd .pt -> .ckpt, MindSpore twin (CLI)") < TOL
    assert err(predict(pt, "torch"), want, "cd-fvd .pt -> .ckpt -> .pt, torch twin (CLI)") < TOL
    assert err(predict(st, "torch"), want, "... -> .safetensors, torch twin (CLI)") < TOL
    assert err(predict(legacy_st, "torch"), want,
               "cd-fvd legacy .pt -> .safetensors, torch twin (CLI)") < TOL

    # without the flag: piergiaj's numbers are assumed, said on stderr, and wrong for cd-fvd
    said = i3d_("convert", zip_pt, guessed)[1]
    assert notices(said) == [f"i3d: note: {zip_pt}: pytorch-i3d (BN eps 1e-3) assumed; {CDFVD_NOTICE}"]
    weights, info = read_weights(guessed)
    assert info["variant"] == PYTORCH_I3D and info["variant_source"] == "assumed"
    assert err(i3d_torch.predict(weights, clip16, info["variant"])[0], want,
               "cd-fvd, pytorch-i3d assumed (wrong), torch twin") > 100 * TOL
    out, said = i3d_("inspect", zip_pt)
    assert "pytorch-i3d (padding same, BN eps 0.001, BN scale yes), assumed" in out
    assert len(notices(said)) == 1 and CDFVD_NOTICE in said


# ------------------------------------------------------- the two mindvideo layouts (MindSpore)

MIXED = {  # as the ports spell them: name -> (in, [b0, b1a, b1b, b2a, b2b, b3b])
    "mixed_3b": (192, [64, 96, 128, 16, 32, 32]), "mixed_3c": (256, [128, 128, 192, 32, 96, 64]),
    "mixed_4b": (480, [192, 96, 208, 16, 48, 64]), "mixed_4c": (512, [160, 112, 224, 24, 64, 64]),
    "mixed_4d": (512, [128, 128, 256, 24, 64, 64]), "mixed_4e": (512, [112, 144, 288, 32, 64, 64]),
    "mixed_4f": (528, [256, 160, 320, 32, 128, 128]), "mixed_5b": (832, [256, 160, 320, 32, 128, 128]),
    "mixed_5c": (832, [384, 192, 384, 48, 128, 128]),
}


class Unit3D(nn.Cell):
    """features = [Conv3d, BatchNorm3d (eps 1e-5, gamma), ReLU]; the logits unit: a conv with
    bias. `same`: pad_mode='same' (i3d_mindspore's latest), else 'pad' with (k-1)//2 each side
    (mindvideo, i3d_mindspore's first commit)."""

    def __init__(self, cin, cout, k=1, s=1, same=False, logits=False):
        super().__init__()
        pad = {"pad_mode": "same"} if same else {"pad_mode": "pad", "padding": (k - 1) // 2}
        conv = nn.Conv3d(cin, cout, k, s, has_bias=logits, **pad)
        self.features = nn.SequentialCell([conv] if logits else [conv, nn.BatchNorm3d(cout), nn.ReLU()])

    def construct(self, x):
        return self.features(x)


class Inception(nn.Cell):
    def __init__(self, cin, w, same):
        super().__init__()
        self.b0 = Unit3D(cin, w[0], same=same)
        self.b1a = Unit3D(cin, w[1], same=same)
        self.b1b = Unit3D(w[1], w[2], 3, same=same)
        self.b2a = Unit3D(cin, w[3], same=same)
        self.b2b = Unit3D(w[3], w[4], 3, same=same)
        self.b3a = nn.MaxPool3d(3, 1, pad_mode="same")
        self.b3b = Unit3D(cin, w[5], same=same)

    def construct(self, x):
        return ops.cat((self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                        self.b3b(self.b3a(x))), 1)


class Backbone(nn.Cell):
    def __init__(self, same):
        super().__init__()
        self.conv3d_1a_7x7 = Unit3D(3, 64, 7, 2, same)
        self.maxpool3d_2a_3x3 = nn.MaxPool3d((1, 3, 3), (1, 2, 2), pad_mode="same")
        self.conv3d_2b_1x1 = Unit3D(64, 64, same=same)
        self.conv3d_2c_3x3 = Unit3D(64, 192, 3, same=same)
        self.maxpool3d_3a_3x3 = nn.MaxPool3d((1, 3, 3), (1, 2, 2), pad_mode="same")
        self.mixed_3b = Inception(*MIXED["mixed_3b"], same)
        self.mixed_3c = Inception(*MIXED["mixed_3c"], same)
        self.maxpool3d_4a_3x3 = nn.MaxPool3d(3, 2, pad_mode="same")
        self.mixed_4b = Inception(*MIXED["mixed_4b"], same)
        self.mixed_4c = Inception(*MIXED["mixed_4c"], same)
        self.mixed_4d = Inception(*MIXED["mixed_4d"], same)
        self.mixed_4e = Inception(*MIXED["mixed_4e"], same)
        self.mixed_4f = Inception(*MIXED["mixed_4f"], same)
        self.maxpool3d_5a_2x2 = nn.MaxPool3d(2, 2, pad_mode="same")
        self.mixed_5b = Inception(*MIXED["mixed_5b"], same)
        self.mixed_5c = Inception(*MIXED["mixed_5c"], same)

    def construct(self, x):
        for cell in (self.conv3d_1a_7x7, self.maxpool3d_2a_3x3, self.conv3d_2b_1x1,
                     self.conv3d_2c_3x3, self.maxpool3d_3a_3x3, self.mixed_3b, self.mixed_3c,
                     self.maxpool3d_4a_3x3, self.mixed_4b, self.mixed_4c, self.mixed_4d,
                     self.mixed_4e, self.mixed_4f, self.maxpool3d_5a_2x2, self.mixed_5b,
                     self.mixed_5c):
            x = cell(x)
        return x


class Head(nn.Cell):
    """Average pool (the ports' (2, 7, 7) stride 1 at 224; `pool` here), dropout, logits conv,
    squeeze, mean over time."""

    def __init__(self, classes, pool, same):
        super().__init__()
        self.pool = nn.AvgPool3d(pool, 1)
        self.dropout = nn.Dropout(p=0.5)
        self.logits = Unit3D(1024, classes, same=same, logits=True)

    def construct(self, x):
        return self.logits(self.dropout(self.pool(x))).squeeze(4).squeeze(3).mean(2)


class MindvideoI3D(nn.Cell):
    def __init__(self, classes, pool, same):
        super().__init__()
        self.backbone = Backbone(same)
        self.head = Head(classes, pool, same)

    def construct(self, x):
        return self.head(self.backbone(x))


def randomised_mindvideo(clip, same, seed=0):
    """A mindvideo-layout I3D of random weights and BN statistics of `clip`, in eval mode; its
    pool covers all of Mixed_5c (the twins' global head)."""
    rng = np.random.RandomState(seed)
    ms.set_seed(seed)
    five_c = (2, *[-(-n // 32) for n in clip.shape[3:]])
    net = MindvideoI3D(7, five_c, same)
    net.set_train(False)
    for p in net.get_parameters():
        low, high = {"gamma": (0.5, 1.5), "beta": (-0.2, 0.2), "bias": (-0.5, 0.5)}.get(
            p.name.rsplit(".", 1)[1], (None, None))
        if low is not None:
            p.set_data(Tensor(rng.uniform(low, high, p.shape).astype(np.float32)))

    def calibrate(bn, inputs):
        mean, var, gamma = statistics(inputs[0].asnumpy(), bn.bn2d.gamma.asnumpy(), rng)
        for p, v in ((bn.bn2d.moving_mean, mean), (bn.bn2d.moving_variance, var), (bn.bn2d.gamma, gamma)):
            p.set_data(Tensor(v.astype(np.float32)))

    hooks = [c.register_forward_pre_hook(calibrate) for _, c in net.cells_and_names()
             if isinstance(c, nn.BatchNorm3d)]
    net(Tensor(clip))
    for h in hooks:
        h.remove()
    return net


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["mindvideo", "mindvideo-same"])
def test_mindvideo_layouts_round_trip_every_format_with_the_variant_given_once(
        layout, clip112, tmp_path, capsys):
    net = randomised_mindvideo(clip112, same=layout == "mindvideo-same")
    want = net(Tensor(clip112)).asnumpy()
    src = str(tmp_path / "src.ckpt")
    ms.save_checkpoint(net, src)
    pt, ckpt, st, guessed = (str(tmp_path / n) for n in ("a.pt", "b.ckpt", "c.safetensors", "d.pt"))
    capsys.readouterr()
    assert call("convert", src, pt, "--variant", layout) == 0
    assert call("convert", pt, ckpt) == 0
    assert call("convert", ckpt, st) == 0
    assert notices(capsys.readouterr().err) == []
    read = {path: read_weights(path) for path in (pt, ckpt, st)}
    assert notices(capsys.readouterr().err) == []
    for weights, info in read.values():  # the same weights and variant, told by each file
        assert info["variant"] == arch.VARIANTS[layout] and info["variant_source"] == "recorded"
        assert all(np.array_equal(weights[u][p], read[st][0][u][p]) for u in weights for p in weights[u])
    weights, info = read[ckpt]
    assert err(i3d_ms.predict(weights, clip112, info["variant"], head="global"), want,
               f"{layout} cells -> .pt -> .ckpt, MindSpore twin") < TOL
    weights, info = read[st]
    assert err(i3d_torch.predict(weights, clip112, info["variant"], head="global"), want,
               f"{layout} cells -> .pt -> .ckpt -> .safetensors, torch twin") < TOL

    # without --variant: mindvideo (symmetric) is assumed, and said, every time
    assert call("convert", src, guessed) == 0
    for _ in range(2):
        weights, info = read_weights(guessed)
    said = notices(capsys.readouterr().err)
    assert len(said) == 3 and all(line.endswith(MINDVIDEO_NOTICE) for line in said), said
    assert info["variant"] == MINDVIDEO and info["variant_source"] == "assumed"
    e = err(i3d_torch.predict(weights, clip112, info["variant"], head="global"), want,
            f"{layout} cells, mindvideo assumed, torch twin")
    assert e < TOL if layout == "mindvideo" else e > 100 * TOL
    d = describe(guessed)
    assert d["variant_name"] == "mindvideo" and d["variant_source"] == "assumed"
    assert "symmetric" in describe(src)["variant"]["padding"] and describe(pt)["variant_source"] == "recorded"
