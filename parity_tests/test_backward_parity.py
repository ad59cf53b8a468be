"""Backward parity: SGD steps in both twins, BN in training mode, compared tensor by tensor."""
import numpy as np

from parity_tests.run import backward


def test_training_steps_agree(weights):
    rng = np.random.RandomState(0)
    # small but whole: every unit, BN in training mode (Mixed_5c sees a 1x2x2 map per clip)
    x = rng.uniform(-1, 1, (2, 3, 8, 64, 64)).astype(np.float32)
    y = rng.randint(0, 400, 2)
    report = backward(weights, x, y, steps=2, head="global")
    exact, f32 = report["sections"]["float64"], report["sections"]["float32"]
    # float64: every gradient, updated weight and BN statistic, and the loss curve, to what
    # float64 arithmetic in another order allows (measured: 2e-12)
    assert exact["ok"] and exact["max_grad_rel"] < 1e-9, exact["first_failure"]
    assert max(r["rel"] for r in exact["rows"]) < 1e-9
    names = {r["name"] for r in exact["rows"]}
    assert "grad Conv3d_1a_7x7:w" in names and "updated Mixed_5c/Branch_3/Conv3d_0b_1x1:var" in names
    assert all(s["rel"] < 1e-9 for s in exact["losses"])
    # float32: what training runs; within rounding of torch's own float32 error
    assert f32["ok"] and f32["median_grad_rel"] < 1e-3
    assert all(s["rel"] < 1e-3 for s in f32["losses"])
