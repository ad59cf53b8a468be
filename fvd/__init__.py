"""The Fréchet Video Distance and I3D features, exact to TensorFlow's reference, in both twins.

Inside a training loop (numpy in; torch or MindSpore tensors via `.numpy()`/`.asnumpy()`):

    import fvd
    extractor = fvd.Extractor("torch")               # DeepMind's Kinetics-400 weights
    real = extractor(fvd.fvd_frames_batch(videos))["Logits"]   # videos: (B, T, H, W, 3) uint8
    score = fvd.fvd(real, generated)                 # or fvd.frechet_distance(Stats, Stats)

`fvd.distance` and `fvd.protocol` need numpy alone; the extractor imports its framework.
"""
from .distance import Stats, frechet_distance, fvd
from .extract import Extractor
from .protocol import fvd_frames, fvd_frames_batch, resize_bilinear_tf1

__all__ = ["Extractor", "Stats", "frechet_distance", "fvd", "fvd_frames", "fvd_frames_batch",
           "resize_bilinear_tf1"]
