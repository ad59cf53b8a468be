"""Data: readers, clip sampling, transforms, sharding, bad videos, and the motion dataset."""
import os

import numpy as np
import pytest

import i3d_ms  # noqa: F401  (MindSpore before decord)
from convert.errors import I3DError
from i3d_ms.make_dataset import DIRECTIONS, make_dataset, render
from i3d_video.clips import (EvalCrops, TrainCrop, eval_indices, three_crops, train_clip,
                             train_indices, uniform_indices)
from i3d_video.decode import open_video
from recipe.samples import TrainSource
from recipe.sources import Video, check_videos, class_names, read_kinetics, read_list
from tests.helpers import call as i3d

DATA = {"frames": 4, "stride": 2, "resize": 36, "crop": 32, "scales": [1.0, 0.875], "flip": True,
        "clips": 3, "workers": 2}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small") / "d"
    make_dataset(str(root), classes=3, videos_per_class=4, val_per_class=1, frames=12)
    return root


def test_make_dataset_kinetics_layout_real_mp4s(small):
    from i3d_video import read_video

    assert class_names(str(small)) == sorted(["moving right", "moving left", "moving down"])
    train = read_kinetics(str(small), "train")
    assert len(train) == 12 and sorted({v.label for v in train}) == [0, 1, 2]
    name = os.path.basename(train[0].path)
    assert name.endswith("_000000_000012.mp4") and os.path.dirname(train[0].path).endswith("train")
    with open(train[0].path, "rb") as f:
        assert f.read(12)[4:8] == b"ftyp"  # an mp4 container
    video = read_video(train[0].path)
    assert video.shape == (12, 48, 64, 3) and video.dtype == np.uint8
    with pytest.raises(I3DError, match="not empty"):
        make_dataset(str(small))


def test_motion_is_the_only_cue():
    """Each frame is the previous one shifted along the class direction; frame statistics carry
    nothing about the class (same texture generator whatever the direction)."""
    for name, (dy, dx) in DIRECTIONS.items():
        v = render((dy, dx), np.random.default_rng(1), frames=5)
        speed = [s for s in range(2, 5) if np.array_equal(np.roll(v[0], (dy * s, dx * s), (0, 1)), v[1])]
        assert len(speed) == 1, name
        for t in range(1, 5):
            assert np.array_equal(np.roll(v[t - 1], (dy * speed[0], dx * speed[0]), (0, 1)), v[t])
    firsts = {n: render(d, np.random.default_rng(7), frames=1)[0] for n, d in DIRECTIONS.items()}
    assert all(np.array_equal(f, firsts["moving up"]) for f in firsts.values())


def test_kinetics_test_split_without_labels_and_list_files(small, tmp_path):
    (small / "kinetics-400_test.csv").write_text("youtube_id,time_start,time_end,split\nabc,3,13,test\n")
    (test,) = read_kinetics(str(small), "test")
    assert test == Video(str(small / "test" / "abc_000003_000013.mp4"), -1)
    (tmp_path / "l.txt").write_text("# comment\nsub dir/a b.mp4 3\n\n/abs/c.mp4 0\n")
    assert read_list(str(tmp_path / "l.txt")) == [Video(str(tmp_path / "sub dir/a b.mp4"), 3),
                                                  Video("/abs/c.mp4", 0)]
    (tmp_path / "bad.txt").write_text("only_a_path.mp4\n")
    with pytest.raises(I3DError, match="bad.txt:1"):
        read_list(str(tmp_path / "bad.txt"))


def test_clip_sampling():
    rng = np.random.default_rng(0)
    idx = train_indices(100, 8, 2, rng)
    assert len(idx) == 8 and (np.diff(idx) == 2).all() and idx[-1] < 100
    assert train_indices(5, 8, 1, rng).tolist() in [[(s + i) % 5 for i in range(8)] for s in range(5)]
    assert [c.tolist() for c in uniform_indices(20, 4, 2, 3)] == [[0, 2, 4, 6], [6, 8, 10, 12],
                                                                 [13, 15, 17, 19]]
    assert eval_indices(20, "centre", 4, 2, 3, 300)[0].tolist() == [6, 8, 10, 12]
    assert len(eval_indices(20, "multi", 4, 2, 3, 300)) == 3
    assert eval_indices(250, "whole", 4, 2, 3, 300)[0].tolist() == list(range(250))
    assert eval_indices(250, "whole", 4, 2, 3, 64)[0].tolist() == list(range(64))
    assert eval_indices(4, "whole", 4, 2, 3, 300)[0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0]


@pytest.mark.parametrize("fast", [False, True])
def test_decoding_by_index_equals_the_whole_video(real_mp4, fast):
    """Only the frames asked for are decoded (decord by index, or PyAV skipping what no frame
    refers to), and they are the very frames of a full decode: real footage, random clips,
    looping ones, out of order."""
    from i3d_video import SAMPLE, read_video

    rng = np.random.default_rng(0)
    for path in (real_mp4, SAMPLE):
        full = read_video(path)
        with open_video(path, fast) as video:
            assert len(video) == len(full)
            assert (video._pts is not None) == (fast and path == real_mp4)  # GIFs: Pillow
            for _ in range(4):
                idx = (int(rng.integers(len(full))) + np.arange(40) * int(rng.integers(1, 3))) % len(full)
                assert np.array_equal(video.frames(idx), full[idx])
            idx = rng.permutation(len(full))[:7]
            assert np.array_equal(video.frames(idx), full[idx])
        with pytest.raises(I3DError, match="asked of a video"):
            open_video(path, fast).frames([len(full)])


