"""Conversion in every direction with the real frameworks on both ends of every file."""
import json
import os

import numpy as np
import pytest
import torch

import i3d_torch
from convert import names
from convert.checkpoints import read_weights, torch_sgd_state, write_weights
from convert.formats import METADATA_KEY, mindspore_ckpt
from convert.formats.dtypes import BFLOAT16, float32
from convert.weights import to_scheme
from tests.helpers import ok


def same(a, b):
    assert a.keys() == b.keys()
    for unit in a:
        assert a[unit].keys() == b[unit].keys()
        for p in a[unit]:
            x, y = a[unit][p], b[unit][p]
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), (unit, p)


def ms_strict_load(path, **kw):
    """mindspore.load_checkpoint + load_param_into_net(strict_load=True) into the MindSpore twin."""
    import mindspore as ms

    import i3d_ms

    i3d_ms.set_mode("pynative")
    net = i3d_ms.InceptionI3d(**kw)
    net.set_train(False)
    not_loaded, left_over = ms.load_param_into_net(net, ms.load_checkpoint(path), strict_load=True)
    assert not_loaded == [] and left_over == [METADATA_KEY]  # our metadata: a string entry
    return net


def test_round_trip_is_bit_exact_and_every_file_loads_strictly(weights, cricket_clip, tmp_path):
    import mindspore as ms
    from safetensors.torch import load_file

    ckpt, pt, st, ckpt2 = (str(tmp_path / n) for n in ("a.ckpt", "b.pt", "c.safetensors", "d.ckpt"))
    ok("convert", "default", ckpt)
    ok("convert", ckpt, pt)
    ok("convert", pt, st)
    ok("convert", st, ckpt2)
    for path in (ckpt, pt, st, ckpt2):
        same(weights, read_weights(path)[0])
    clip = cricket_clip[:, :, :16]
    net = ms_strict_load(ckpt2)
    ms_logits = net(ms.Tensor(clip)).asnumpy()
    for sd in (torch.load(pt, weights_only=True), load_file(st)):
        model = i3d_torch.InceptionI3d().eval()
        model.load_state_dict(sd, strict=True)
        with torch.inference_mode():
            t_logits = model(torch.from_numpy(clip)).numpy()
        assert np.abs(t_logits - ms_logits).max() < 1e-4
    # the same tensors in the same order; the metadata differs only in the source's name
    (ta, sa), (tb, sb) = (mindspore_ckpt.read_all(p) for p in (ckpt, ckpt2))
    assert list(ta) == list(tb) and all(ta[k].tobytes() == tb[k].tobytes() for k in ta)
    ma, mb = (json.loads(m[METADATA_KEY]) for m in (sa, sb))
    assert ma.pop("source") == "i3d-kinetics-400.ckpt" and mb.pop("source") == "c.safetensors"
    assert ma == mb


def test_we_read_what_the_real_frameworks_write(tmp_path):
    import mindspore as ms
    from safetensors.numpy import save_file

    import i3d_ms

    i3d_ms.set_mode("pynative")
    net = i3d_ms.InceptionI3d(num_classes=7)  # random init: every tensor differs
    ms.save_checkpoint(net, str(tmp_path / "ms.ckpt"))
    got, info = read_weights(str(tmp_path / "ms.ckpt"))
    assert info["scheme"] == "mindspore" and info["format"] == "mindspore"
    for p in net.get_parameters():
        unit, param = names.keys("mindspore", 7)[p.name]
        assert np.array_equal(got[unit.name][param], p.asnumpy())
    model = i3d_torch.InceptionI3d(num_classes=7)
    torch.save(model.state_dict(), tmp_path / "t.pt")
    got, info = read_weights(str(tmp_path / "t.pt"))
    assert info["scheme"] == "torch"
    same(got, read_weights(str(tmp_path / "t.pt"))[0])
    flat = {k: v.numpy() for k, v in model.state_dict().items()}
    save_file(flat, str(tmp_path / "t.safetensors"))
    same(got, read_weights(str(tmp_path / "t.safetensors"))[0])


