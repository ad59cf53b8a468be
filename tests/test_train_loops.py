"""The one training loop (`recipe.loop`) under torch and across the two frameworks, on real mp4s
from `i3d make-dataset`: `i3d train --framework torch` learns; a training checkpoint of either
framework continues under the other and lands where the other's uninterrupted run lands
(float64, 1e-9); a run killed at random moments and restarted with the same command line ends
bit-identical to an uninterrupted one; two torchrun workers on the CPU (gloo); mixed precision's
dynamic loss scale follows MindSpore's rule (MindSpore's own scaler is the judge)."""
from __future__ import annotations

import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import i3d_ms  # noqa: F401  (MindSpore before decord)
from convert.formats import READERS
from tests.helpers import I3D
from tests.helpers import call as i3d

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "config", "cpu_smoke.yaml")


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def losses(out) -> dict:
    """{step: loss} of a run's log (a resumed run's repeats: the last wins)."""
    return {r["step"]: r["loss"] for r in rows(out / "train.jsonl") if "loss" in r}


def ckpt(out, step: int) -> dict:
    return READERS["mindspore"](str(out / "checkpoints" / f"step_{step:08d}.ckpt"))[0]


def worst(a: dict, b: dict) -> tuple:
    """(largest relative distance, its entry) over every tensor of two training checkpoints."""
    assert set(a) == set(b)
    return max((float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-300)), k)
               for k in a)


def test_the_torch_loop_learns_motion_and_both_frameworks_score_its_checkpoint_alike(motion, tmp_path,
                                                                             capsys):
    out = tmp_path / "run"
    assert i3d("train", "--framework", "torch", "--config", SMOKE, f"data.root={motion}",
               f"train.out={out}") == 0
    log = rows(out / "train.jsonl")
    final = [r for r in log if "val_top1" in r][-1]
    loss = [r["loss"] for r in log if "loss" in r]
    assert final["step"] == 60 and final["val_top1"] >= 0.9
    assert np.mean(loss[:5]) > 1.0 and np.mean(loss[-5:]) < 0.5
    assert (out / "train.png").stat().st_size > 10000
    assert sorted(os.listdir(out / "checkpoints")) == ["step_00000050.ckpt", "step_00000060.ckpt"]
    assert json.loads((out / "summary.json").read_text())["framework"] == "torch"

    # the torch run's checkpoint, scored by each framework's evaluator: the same predictions
    for framework in ("mindspore", "torch"):
        capsys.readouterr()
        assert i3d("eval", "--framework", framework, "--config", SMOKE, f"data.root={motion}",
                   "--checkpoint", out / "checkpoints" / "step_00000060.ckpt", "--json",
                   "--csv", tmp_path / f"{framework}.csv") == 0
        m = json.loads(capsys.readouterr().out)
        assert m["videos"] == 32 and m["video_top1"] == pytest.approx(final["val_top1"])
    predicted = [[row.split(",")[2] for row in (tmp_path / f"{f}.csv").read_text().splitlines()]
                 for f in ("mindspore", "torch")]
    assert predicted[0] == predicted[1] and len(predicted[0]) == 33


FP64 = ["train.steps=12", "train.checkpoint_every=6", "train.keep_checkpoints=5",
        "train.precision=fp64", "train.mode=pynative", "train.eval_every=0"]


@pytest.fixture(scope="module")
def train_list(motion, tmp_path_factory):
    """The motion training videos as a list file: a run without a validation set."""
    from recipe.sources import read_kinetics

    path = tmp_path_factory.mktemp("lists") / "train.txt"
    path.write_text("".join(f"{v.path} {v.label}\n" for v in read_kinetics(str(motion), "train")))
    return path


def _train(framework, train_list, out, resume=False):
    assert i3d("train", "--framework", framework, "--config", SMOKE, "data.root=null",
               f"data.train={train_list}", f"train.out={out}", *FP64,
               *(["--resume"] if resume else [])) == 0


def _hand_over(src, dst, step: int):
    """A new run folder holding `src`'s checkpoint of `step` and its config."""
    (dst / "checkpoints").mkdir(parents=True)
    shutil.copy(src / "checkpoints" / f"step_{step:08d}.ckpt", dst / "checkpoints")
    shutil.copy(src / "config.yaml", dst)


