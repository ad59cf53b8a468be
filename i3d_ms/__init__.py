"""MindSpore twin of I3D, built by walking `convert.architecture`, plus its training path."""
from .model import (BatchNorm, EndPoints, InceptionI3d, build, load_weights, parameters_from,
                    predict, set_mode)

__all__ = ["BatchNorm", "EndPoints", "InceptionI3d", "build", "load_weights", "parameters_from",
           "predict", "set_mode"]
