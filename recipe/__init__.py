"""The training recipe and its loop, framework-free (numpy, the video decoder): the one loop
(`loop`) with a backend per framework (`i3d_ms.train`, `i3d_torch.train`), and what both
share: config, sources and samples, schedule and initial values, checkpoints, metrics, the
progress line and plot."""
