"""The `i3d` command line (`python -m i3d_cli` or the `i3d` console script)."""
