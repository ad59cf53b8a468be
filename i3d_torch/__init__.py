"""PyTorch twin of I3D, built by walking `convert.architecture`."""
from .model import (BatchNorm, InceptionI3d, build, end_points, load_weights, predict,
                    state_dict_from)

__all__ = ["BatchNorm", "InceptionI3d", "build", "end_points", "load_weights", "predict",
           "state_dict_from"]