def test_frameworks_read_what_we_write_in_every_dtype(weights, tmp_path):
    import mindspore as ms
    from safetensors import safe_open

    model = i3d_torch.build(weights)
    for dtype, ms_dtype in ((torch.float16, ms.float16), (torch.bfloat16, ms.bfloat16)):
        src = tmp_path / f"{dtype}.pt"
        torch.save({k: v.to(dtype) for k, v in model.state_dict().items()}, src)
        ckpt, st = str(tmp_path / f"{dtype}.ckpt"), str(tmp_path / f"{dtype}.safetensors")
        out = ok("convert", str(src), ckpt)
        assert ("bfloat16" if dtype == torch.bfloat16 else "float16") in out
        ok("convert", ckpt, st)
        loaded = ms.load_checkpoint(ckpt)
        assert json.loads(loaded.pop(METADATA_KEY))["scheme"] == "mindspore"
        assert all(p.dtype == ms_dtype for p in loaded.values())
        ref = model.state_dict()
        with safe_open(st, "pt") as f:
            assert f.metadata()["scheme"] == "torch" and f.metadata()["num_classes"] == "400"
            for k in f.keys():
                t = f.get_tensor(k)
                assert t.dtype == dtype and torch.equal(t, ref[k].to(dtype))
        key = "Mixed_4c.b1b.conv.weight"
        assert np.array_equal(float32(read_weights(st)[0]["Mixed_4c/Branch_1/Conv3d_0b_3x3"]["w"]),
                              ref[key].to(dtype).float().numpy())
        if dtype == torch.bfloat16:
            assert read_weights(ckpt)[0]["Conv3d_1a_7x7"]["w"].dtype == BFLOAT16


def test_training_checkpoint_drops_state_and_carries_momentum(tmp_path):
    import mindspore as ms
    from mindspore import Tensor, nn

    import i3d_ms

    i3d_ms.set_mode("pynative")
    net = i3d_ms.InceptionI3d(num_classes=5, head="global")
    opt = nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), opt)
    step.set_train()
    rng = np.random.RandomState(0)
    step(Tensor(rng.randn(2, 3, 8, 32, 32).astype(np.float32)), Tensor(np.array([1, 3], np.int32)))
    src = str(tmp_path / "train.ckpt")
    ms.save_checkpoint(step, src)
    pt, opt_pt = str(tmp_path / "w.pt"), str(tmp_path / "sgd.pt")
    out = ok("convert", src, pt, "--optimizer-out", opt_pt)
    assert "dropped" in out and "moments" in out
    model = i3d_torch.InceptionI3d(num_classes=5, head="global")
    model.load_state_dict(torch.load(pt, weights_only=True), strict=True)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sgd.load_state_dict(torch.load(opt_pt, weights_only=True))
    moments = {p.name: m.asnumpy() for p, m in zip(opt.parameters, opt.moments)}
    tnames = [k for k, (u, p) in names.keys("torch", 5).items() if p not in ("mean", "var")]
    for name, param in zip(tnames, model.parameters()):
        buf = sgd.state[param]["momentum_buffer"].numpy()
        assert np.array_equal(buf, moments[name.replace(".bn.bias", ".bn.beta")])
    assert dict(model.named_parameters())["Mixed_3b.b0.conv.weight"].shape == \
        tuple(moments["Mixed_3b.b0.conv.weight"].shape)


