"""Throughput suites (`i3d bench`): inference, training step, data loading, conversion, each
reported against the machine's measured matmul ceiling and FLOPs counted from the table."""
