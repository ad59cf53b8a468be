"""The training recipe as pure functions, shared by the MindSpore and the PyTorch loops (numpy
only): the learning-rate rule and schedule, which parameters take weight decay, gradient
clipping by global norm as MindSpore computes it."""
