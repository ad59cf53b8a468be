"""Input-pipeline parity: the MindSpore evaluation pipeline (GeneratorDataset, centre protocol)
and the torch-side DeepMind preprocessing give the same tensor for the same real video."""
import numpy as np


def test_mindspore_pipeline_equals_torch_preprocessing(real_mp4):
    from i3d_ms.pipeline import eval_dataset  # MindSpore before decord
    from recipe.samples import EvalSource
    from recipe.sources import Video
    from i3d_video import deepmind_clip, read_video

    n = len(read_video(real_mp4))  # the centre clip of all frames is the whole video
    data = {"frames": n, "stride": 1, "resize": 256, "crop": 224, "clips": 1}
    source = EvalSource([Video(real_mp4, 3)], data, "centre")
    (clips, label, index, valid), = eval_dataset(source, workers=1).create_tuple_iterator(
        output_numpy=True)
    torch_side = deepmind_clip(real_mp4)  # (1, 3, T, 224, 224), what `i3d predict` feeds torch
    assert valid[0] == 1 and label[0] == 3 and clips.shape == (1, 1, 3, n, 224, 224)
    assert clips.dtype == torch_side.dtype == np.float32
    assert np.array_equal(clips[0], torch_side)
