"""`i3d predict` and `i3d demo` as a user runs them: real processes, real files."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np

from convert.checkpoints import default_weights_path
from tests.helpers import I3D, Payload, expect_error, i3d


def predict_json(video, framework, *extra):
    r = i3d("predict", video, "--framework", framework, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_predict_real_mp4_same_top5_in_both_frameworks(real_mp4):
    # bikes.mp4 is 640x272: shorter side to 256 (602x256), then the 224 centre crop.
    t = predict_json(real_mp4, "torch", "--frames", "32")
    m = predict_json(real_mp4, "mindspore", "--frames", "32")
    assert t["frames"] == m["frames"] == 32 and t["video"] == real_mp4
    assert t["framework"] == "torch" and m["framework"] == "mindspore"
    assert [x["label"] for x in t["top"]] == [x["label"] for x in m["top"]]
    assert len(t["logits"]) == 400
    assert np.abs(np.array(t["logits"]) - np.array(m["logits"])).max() < 1e-4
    probs = np.exp(t["logits"]) / np.exp(t["logits"]).sum()
    assert abs(t["top"][0]["prob"] - probs.max()) < 1e-6


def test_predict_human_output_names_the_class(tmp_path):
    from i3d_video import SAMPLE

    r = i3d("predict", SAMPLE, "--top", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert "79 frames" in lines[0] and len(lines) == 4
    assert lines[1].endswith("playing cricket")


def test_demo_shows_the_twins_agree():
    r = i3d("demo", "--frames", "16")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "agree within 0.0001" in r.stdout


def test_i3d_threads_caps_both_twins_and_a_bad_value_is_one_line(tmp_path):
    """I3D_THREADS=1 (what `make test` sets): importing the twins gives torch one intra-op
    thread and configures MindSpore's CPU kernel threads; unset, MindSpore's are left alone.
    A value that is not a thread count is one line naming the variable and exit 2, before
    any work."""
    probe = ("import i3d_ms, i3d_torch, torch\n"
             "from mindspore._c_expression import RuntimeConf\n"
             "print(torch.get_num_threads(), RuntimeConf.get_instance()"
             ".is_op_threads_num_configured())")
    seen = {}
    for value in ("1", ""):
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           env={**os.environ, "I3D_THREADS": value, "GLOG_v": "3"})
        assert r.returncode == 0, r.stderr[-2000:]
        seen[value] = r.stdout.split()[-2:]
    assert seen["1"] == ["1", "True"] and seen[""][1] == "False", seen
    for value in ("x", "0", "-2", "1e9", "2.5"):
        r = subprocess.run([*I3D, "predict", "nope.mp4"],
                           capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, "I3D_THREADS": value})
        expect_error(r, f"I3D_THREADS={value}", "not a number of threads")
    assert not any(tmp_path.iterdir())


def test_missing_video(tmp_path):
    path = str(tmp_path / "nope.mp4")
    expect_error(i3d("predict", path), path, "no such file")


def test_file_that_is_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are not frames\n" * 100)
    expect_error(i3d("predict", str(path)), str(path), "not a readable video")


def test_video_with_too_few_frames(tmp_path):
    from PIL import Image

    path = tmp_path / "short.gif"
    frames = [Image.fromarray(np.full((240, 320, 3), 40 * i, np.uint8)) for i in range(5)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40)
    expect_error(i3d("predict", str(path)), str(path), "5 frames", "at least 9")


def test_unreadable_weights(tmp_path, real_mp4):
    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(os.urandom(4096))
    expect_error(i3d("predict", real_mp4, "--weights", str(garbage)), str(garbage))
    truncated = tmp_path / "truncated.ckpt"
    with open(default_weights_path(), "rb") as f:
        truncated.write_bytes(f.read(1_000_000))
    expect_error(i3d("predict", real_mp4, "--weights", str(truncated)), str(truncated), "pickle")


def test_pickle_payload_is_refused_and_never_runs(tmp_path, real_mp4):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"params": Payload()}, protocol=4))
    err = expect_error(i3d("predict", real_mp4, "--weights", str(evil), cwd=tmp_path), str(evil))
    assert "refused" in err and "system" in err
    assert not (tmp_path / "PWNED").exists()