def test_training_pixels_are_one_resampling_of_the_resized_crop(real_mp4):
    """The box resample equals the two-step recipe (resize the frame, crop, resize the crop)
    up to rounding and the second resampling; a scale-1 crop of frames already at the resize
    is a plain crop; the flip is drawn and left to the device."""
    from PIL import Image

    from i3d_video.protocol import resize_shorter

    with open_video(real_mp4) as video:
        frames = video.frames(range(8))  # 272 x 640
    for seed in range(6):
        pixels = TrainCrop(136, 96, [0.75], True, np.random.default_rng(seed))
        out = pixels(list(frames))
        assert out.shape == (8, 96, 96, 3) and out.dtype == np.uint8
        small = resize_shorter(frames, 136)  # 136 x 320
        sx = 640 / 320
        left, top = round(pixels.box[0] / sx), round(pixels.box[1] / sx)
        side = round(96 * 0.75)
        two_step = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(
            f[top:top + side, left:left + side])).resize((96, 96), Image.BILINEAR)) for f in small])
        assert np.abs(out.astype(int) - two_step).mean() < 4
    plain = TrainCrop(272, 96, [1.0], True, np.random.default_rng(1))
    out = plain(list(frames))
    top, left = plain.box
    assert np.array_equal(out, frames[:, top:top + 96, left:left + 96])
    mirrors = [TrainCrop(272, 96, [1.0], True, np.random.default_rng(s)) for s in range(20)]
    for m in mirrors:
        m(frames[:1])
    assert {m.mirror for m in mirrors} == {True, False}
    never = [TrainCrop(272, 96, [1.0], False, np.random.default_rng(s)) for s in range(20)]
    for m in never:
        m(frames[:1])
    assert not any(m.mirror for m in never)


def test_clips_and_crops(small):
    rng = np.random.default_rng(0)
    with open_video(read_kinetics(str(small), "train")[0].path, fast=True) as video:
        clip, mirror = train_clip(video, 4, 2, 36, 32, [1.0, 0.875], True, rng)
        assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8 and mirror in (True, False)
        eval_clip = video.frames([0, 2, 4], EvalCrops(36, 32, 3))
        assert eval_clip.shape == (3, 3, 32, 32, 3)
    video = rng.integers(0, 256, (10, 48, 64, 3), dtype=np.uint8)
    left, centre, right = three_crops(video, 48)
    assert np.array_equal(left, video[:, :, :48]) and np.array_equal(right, video[:, :, 16:])
    assert np.array_equal(centre, video[:, :, 8:56])


def test_sharding_is_disjoint_and_order_is_a_function_of_the_step(small):
    videos = read_kinetics(str(small), "train")
    ranks = [TrainSource(videos, DATA, 2, 6, rank=r, world=2, seed=3) for r in range(2)]
    for epoch in range(3):
        a, b = ranks[0].shard(epoch), ranks[1].shard(epoch)
        assert len(a) == len(b) == 6 and not set(a) & set(b)
    full = TrainSource(videos, DATA, 2, 6, seed=3)
    resumed = TrainSource(videos, DATA, 2, 6, start=4, seed=3)
    for k in range(len(resumed)):
        x, y, flip = full[k + 8]
        x2, y2, flip2 = resumed[k]
        assert y == y2 and flip == flip2 and np.array_equal(x, x2)
    # each rank crops with its own draws: same video and position, other pixels
    a, b = (TrainSource(videos[:1] * 4, DATA, 2, 2, rank=r, world=2, seed=3) for r in range(2))
    assert not all(np.array_equal(a[k][0], b[k][0]) for k in range(4))


def test_bad_videos_are_skipped_counted_and_checked(small, tmp_path, capsys):
    good = read_kinetics(str(small), "train")[:3]
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video at all" * 100)
    lines = [f"{v.path} {v.label}" for v in good] + ["corrupt.mp4 0", "missing.mp4 1"]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    videos = read_list(str(tmp_path / "list.txt"))
    assert [os.path.basename(p) for p, _ in check_videos(videos)] == ["corrupt.mp4", "missing.mp4"]
    assert i3d("check-videos", tmp_path / "list.txt") == 1
    out = capsys.readouterr().out
    assert "missing.mp4: no such file" in out and "3 of 5 videos readable, 2 bad" in out
    assert i3d("check-videos", small, "--split", "val") == 0

    source = TrainSource(videos, DATA, 5, 2)  # every video in each batch: bad ones replaced
    labels = [int(source[k][1]) for k in range(10)]
    assert len(source.bad) == 2 and set(labels) <= {v.label for v in good}


def test_csv_with_a_byte_order_mark_keeps_its_labels(small, tmp_path):
    """A UTF-8 BOM (as spreadsheet programs write it) is no part of the first column's name."""
    for split in ("train", "val"):
        text = (small / f"kinetics-400_{split}.csv").read_text()
        (tmp_path / f"kinetics-400_{split}.csv").write_text("\ufeff" + text, encoding="utf-8")
    assert class_names(str(tmp_path)) == class_names(str(small))
    for split in ("train", "val"):
        want = [(os.path.basename(v.path), v.label) for v in read_kinetics(str(small), split)]
        got = [(os.path.basename(v.path), v.label) for v in read_kinetics(str(tmp_path), split)]
        assert got == want and min(label for _, label in got) == 0
