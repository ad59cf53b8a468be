"""Video for both twins: decoding, DeepMind's evaluation protocol and the training clips'
sampling and augmentation. numpy in, numpy out; decord and Pillow are imported on first use."""
from .decode import read_video
from .protocol import CROP, RESIZE, SAMPLE, deepmind_clip, model_clip

__all__ = ["CROP", "RESIZE", "SAMPLE", "deepmind_clip", "model_clip", "read_video"]
