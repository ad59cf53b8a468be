"""The recipe's step in PyTorch (`i3d_torch.trainer`) against the MindSpore loop's own Trainer
(`i3d_ms.trainer`): the full network from DeepMind's weights, the same uint8 batches (some
mirrored), warmup + cosine, weight decay, momentum, clipping by global norm, in float32. Every
loss, weight and BatchNorm statistic is compared after the steps; torch's default of decaying
every parameter, reintroduced, is caught on the parameters it touches."""
from __future__ import annotations

import os

import numpy as np
import pytest

import i3d_ms  # MindSpore before anything decodes
from recipe.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "config", "cpu_smoke.yaml")
STEPS = 4


def _recipe() -> dict:
    return load_config(SMOKE, [f"train.steps={STEPS}", "train.warmup_steps=2", "train.lr=0.05",
                               "train.final_lr=0.001", "train.weight_decay=0.01",
                               "train.clip_norm=1.0", "train.mode=pynative",
                               "train.batch_size=2"])["train"]


def _batches():
    rng = np.random.RandomState(0)
    for _ in range(STEPS):
        yield (rng.randint(0, 256, (2, 8, 64, 64, 3)).astype(np.uint8),
               rng.randint(0, 400, 2).astype(np.int32), np.array([False, True]))


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def mindspore_run(weights):
    from i3d_ms.trainer import Trainer
    from parity_tests.backward import _canonical

    i3d_ms.set_mode("pynative")
    net = i3d_ms.build(weights, head="global")
    trainer = Trainer(net, _recipe())
    losses = [trainer.step(x, y, f)[0] for x, y, f in _batches()]
    state = _canonical("mindspore", weights, {p.name: p.asnumpy() for p in net.get_parameters()})
    return losses, state, [float(v) for v in trainer.schedule]


def _torch_run(weights, precision="fp32", **kw):
    import i3d_torch
    from i3d_torch.trainer import TorchTrainer

    trainer = TorchTrainer(i3d_torch.build(weights, head="global"),
                           {**_recipe(), "precision": precision}, **kw)
    losses = [trainer.step(x, y, f)[0] for x, y, f in _batches()]
    return losses, trainer.canonical(), [float(v) for v in trainer.schedule]


def test_the_torch_recipe_step_is_mindsporess_step_for_step(weights, mindspore_run):
    ms_losses, ms_state, ms_lrs = mindspore_run
    losses, state, lrs = _torch_run(weights)
    assert lrs == pytest.approx(ms_lrs, rel=1e-6)  # float32 (MindSpore) vs float64 schedule
    assert losses == pytest.approx(ms_losses, rel=1e-4)
    assert set(state) == set(ms_state)
    worst = max(_rel(state[k], ms_state[k]) for k in state)
    assert worst < 1e-3, worst  # float32 over 4 steps of lr 0.05 (measured 3.3e-4)


def test_decaying_every_parameter_is_caught(weights, mindspore_run):
    _, ms_state, _ = mindspore_run
    _, right, _ = _torch_run(weights)
    _, wrong, _ = _torch_run(weights, pitfalls={"decay_all": True})
    betas = [k for k in right if k.endswith(":beta")]
    noise = max(_rel(right[k], ms_state[k]) for k in betas)
    moved = max(_rel(wrong[k], ms_state[k]) for k in betas)
    assert moved > 10 * noise, (moved, noise)


def test_float64_steps_agree_to_1e9(weights):
    """Both trainers in float64: the MindSpore side with what MindSpore 2.10's CPU computes at
    lower precision written out or avoided (cross entropy, the momentum update, MaxPool3D's
    backward, Python-float BatchNorm weights): every loss and every tensor within 1e-9."""
    from i3d_ms.trainer import Trainer
    from parity_tests.backward import _canonical

    i3d_ms.set_mode("pynative")
    net = i3d_ms.build(weights, head="global", dtype="float64")
    trainer = Trainer(net, _recipe())
    ms_losses = [trainer.step(x, y, f)[0] for x, y, f in _batches()]
    ms_state = _canonical("mindspore", weights,
                          {p.name: p.asnumpy() for p in net.get_parameters()})
    losses, state, _ = _torch_run(weights, "fp64")
    assert losses[0] == pytest.approx(ms_losses[0], rel=1e-13)
    assert losses == pytest.approx(ms_losses, rel=1e-9)
    assert max(_rel(state[k], ms_state[k]) for k in state) < 1e-9
