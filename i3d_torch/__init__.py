"""PyTorch twin of I3D, built by walking `convert.architecture`. Importing it caps torch's
CPU threads at I3D_THREADS if set (`convert.threads`)."""
import torch

from convert.threads import requested as _threads

if _threads():
    torch.set_num_threads(_threads())

from .model import (BatchNorm, InceptionI3d, build, end_points, load_weights, predict,
                    state_dict_from)

__all__ = ["BatchNorm", "InceptionI3d", "build", "end_points", "load_weights", "predict",
           "state_dict_from"]
