"""Training on real mp4s made by `i3d make-dataset`: learning, resume, msrun, bad videos, fp16.

Sizes are small so that CPU runs take seconds to a minute (see config/cpu_smoke.yaml): 8 frames
of 32x32 and I3D cut after Conv3d_2c_3x3, fine-tuned from DeepMind's Kinetics weights.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import mindspore
import numpy as np
import pytest

import i3d_ms  # MindSpore before decord
from tests.helpers import call as i3d

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "config", "cpu_smoke.yaml")


def rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def bad_list(motion, tmp_path_factory):
    """16 good videos, a corrupt mp4 and a missing one, as a list file."""
    from recipe.sources import read_kinetics

    folder = tmp_path_factory.mktemp("lists")
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    good = read_kinetics(str(motion), "train")[::12][:16]
    lines = [f"{v.path} {v.label}" for v in good[:7]] + ["corrupt.mp4 1", "missing.mp4 2"]
    lines += [f"{v.path} {v.label}" for v in good[7:]]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    return folder / "train.txt"


@pytest.mark.slow
def test_learns_motion_to_90_percent(motion, tmp_path, capsys):
    out = tmp_path / "run"
    start = time.perf_counter()
    assert i3d("train", "--config", SMOKE, f"data.root={motion}", f"train.out={out}") == 0
    seconds = time.perf_counter() - start
    log = rows(out / "train.jsonl")
    final = [r for r in log if "val_top1" in r][-1]
    losses = [r["loss"] for r in log if "loss" in r]
    print(f"\n{len(losses)} steps in {seconds:.0f} s, val top-1 {final['val_top1']:.3f}; loss every "
          f"10 steps: {[round(x, 3) for x in losses[::10]]}")
    assert final["step"] == 60 and final["val_top1"] >= 0.9
    assert np.mean(losses[:5]) > 1.0 and np.mean(losses[-5:]) < 0.5
    assert (out / "train.png").stat().st_size > 10000
    assert sorted(os.listdir(out / "checkpoints")) == ["step_00000050.ckpt", "step_00000060.ckpt"]

    capsys.readouterr()
    csv_path = tmp_path / "val.csv"
    assert i3d("eval", "--config", SMOKE, f"data.root={motion}", "--checkpoint",
               out / "checkpoints" / "step_00000060.ckpt", "--csv", csv_path, "--json") == 0
    m = json.loads(capsys.readouterr().out)
    assert m["videos"] == 32 and m["video_top1"] == pytest.approx(final["val_top1"])
    assert len(csv_path.read_text().splitlines()) == 33


def _cfg(bad_list, out, steps=8):
    return [f"data.train={bad_list}", "data.val=null", f"train.out={out}", f"train.steps={steps}",
            "train.batch_size=4", "train.checkpoint_every=4", "train.warmup_steps=2"]


@pytest.mark.slow
def test_resume_continues_the_uninterrupted_run_and_bad_videos_are_skipped(bad_list, tmp_path,
                                                                          capsys):
    from recipe.config import load_config
    from i3d_ms.train import train

    # uninterrupted, in this process
    summary, _ = train(load_config(SMOKE, _cfg(bad_list, tmp_path / "a")))
    assert sorted(os.path.basename(p) for p in summary["skipped"]) == ["corrupt.mp4", "missing.mp4"]
    full = {r["step"]: r["loss"] for r in rows(tmp_path / "a" / "train.jsonl")}
    assert sorted(full) == list(range(8))
    assert any(r.get("skipped_videos") == 2 for r in rows(tmp_path / "a" / "train.jsonl"))

    # interrupted: killed (SIGKILL) as soon as its step-4 checkpoint exists
    b = tmp_path / "b"
    code = ("from recipe.config import load_config; from i3d_ms.train import train; "
            f"train(load_config({SMOKE!r}, {_cfg(bad_list, b)!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stderr=subprocess.DEVNULL)
    ckpt = b / "checkpoints" / "step_00000004.ckpt"
    while not ckpt.exists() and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()

    summary, _ = train(load_config(SMOKE, _cfg(bad_list, b)), resume=True)
    assert summary["start"] == 4
    resumed = {r["step"]: r["loss"] for r in rows(b / "train.jsonl")}  # last entry per step wins
    for step in range(4, 8):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), step

    # a job killed before its first checkpoint restarts with the same line: from step 0
    capsys.readouterr()
    summary, _ = train(load_config(SMOKE, _cfg(bad_list, tmp_path / "c")), resume=True)
    assert summary["start"] == 0 and "no checkpoint in" in capsys.readouterr().err
    again = {r["step"]: r["loss"] for r in rows(tmp_path / "c" / "train.jsonl")}
    assert all(again[s] == pytest.approx(full[s], rel=1e-5, abs=1e-6) for s in range(8))


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _msrun(tmp_path, *command, timeout=300) -> subprocess.CompletedProcess:
    """`msrun` with 2 local workers running COMMAND, logs in tmp_path/logs, the venv on PATH."""
    venv = os.path.dirname(sys.executable)
    return subprocess.run([os.path.join(venv, "msrun"), "--worker_num=2", "--local_worker_num=2",
                           f"--master_port={_port()}", f"--log_dir={tmp_path / 'logs'}",
                           "--join=True", *map(str, command)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PATH=venv + os.pathsep + os.environ["PATH"]))


@pytest.mark.slow
def test_two_msrun_workers_fp16_skip_alike_and_evaluate_a_shard_each(bad_list, tmp_path):
    """Data parallel over msrun's workers (CPU collectives), in PyNative (graph mode's data
    parallel runs in the README line's test; compiling fp16's graph in two workers took 20 s
    of this test's 50): fp16 with dynamic loss scaling,
    overflowing steps skipped by both ranks after the all-reduce; identical weights after;
    evaluation sharded (each rank its videos, a missing one among them) and gathered, so every
    rank ends with the metrics of the whole split."""
    from convert.checkpoints import load_default

    launcher = tmp_path / "launch.py"
    launcher.write_text(
        "import json, os, sys\nimport numpy as np\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from recipe.config import load_config\nfrom i3d_ms.evaluate import predict_videos\n"
        "from recipe.evaluation import scored\n"
        "from i3d_ms.train import train\n"
        f"cfg = load_config({SMOKE!r}, sys.argv[1:])\n"
        "summary, trainer = train(cfg)\n"
        "rank, world = summary['rank'], summary['world']\n"
        "m = scored(predict_videos(trainer.net, cfg, 'centre', rank=rank, world=world), 4)\n"
        f"out = os.path.join({str(tmp_path)!r}, f'rank{{rank}}of{{world}}')\n"
        "json.dump({k: v for k, v in m.items()}, open(out + '.json', 'w'))\n"
        "np.savez(out + '.npz', scale=trainer.scaler.scale_value.asnumpy(),\n"
        "         **{p.name: p.asnumpy() for p in trainer.net.trainable_params()})\n")
    videos = [line.split()[0] for line in bad_list.read_text().splitlines()]
    val = tmp_path / "val.txt"
    val.write_text("".join(f"{path} {i % 4}\n" for i, path in enumerate(videos[:5] + videos[8:9])))
    done = _msrun(tmp_path, launcher, *_cfg(bad_list, tmp_path / "run", steps=4),
                  f"data.val={val}", "train.precision=fp16", "train.loss_scale=dynamic",
                  "train.loss_scale_init=262144", "train.mode=pynative")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    a, b = np.load(tmp_path / "rank0of2.npz"), np.load(tmp_path / "rank1of2.npz")
    assert len(a.files) == 9 and sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    before = load_default()["Conv3d_1a_7x7"]
    first = next(k for k in a.files if k.startswith("Conv3d_1a_7x7.conv"))
    assert np.abs(a[first] - before["w"]).max() > 0  # they trained
    log = rows(tmp_path / "run" / "train.jsonl")
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [0, 1, 2, 3]  # one writer
    assert not steps[0]["finite"] and steps[0]["loss_scale"] == 131072  # fp16 overflow: skipped
    assert steps[-1]["finite"] and float(a["scale"]) <= 131072
    m0, m1 = (json.load(open(tmp_path / f"rank{r}of2.json")) for r in (0, 1))
    assert m0 == m1 and m0["videos"] == 5 == m0["clips"]  # 6 videos over 2 ranks, 1 missing
    assert {os.path.basename(p): why for p, why in m0["skipped"].items()} == {"missing.mp4": "no such file"}
    val_rows = [r for r in log if "val_top1" in r]  # the loop's own evaluation, gathered too
    assert val_rows[-1]["val_videos"] == 5 and val_rows[-1]["val_top1"] == m0["video_top1"]


@pytest.mark.slow
def test_readme_msrun_line_works_as_written(bad_list, tmp_path):
    """The README's msrun line, run by a shell whose PATH lacks the venv (msrun starts each
    worker with the `python` on PATH): 2 workers, the smoke config, 2 steps."""
    with open(os.path.join(REPO, "README.md")) as f:
        (line,) = [ln.strip() for ln in f if " msrun --worker_num=" in ln]
    assert line.startswith('PATH="$PWD/.venv/bin:$PATH" msrun ') and ".venv/bin/i3d train" in line
    command = (line.replace("--worker_num=8", "--worker_num=2")
               .replace("--local_worker_num=8", "--local_worker_num=2")
               .replace(" msrun ", f" msrun --master_port={_port()} ")
               .replace("--log_dir=msrun_log", f"--log_dir={tmp_path / 'logs'}"))
    command = command.split(" --config ")[0] + f" --config {SMOKE} " + " ".join(
        _cfg(bad_list, tmp_path / "run", steps=2))
    venv = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if os.path.realpath(p) != os.path.realpath(venv))
    done = subprocess.run(["bash", "-c", command], cwd=REPO, env=dict(os.environ, PATH=path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["world"] == 2 and summary["steps"] == 2


@pytest.mark.slow
def test_msrun_eval_refuses_an_existing_csv_on_every_rank(bad_list, tmp_path):
    """`i3d eval --csv` under msrun with the CSV already there: every rank refuses before the
    ranks join (before, rank 0 alone refused and the others went on scoring until msrun
    stopped them), each with one line."""
    assert i3d("train", "--config", SMOKE, *_cfg(bad_list, tmp_path / "run", steps=1),
               "train.checkpoint_every=1") == 0  # a checkpoint this config evaluates
    csv_path = tmp_path / "val.csv"
    csv_path.write_text("precious")
    done = _msrun(tmp_path, os.path.join(os.path.dirname(sys.executable), "i3d"), "eval",
                  "--config", SMOKE, "--checkpoint",
                  tmp_path / "run" / "checkpoints" / "step_00000001.ckpt", "--csv", csv_path,
                  f"data.val={bad_list}", "data.train=null")
    assert done.returncode != 0
    for rank in (0, 1):
        lines = (tmp_path / "logs" / f"worker_{rank}.log").read_text().splitlines()
        assert f"i3d: error: {csv_path}: already exists (use --force to overwrite)" in lines
        assert not any("Traceback" in line for line in lines)
    assert csv_path.read_text() == "precious"


def _trainer(overrides, seed_params=None):
    from recipe.config import load_config
    from i3d_ms.network import build_net
    from i3d_ms.trainer import Trainer

    cfg = load_config(SMOKE, ["model.final_endpoint=Conv3d_1a_7x7", *overrides])
    i3d_ms.set_mode("pynative")
    np.random.seed(0)
    net = build_net(cfg["model"], 4, cfg["train"]["precision"])
    if seed_params is not None:
        for p in net.get_parameters():
            p.set_data(mindspore.Tensor(seed_params[p.name]))
    return Trainer(net, cfg["train"])


def _params(trainer):
    return {p.name: p.asnumpy().copy() for p in trainer.net.get_parameters()}


@pytest.mark.slow
def test_loss_scaling_unscales_gradients_and_skips_overflow():
    from i3d_ms.trainer import learning_rate

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 8, 16, 16, 3), dtype=np.uint8)
    y = np.arange(4, dtype=np.int32)
    plain = _trainer([])
    init = _params(plain)
    scaled = _trainer(["train.loss_scale=dynamic", "train.loss_scale_init=1024"], init)
    for _ in range(2):
        assert plain.step(x, y)[0] == pytest.approx(scaled.step(x, y)[0], rel=1e-6)
    after = _params(plain)
    for k, v in _params(scaled).items():  # x1024 then /1024 is exact: the same update
        np.testing.assert_allclose(v, after[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert any(np.abs(after[k] - init[k]).max() > 0 for k in init)
    assert float(plain.opt.get_lr()) == pytest.approx(learning_rate(2, plain.t))  # warmup: 3rd lr

    # fp16 (MindSpore 'auto' mixed precision runs on CPU too): 2**16 overflows the fp16
    # gradients; those steps change nothing and halve the scale, then training proceeds
    half = _trainer(["train.precision=fp16", "train.loss_scale=dynamic",
                     "train.loss_scale_init=65536"], init)
    finite, scales = [], []
    for _ in range(4):
        finite.append(half.step(x, y)[2])
        scales.append(float(half.scaler.scale_value.asnumpy()))
        if not finite[-1]:  # weights and momentum untouched (BN statistics do move: forward)
            assert all(np.array_equal(p.asnumpy(), init[p.name])
                       for p in half.net.trainable_params())
            assert all(not p.asnumpy().any() for p in half.opt.moments)
    assert finite[0] is False and finite[-1] is True and scales[0] == 32768.0
    assert float(half.opt.get_lr()) == pytest.approx(half.schedule[4])  # skips kept the schedule
    assert any(np.abs(v - init[k]).max() > 0 for k, v in _params(half).items())


def test_learning_rate_schedule():
    from i3d_ms.trainer import learning_rate

    t = {"lr": 0.1, "warmup_steps": 4, "steps": 14, "final_lr": 0.0}
    lrs = [learning_rate(s, t) for s in range(14)]
    assert lrs[:5] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    assert lrs[9] == pytest.approx(0.05)          # half-way through the cosine
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] < 0.003


KINETICS = ["kinetics400_scratch_8gpu", "kinetics400_finetune_1gpu", "kinetics400_finetune_8gpu"]


@pytest.mark.parametrize("name", KINETICS)
def test_kinetics_configs_scale_the_lr_with_the_global_batch(name):
    """Each recipe states its lr for a global batch of train.lr_batch clips; the run uses
    lr x batch_size x world / lr_batch, so the same file on fewer GPUs takes a smaller step."""
    from recipe.config import load_config
    from i3d_ms.trainer import learning_rate, scaled_lr

    cfg = load_config(os.path.join(REPO, "config", f"{name}.yaml"))
    t, m = cfg["train"], cfg["model"]
    assert (t["mode"], t["precision"], t["loss_scale"], t["lr_batch"]) == ("graph", "fp16", "dynamic", 64)
    assert m["weights"] == ("scratch" if "scratch" in name else "default")
    assert cfg["eval"]["protocol"] == "whole"
    world = int(name[-4])
    for ranks in (world, 1):
        peak = max(learning_rate(s, scaled_lr(t, ranks)) for s in range(0, t["steps"], 97))
        assert peak == pytest.approx(t["lr"] * t["batch_size"] * ranks / 64, rel=1e-3)


def test_kinetics_config_step_in_graph_mode_on_cpu():
    """config/kinetics400_finetune_1gpu.yaml's step (graph mode, fp16, dynamic loss scaling)
    compiles and trains; on CPU and at toy size here (the GPU itself could not be tried)."""
    from recipe.config import load_config
    from i3d_ms.network import build_net
    from i3d_ms.trainer import Trainer

    cfg = load_config(os.path.join(REPO, "config", "kinetics400_finetune_1gpu.yaml"), [
        "train.device=CPU", "model.final_endpoint=Conv3d_1a_7x7", "train.steps=3",
        "train.warmup_steps=1", "train.lr=0.05", "train.lr_batch=null"])
    t = cfg["train"]
    i3d_ms.set_mode("graph", "CPU")
    try:
        np.random.seed(0)
        trainer = Trainer(build_net(cfg["model"], 4), t)
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (4, 8, 16, 16, 3), dtype=np.uint8)
        losses = [trainer.step(x, np.arange(4, dtype=np.int32))[0] for _ in range(3)]
    finally:
        i3d_ms.set_mode("pynative", "CPU")
    assert np.isfinite(losses).all() and losses[2] < losses[0]
