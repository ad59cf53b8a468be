"""The shared table, the padding rule and the name map, against DeepMind's published facts."""
import numpy as np
import pytest

from convert import architecture as arch
from convert import names
from convert.checkpoints import default_weights_path
from convert.formats.jax_pickle import read_tree, flatten
from convert.weights import from_scheme, to_scheme


def test_same_padding_matches_tf_rule():
    # DESIGN: at 224 the 7x7x7/2 stem pads (2, 3) spatially; in time (2, 3) for even T, (3, 3) odd.
    assert arch.same_padding(224, 7, 2) == (2, 3)
    assert arch.same_padding(64, 7, 2) == (2, 3)
    assert arch.same_padding(79, 7, 2) == (3, 3)
    assert arch.same_padding(56, 3, 1) == (1, 1)
    assert arch.same_padding(7, 2, 2) == (0, 1)  # 5a pool on an odd map: all padding at the end
    assert arch.same_padding(8, 2, 2) == (0, 0)
    for n in range(1, 40):
        for k in (1, 2, 3, 7):
            for s in (1, 2):
                front, back = arch.same_padding(n, k, s)
                out = -(-n // s)
                assert (n + front + back - k) // s + 1 == out and back - front in (0, 1)


def test_symmetric_variant_pads_half_kernel():
    assert arch.conv_padding(arch.MINDVIDEO, (64, 224, 224), (7, 7, 7), (2, 2, 2)) == ((3, 3),) * 3
    assert arch.conv_padding(arch.DEEPMIND, (64, 224, 224), (7, 7, 7), (2, 2, 2)) == ((2, 3),) * 3


def test_widths_and_units():
    mixed = [layer for layer in arch.LAYERS if isinstance(layer, arch.Mixed)]
    assert [m.name for m in mixed] == ["Mixed_3b", "Mixed_3c", "Mixed_4b", "Mixed_4c", "Mixed_4d",
                                       "Mixed_4e", "Mixed_4f", "Mixed_5b", "Mixed_5c"]
    for prev, nxt in zip(mixed, mixed[1:]):
        assert prev.cout == nxt.cin
    assert mixed[-1].cout == arch.FEATURES == 1024
    assert len(arch.units()) == 3 + 9 * 6 + 1
    assert arch.units(10)[-1].cout == 10


def test_pooled_time_length_and_min_frames():
    # DESIGN: with 224 input the pooled time length is ceil(T/8) - 1 (64 -> 7, 79 -> 9).
    for t in (9, 16, 17, 64, 79):
        assert arch.output_size(arch.DEEPMIND, t, 0) - 1 == -(-t // 8) - 1
    assert arch.output_size(arch.DEEPMIND, 224, 1) == 7
    assert arch.min_frames() == 9 and arch.min_frames(head="global") == 1


def test_name_map_covers_every_scheme_uniquely():
    for scheme in names.SCHEMES:
        assert len(names.keys(scheme, bn_scale=True)) == 57 * 5 + 2  # dict: keys are unique
        assert len(names.keys(scheme, bn_scale=False)) == 57 * 4 + 2
    assert names.key("tf", arch.Mixed("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)).units[4], "w") \
        == "RGB/inception_i3d/Mixed_5b/Branch_2/Conv3d_0a_3x3/conv_3d/w"
    mixed_3b = arch.LAYERS[5].units
    assert names.key("tf", mixed_3b[2], "beta") == \
        "RGB/inception_i3d/Mixed_3b/Branch_1/Conv3d_0b_3x3/batch_norm/beta"
    assert names.key("pytorch_i3d", mixed_3b[2], "w") == "Mixed_3b.b1b.conv3d.weight"
    assert names.key("mindvideo", mixed_3b[2], "mean") == \
        "backbone.mixed_3b.b1b.features.1.bn2d.moving_mean"
    with pytest.raises(ValueError, match="unknown naming scheme"):
        names.key("caffe", mixed_3b[0], "w")


def test_jax_scheme_is_exactly_the_released_pickle():
    tree = read_tree(default_weights_path())
    flat = {**flatten(tree["params"]), **flatten(tree["batch_stats"])}
    assert set(flat) == set(names.keys("jax"))
    weights = from_scheme(flat, "jax")
    back = to_scheme(weights, "jax")
    for k, a in flat.items():
        assert back[k].shape == a.shape and np.array_equal(back[k], a)
    # DHWIO -> OIDHW is transpose(4, 3, 0, 1, 2)
    stem = flat["Conv3d_1a_7x7.Conv_0.kernel"]
    assert np.array_equal(weights["Conv3d_1a_7x7"]["w"], stem.transpose(4, 3, 0, 1, 2))


@pytest.mark.parametrize("scheme", sorted(names.SCHEMES))
def test_every_scheme_round_trips_the_default_weights(weights, scheme):
    back = from_scheme(to_scheme(weights, scheme), scheme)
    assert back.keys() == weights.keys()
    for unit, params in weights.items():
        for p, a in params.items():
            assert np.array_equal(back[unit][p], a)
