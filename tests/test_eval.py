"""Evaluation: metrics against hand-computed cases, and the default weights on a real clip."""
import csv

import numpy as np
import pytest

from recipe.metrics import mean_class_accuracy, metrics, top_k_accuracy, video_scores

SCORES = np.array([[3.0, 1.0, 0.0],   # label 0: top-1 right
                   [0.0, 2.0, 1.0],   # label 1: top-1 right
                   [1.0, 0.0, 2.0],   # label 1: top-1 wrong (2), top-2 wrong (2, 0)
                   [0.0, 1.0, 3.0]])  # label 2: top-1 right
LABELS = np.array([0, 1, 1, 2])


def test_top_k_and_mean_class_by_hand():
    assert top_k_accuracy(SCORES, LABELS, 1) == 0.75
    assert top_k_accuracy(SCORES, LABELS, 2) == 0.75
    assert top_k_accuracy(SCORES, LABELS, 3) == 1.0
    # per class: 0 -> 1/1, 1 -> 1/2, 2 -> 1/1
    assert mean_class_accuracy(SCORES, LABELS) == pytest.approx((1 + 0.5 + 1) / 3)


def test_video_level_averages_clip_softmax():
    # video 7: clips say class 0 strongly (e^2 : 1) and class 1 weakly (1 : e)
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    ids, scores = video_scores(logits, np.array([7, 7, 3]))
    a, b = np.e ** 2 / (np.e ** 2 + 1), 1 / (1 + np.e)
    assert ids.tolist() == [7, 3]
    np.testing.assert_allclose(scores[0], [(a + b) / 2, 1 - (a + b) / 2], rtol=1e-6)
    m = metrics(logits, np.array([0, 0, 0]), np.array([7, 7, 3]))
    assert m["clips"] == 3 and m["videos"] == 2
    assert m["clip_top1"] == pytest.approx(1 / 3)   # only clip 0 says class 0
    assert m["video_top1"] == 0.5                    # video 7 right (0.575 > 0.425), video 3 wrong
    assert m["video_top5"] == 1.0                    # two classes: top-k caps at 2


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["mindspore", "torch"])
def test_default_weights_on_cricket_clip(tmp_path, framework):
    """The whole eval path (list file, samples, network, CSV) on DeepMind's sample clip, with
    either twin scoring."""
    from convert.labels import labels
    from i3d_cli.training import _backend
    from i3d_video import SAMPLE
    from recipe.config import load_config
    from recipe.evaluation import evaluate

    names = labels()
    cricket = names.index("playing cricket")
    (tmp_path / "val.txt").write_text(f"{SAMPLE} {cricket}\n{tmp_path / 'gone.mp4'} 0\n")
    cfg = load_config(None, [f"data.val={tmp_path / 'val.txt'}", "data.frames=64",
                             "data.resize=224", "data.crop=224", "data.workers=1",
                             "model.num_classes=400", "model.dropout_keep_prob=1.0",
                             "train.mode=pynative"])
    out = tmp_path / "pred.csv"
    m = evaluate(cfg, "default", _backend(framework), "centre", str(out))
    assert m["video_top1"] == 1.0 and m["clip_top1"] == 1.0 and m["videos"] == 1
    assert list(m["skipped"]) == [str(tmp_path / "gone.mp4")]   # missing: skipped, reported
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 1 and rows[0]["prediction"] == "playing cricket"
    assert rows[0]["label"] == "playing cricket" and float(rows[0]["probability"]) > 0.5


def test_device_scaling_of_uint8_clips_is_deepminds_bit_for_bit(real_mp4):
    """The evaluator ships uint8 clips and scales them on the device: the very tensor of the
    float32 pipeline (the DeepMind protocol `i3d predict` feeds), in both modes."""
    import mindspore

    import i3d_ms
    from recipe.samples import EvalSource
    from recipe.sources import Video
    from i3d_ms.network import to_input

    data = {"frames": 16, "stride": 1, "resize": 256, "crop": 224, "clips": 2}
    for protocol in ("centre", "multi"):
        floats = EvalSource([Video(real_mp4, 0)], data, protocol)
        raw = EvalSource([Video(real_mp4, 0)], data, protocol, uint8=True)
        for mode in ("pynative", "graph"):
            i3d_ms.set_mode(mode)
            scale = mindspore.jit(to_input) if mode == "graph" else to_input
            for r in range(len(raw)):
                clips = raw[r][0]
                assert clips.dtype == np.uint8 and clips.shape[-1] == 3
                assert np.array_equal(scale(mindspore.Tensor(clips)).asnumpy(), floats[r][0])
    i3d_ms.set_mode("pynative")


@pytest.mark.parametrize("endpoint,words", [("Logits", ["400 classes", "head 4"]),
                                            ("Conv3d_2c_3x3", ["no classifier", "4-class"])])
def test_eval_refuses_weights_without_this_configs_classifier(tmp_path, capsys, endpoint, words):
    """`eval --checkpoint default` with a 4-class config: DeepMind's 400-class head does not
    fit a 4-class one, and a probe head is not in the file at all; never a random head."""
    from i3d_video import SAMPLE
    from tests.helpers import call

    (tmp_path / "val.txt").write_text(f"{SAMPLE} 0\n{SAMPLE} 3\n")
    code = call("eval", "--config", "config/cpu_smoke.yaml", f"data.val={tmp_path / 'val.txt'}",
                "data.root=null", f"model.final_endpoint={endpoint}", "model.head=global",
                "train.mode=pynative", "--checkpoint", "default")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert all(w in err for w in ["default", *words]), err
