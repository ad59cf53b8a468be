"""MindSpore twin of I3D, built by walking `convert.architecture`, plus its training path.

Importing this package imports MindSpore (its C++ log set to errors unless GLOG_v says
otherwise, its CPU kernel threads capped by I3D_THREADS if set: `convert.threads`). Import it before anything decodes video: MindSpore aborts (std::random_device)
when it is imported after decord in the same process.
"""
import os

os.environ.setdefault("GLOG_v", "3")

import mindspore  # noqa: E402

from convert.threads import requested as _threads  # noqa: E402

if _threads():  # before any kernel runs: MindSpore takes it once per process
    mindspore.device_context.cpu.op_tuning.threads_num(_threads())

from .model import (BatchNorm, InceptionI3d, build, end_points, load_weights,  # noqa: E402
                    parameters_from, predict, set_mode)

__all__ = ["BatchNorm", "InceptionI3d", "build", "end_points", "load_weights", "parameters_from",
           "predict", "set_mode"]