@pytest.mark.slow
def test_hand_off_both_ways_lands_where_the_uninterrupted_run_lands(train_list, tmp_path):
    """float64, the smoke recipe (warmup, cosine, decay, clipping, frozen BN, the probe's
    BatchNorm): MindSpore's step-6 checkpoint continued by torch lands on MindSpore's step 12,
    and torch's continued by MindSpore on torch's, to 1e-9 in every parameter, BN statistic
    and momentum buffer (the uninterrupted runs agree too: the parity report's test)."""
    ms_run, torch_run = tmp_path / "mindspore", tmp_path / "torch"
    _train("mindspore", train_list, ms_run)
    _train("torch", train_list, torch_run)
    for src, framework, dst in ((ms_run, "torch", tmp_path / "ms-then-torch"),
                                (torch_run, "mindspore", tmp_path / "torch-then-ms")):
        _hand_over(src, dst, 6)
        _train(framework, train_list, dst, resume=True)
        assert sorted(losses(dst)) == list(range(6, 12))
        for s in range(6, 12):
            assert losses(dst)[s] == pytest.approx(losses(src)[s], rel=1e-9), (framework, s)
        distance, entry = worst(ckpt(dst, 12), ckpt(src, 12))
        assert distance < 1e-9, (framework, distance, entry)