def test_pytorch_i3d_and_mindvideo_checkpoints_import(weights, tmp_path):
    import mindspore as ms

    # pytorch-i3d: BN with weight (gamma) and num_batches_tracked, logits under 'logits.'
    flat = to_scheme({u: {**p, **({"gamma": np.ones_like(p["beta"])} if "beta" in p else {})}
                      for u, p in weights.items()}, "pytorch_i3d")
    sd = {k: torch.from_numpy(v) for k, v in flat.items()}
    sd.update({k.replace("running_mean", "num_batches_tracked"): torch.tensor(5)
               for k in flat if k.endswith("running_mean")})
    torch.save(sd, tmp_path / "piergiaj.pt")
    got, info = read_weights(str(tmp_path / "piergiaj.pt"))
    assert info["scheme"] == "pytorch_i3d" and info["variant"].bn_scale
    assert np.array_equal(got["Mixed_5b/Branch_2/Conv3d_0b_3x3"]["w"],
                          weights["Mixed_5b/Branch_2/Conv3d_0b_3x3"]["w"])
    # mindvideo: written by MindSpore itself from cells laid out as the port lays them out
    cell = _mindvideo_cells(num_classes=3)
    src = str(tmp_path / "mindvideo.ckpt")
    ms.save_checkpoint(cell, src)
    got, info = read_weights(src)
    assert info["scheme"] == "mindvideo" and info["variant"].padding == "symmetric"
    for name in ("mv.safetensors", "mv.pt", "mv.ckpt"):  # every format records the variant
        ok("convert", src, str(tmp_path / name))
        _, info2 = read_weights(str(tmp_path / name))
        assert info2["variant"] == info["variant"] and info2["variant_source"] == "assumed"


def _mindvideo_cells(num_classes):
    """MindSpore cells named as mindvideo's I3D names them (backbone.mixed_3b.b1b.features.0,
    features.1 a BatchNorm3d, head.logits.features.0 with bias)."""
    from mindspore import nn

    from convert.architecture import units

    tree = {}  # path parts -> leaf unit; cells are made leaves first so names get full prefixes
    for u in units(num_classes):
        path = names.key("mindvideo", u, "w").rsplit(".features.0.weight", 1)[0].split(".")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = u

    def make(node):
        cell = nn.Cell()
        if isinstance(node, dict):
            for name, child in node.items():
                setattr(cell, name, make(child))
            return cell
        u = node
        layers = [nn.Conv3d(u.cin, u.cout, u.kernel, u.stride, has_bias=u.logits)]
        if not u.logits:
            layers.append(nn.BatchNorm3d(u.cout))
        cell.features = nn.SequentialCell(layers)
        return cell

    return make(tree)

def test_sgd_state_rejects_unknown_buffers(weights):
    from convert.errors import I3DError

    with pytest.raises(I3DError, match="matches no parameter"):
        torch_sgd_state({"nope.weight": np.zeros(3)}, "mindspore", weights)


def test_write_refuses_unknown_scheme(weights, tmp_path):
    from convert.errors import I3DError

    with pytest.raises(I3DError, match="unknown naming scheme"):
        write_weights(weights, str(tmp_path / "x.ckpt"), "mindspore", scheme="caffe")
    assert not os.listdir(tmp_path)


def _first_release_metadata(variant_dict: dict, name: str) -> dict:
    """What the first release (commit ed099f1, checkpoints.metadata) wrote into safetensors:
    the variant as a JSON object string and a variant_name ('custom' for unnamed numerics)."""
    return {"format": "i3d-parity", "scheme": "torch", "variant": json.dumps(variant_dict),
            "variant_name": name, "num_classes": "400", "source": "i3d-kinetics-400.ckpt"}


def test_files_of_the_first_release_are_read(weights, tmp_path):
    from safetensors.numpy import save_file

    from convert.architecture import DEEPMIND, MINDVIDEO, PYTORCH_I3D
    from convert.checkpoints import with_bn_scale

    for variant, name in ((DEEPMIND, "deepmind"), (MINDVIDEO, "mindvideo"),
                          (PYTORCH_I3D, "custom")):  # its table named two variants only
        w = with_bn_scale(weights) if variant.bn_scale else weights
        path = str(tmp_path / f"{variant.name}.safetensors")
        save_file(to_scheme(w, "torch"), path,
                  metadata=_first_release_metadata(variant.as_dict(), name))
        got, info = read_weights(path)
        assert info["variant"] == variant and info["variant_source"] == "recorded", name
        same(w, got)
        # and converted on, the variant is recorded in today's form
        ckpt = str(tmp_path / f"{variant.name}.ckpt")
        ok("convert", path, ckpt)
        assert read_weights(ckpt)[1]["variant"] == variant
