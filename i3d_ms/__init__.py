"""MindSpore twin of I3D, built by walking `convert.architecture`, plus its training path.

MindSpore is imported on first use of a model name, so `i3d_ms.commands` (the CLI's training
subcommands) loads without it."""
_MODEL = ("BatchNorm", "EndPoints", "InceptionI3d", "build", "load_weights", "parameters_from",
          "predict", "set_mode")
__all__ = list(_MODEL)


def __getattr__(name):
    if name in _MODEL:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'i3d_ms' has no attribute {name!r}")