@pytest.mark.slow
def test_killed_at_random_moments_the_same_line_ends_bit_identical(motion, tmp_path):
    """A job script's one line, `i3d train --framework torch --resume ...`, SIGKILLed at random
    moments (before its first checkpoint, between checkpoints, while writing one) and started
    again until it finishes: its checkpoint and its log equal an uninterrupted run's bit for
    bit."""
    def line(out):
        return [*I3D, "train", "--framework", "torch", "--resume", "--config", SMOKE,
                f"data.root={motion}", f"train.out={out}", "train.steps=30",
                "train.checkpoint_every=3", "train.keep_checkpoints=2", "train.eval_every=0"]

    env = {**os.environ, "GLOG_v": "3"}
    whole, start = tmp_path / "whole", time.perf_counter()
    subprocess.run(line(whole), check=True, capture_output=True, env=env, timeout=300)
    seconds = time.perf_counter() - start  # the kills fall inside a run, on any machine
    killed, rng, starts = tmp_path / "killed", random.Random(), []
    folder = killed / "checkpoints"

    def saved() -> list:  # whole checkpoints (a write in progress is a hidden temporary)
        return sorted(glob.glob(str(folder / "step_*.ckpt")))

    for attempt in range(10):
        proc = subprocess.Popen(line(killed), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env)
        if attempt == 0:  # once between checkpoints for sure: after the first, at random
            while not saved() and proc.poll() is None:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.2))
        elif attempt < 9:  # then anywhere: while importing, reading, stepping, writing
            time.sleep(rng.uniform(0.1, 0.9) * seconds)
        else:
            proc.wait(timeout=300)  # and let it finish
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (killed / "summary.json").exists():
            break
        starts.append(saved()[-1] if saved() else None)
    assert (killed / "summary.json").exists(), proc.stderr.read()
    assert any(starts), starts  # at least one restart continued from a checkpoint
    # the job's line once more (a kill may have come after the summary): done, nothing trained
    again = subprocess.run(line(killed), capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "the run finished (step 30 of 30)" in again.stderr, again
    a, b = ckpt(killed, 30), ckpt(whole, 30)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert losses(killed) == losses(whole)


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_workers_on_the_cpu(motion, tmp_path):
    """DDP over gloo: both ranks step together (an all-reduce per step), rank 0 alone writes,
    and the in-training evaluation gathers both ranks' shares of the 32 validation videos."""
    venv = os.path.dirname(sys.executable)
    out = tmp_path / "run"
    done = subprocess.run(
        [os.path.join(venv, "torchrun"), "--nproc_per_node=2", f"--master_port={_port()}",
         os.path.join(venv, "i3d"), "train", "--framework", "torch", "--config", SMOKE,
         f"data.root={motion}", f"train.out={out}", "train.steps=6", "train.batch_size=4",
         "train.checkpoint_every=3", "train.eval_every=3", "data.workers=1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world"] == 2 and summary["framework"] == "torch"
    evals = [r for r in rows(out / "train.jsonl") if "val_top1" in r]
    assert [r["step"] for r in evals] == [3, 6] and all(r["val_videos"] == 32 for r in evals)
    assert sorted(losses(out)) == list(range(6))
    assert sorted(os.listdir(out / "checkpoints")) == ["step_00000003.ckpt", "step_00000006.ckpt"]


def test_the_loss_scale_follows_mindspores_rule():
    """`recipe.schedule.adjust_loss_scale` (what the torch loop uses) against MindSpore's
    DynamicLossScaler on the same run of finite and overflowing steps."""
    import mindspore as ms
    from mindspore import amp

    from recipe.schedule import adjust_loss_scale

    rng = np.random.default_rng(0)
    flags = rng.random(200) < 0.9
    ms_scaler = amp.DynamicLossScaler(2.0 ** 24, 2, 5)
    scale, counter = 2.0 ** 24, 0
    for finite in flags:
        ms_scaler.adjust(ms.Tensor(bool(finite)))
        scale, counter = adjust_loss_scale(scale, counter, bool(finite), 2, 5)
        assert scale == float(ms_scaler.scale_value.asnumpy())
        assert counter == int(ms_scaler.counter.asnumpy())


def test_torch_fp16_skips_overflowing_steps_and_applies_finite_ones(weights):
    """Mixed precision in the torch loop: from a loss scale of 2^20 the first fp16 backward
    overflows; such a step changes no weight or momentum buffer and halves the scale;
    the first finite step updates every trained tensor."""
    from convert.architecture import DEEPMIND
    from i3d_torch.network import build_net, load_trunk
    from i3d_torch.trainer import TorchTrainer
    from recipe.config import load_config

    cfg = load_config(SMOKE, ["train.precision=fp16", "train.loss_scale=dynamic",
                              "train.loss_scale_init=1048576", "train.batch_size=4"])
    net = build_net(cfg["model"], 4, DEEPMIND)
    load_trunk(net, weights, False, "default")
    trainer = TorchTrainer(net, cfg["train"], freeze_bn=True)
    rng = np.random.RandomState(0)
    scales, skipped = [], 0
    for _ in range(12):
        x = rng.randint(0, 256, (4, 8, 32, 32, 3)).astype(np.uint8)
        before = trainer.state(0)
        scale = trainer.loss_scale()
        _, _, finite = trainer.step(x, rng.randint(0, 4, 4))
        after = trainer.state(0)
        trained = [k for k in after if k.startswith("moments.")]
        if not finite:
            skipped += 1
            assert trainer.loss_scale() == scale / 2
            assert all(np.array_equal(after[k], before[k]) for k in trained)
            assert all(np.array_equal(after[k[8:]], before[k[8:]]) for k in trained)
        else:
            assert all(not np.array_equal(after[k[8:]], before[k[8:]]) for k in trained)
            break
        scales.append(trainer.loss_scale())
    assert skipped >= 1 and finite, (skipped, scales)


@pytest.mark.slow
def test_the_training_parity_report_of_the_smoke_recipe(motion, tmp_path, capsys):
    """`i3d parity --training`: 20 steps of both loops in float64 within 1e-9 in every scalar
    and tensor, as a table, JSON, markdown and a plot."""
    out = {k: tmp_path / f"report.{k}" for k in ("json", "md", "png")}
    assert i3d("parity", "--training", SMOKE, "--set", f"data.root={motion}", "--steps", 20,
               "--json", out["json"], "--markdown", out["md"], "--plot", out["png"]) == 0
    assert "first parting: none" in capsys.readouterr().out
    (report,) = json.loads(out["json"].read_text())["reports"]
    assert report["kind"] == "training" and report["steps"] == 20 and report["ok"]
    assert max(r["worst"]["distance"] for r in report["rows"]) < 1e-9
    assert max(max(r["scalars"].values()) for r in report["rows"]) < 1e-9
    assert out["png"].stat().st_size > 10000 and "| 19 |" in out["md"].read_text()


@pytest.mark.parametrize("pitfall, step, named", [
    ("decay_all", 0, "bn.beta"),            # beta decayed: its update, then its momentum
    ("bn_momentum", 0, "norm.moving_"),     # the probe's BatchNorm statistics
    ("epoch_schedule", 1, "lr"),            # warmup: the second step's rate
    ("clip_epsilon", 1, "moments."),        # the first step clipped: every update scaled
    ("loss_scale_init", 0, "loss_scale"),   # 2^16 against MindSpore's configured 2^24
])
def test_each_porting_pitfall_is_caught_and_named(motion, pitfall, step, named):
    """Each mistake, reintroduced on the torch side, parts the loops at the step where it first
    acts and is named there; without it the same steps agree (the first test)."""
    from parity_tests.training import training
    from recipe.config import load_config

    cfg = load_config(SMOKE, [f"data.root={motion}", "train.loss_scale=dynamic",
                              "train.loss_scale_init=16777216"])
    report = training(cfg, step + 1, pitfalls=(pitfall,))
    first = report["first_parting"]
    assert not report["ok"] and first["step"] == step, first
    assert named in first["what"], first


def test_dropout_given_as_keep_prob_is_caught_as_built(motion):
    """Dropout draws different masks in the two frameworks, so the steps run without it; the
    drop probability each network was built with is compared before the first step: torch's
    Dropout given the keep probability (0.8 for MindSpore's 0.2) is named there."""
    from parity_tests.training import training
    from recipe.config import load_config

    cfg = load_config(SMOKE, [f"data.root={motion}", "model.final_endpoint=Logits",
                              "model.head=global", "model.dropout_keep_prob=0.8",
                              "train.batch_size=2"])
    right = training(cfg, 1)
    assert right["settings"]["dropout p"] == (pytest.approx(0.2), pytest.approx(0.2))
    assert right["ok"], right["first_parting"]
    wrong = training(cfg, 1, pitfalls=("dropout_keep_prob",))
    assert wrong["first_parting"]["step"] == "setup"
    assert wrong["first_parting"]["what"] == "dropout p"


def test_bf16_is_the_torch_loops_alone(train_list, tmp_path, capsys):
    """bf16 autocast (the GPU bench's precision) trains in the torch loop; the MindSpore loop
    refuses it in one line before it writes anything."""
    args = ["--config", SMOKE, "data.root=null", f"data.train={train_list}",
            "train.precision=bf16", "train.steps=3", "train.checkpoint_every=0"]
    assert i3d("train", "--framework", "torch", *args, f"train.out={tmp_path / 'torch'}") == 0
    assert all(np.isfinite(v) for v in losses(tmp_path / "torch").values())
    capsys.readouterr()
    assert i3d("train", *args, f"train.out={tmp_path / 'mindspore'}") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bf16 is the torch loop's" in err, err
    assert not (tmp_path / "mindspore").exists()


def test_crafted_training_checkpoints_are_refused_in_one_line(train_list, tmp_path, capsys):
    """A training checkpoint whose tensor has another shape, or whose step is not one number,
    is refused by `--resume` and `i3d eval` of either framework in one line naming the file and
    the entry, before anything is copied or written; a finished run whose summary.json is not
    one is ended again (the summary rewritten), not crashed on."""
    from convert.architecture import DEEPMIND
    from convert.checkpoints import variant_record
    from convert.formats import WRITERS

    base = ["--config", SMOKE, "data.root=null", f"data.train={train_list}", "train.steps=6",
            "train.checkpoint_every=3", "train.keep_checkpoints=5"]
    good = tmp_path / "good"
    assert i3d("train", "--framework", "torch", *base, f"train.out={good}") == 0
    state = ckpt(good, 3)
    crafted = {"shape": {**state, "fc.weight": np.zeros((5, 192), state["fc.weight"].dtype)},
               "step": {**state, "global_step": np.zeros(0, np.int64)}}
    for kind, flat in crafted.items():
        run = tmp_path / kind
        (run / "checkpoints").mkdir(parents=True)
        shutil.copy(good / "config.yaml", run)
        path = run / "checkpoints" / "step_00000003.ckpt"
        WRITERS["mindspore"](flat, str(path), variant_record(DEEPMIND, "crafted"))
        before = sorted(os.listdir(run / "checkpoints"))
        for framework in ("torch", "mindspore"):
            capsys.readouterr()
            assert i3d("train", "--framework", framework, *base, "train.mode=pynative",
                       f"train.out={run}", "--resume") == 2
            last = capsys.readouterr().err.strip().splitlines()[-1]
            assert last.startswith("i3d: error:") and "Traceback" not in last, last
            assert ("fc.weight has shape (5, 192)" in last if kind == "shape"
                    else "no intact checkpoint" in last), (framework, last)
            assert sorted(os.listdir(run / "checkpoints")) == before
            assert i3d("eval", "--framework", framework, *base, "data.val=" + str(train_list),
                       "train.mode=pynative", "--checkpoint", path) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and str(path) in err, err
            assert ("fc.weight has shape (5, 192)" in err if kind == "shape"
                    else "global_step is not one step number" in err), (framework, err)

    (good / "summary.json").write_bytes(b"\x00not json")
    capsys.readouterr()
    assert i3d("train", "--framework", "torch", *base, f"train.out={good}", "--resume") == 0
    assert "the run finished (step 6 of 6)" in capsys.readouterr().err
    assert json.loads((good / "summary.json").read_text())["start"] == 6
