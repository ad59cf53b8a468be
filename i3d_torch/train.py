"""`i3d train` and `i3d eval` with `--framework torch`: the torch twin's backend of `recipe.loop`
and `recipe.evaluation`, on the CPU or a CUDA GPU, one process or many (torchrun: DDP, NCCL on
GPUs, gloo on CPUs).

Every rank starts from the same weights, the MindSpore loop's too (`recipe.init`), and draws
its own dropout masks (`rank_seed`). Batches come from `recipe.samples.batches`' decoding
threads. BatchNorm statistics stay each rank's own (as MindSpore's data parallel keeps them):
rank 0's are checkpointed."""
from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from convert.architecture import NUM_CLASSES
from convert.checkpoints import read_weights
from convert.errors import I3DError
from recipe import loop
from recipe.checkpoints import training_state
from recipe.config import variant
from recipe.init import initial
from recipe.samples import EvalSource, batches, workers
from recipe.sources import split_videos

from .network import build_net, load_state, load_trunk, mindspore_names
from .trainer import AUTOCAST, DTYPES, TorchTrainer, check_device, to_input


class TorchBackend(loop.Backend):
    name = "torch"

    def setup(self, cfg: dict) -> tuple:
        t = cfg["train"]
        self.device = check_device(t["device"])
        rank, world = distributed(self.device)
        self.rank_seed = loop.rank_seed(t["seed"], rank)
        return rank, world

    def trainer(self, cfg: dict, classes: int, pretrained, world: int,
                pitfalls: dict | None = None) -> TorchTrainer:
        m, t = cfg["model"], cfg["train"]
        net = build_net(m, classes, variant(m)).to(DTYPES[t["precision"]])  # before the values
        names = mindspore_names(net)
        params = dict(net.named_parameters())
        shapes = {names[k]: tuple(p.shape) for k, p in params.items()}
        with torch.no_grad():  # what is not loaded below starts as in the MindSpore loop
            for k, p in params.items():
                value = initial(names[k], shapes, t["seed"])
                if value is not None:
                    p.copy_(torch.from_numpy(value))
        source = pretrained or m["weights"]
        if source and source != "scratch":
            weights, _ = read_weights(source, net.variant)
            load_trunk(net, weights, classes == NUM_CLASSES and m["final_endpoint"] == "Logits",
                       source)
        torch.manual_seed(self.rank_seed)  # dropout: each rank its own masks
        ddp = None
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # buffers (BN statistics) stay each rank's own, as under msrun
            ddp = lambda n: DistributedDataParallel(n, broadcast_buffers=False)  # noqa: E731
        return TorchTrainer(net, t, world, m["freeze_bn"], device=self.device, ddp=ddp,
                            pitfalls=pitfalls)

    def batches(self, source, threads: int):
        return batches(source, source.batch, threads, drop_remainder=True)

    def load(self, cfg: dict, checkpoint: str, classes: int):
        """`i3d eval`'s network: the configured one with `checkpoint`'s weights, a training
        checkpoint of either loop (every tensor of the network) or any weight file `i3d
        convert` reads, its classifier included ('default': DeepMind's Kinetics-400)."""
        m, t = cfg["model"], cfg["train"]
        net = build_net(m, classes, variant(m)).to(DTYPES[t["precision"]])
        flat = training_state(checkpoint, net.variant)
        if flat is None:
            load_trunk(net, read_weights(checkpoint, net.variant)[0], True, checkpoint)
        else:  # a training checkpoint of either loop: every tensor of the configured network
            load_state(net, flat, checkpoint)
        return net.to(self.device)

    def predict(self, net, cfg, protocol, rank, world) -> tuple:
        """(clip logits, clip labels, video ids, videos, skipped {path: reason}) of the
        validation split, this rank's share run and every rank's gathered."""
        d, e = cfg["data"], cfg["eval"]
        videos, _ = split_videos(d, "val")
        source = EvalSource(videos, d, protocol, rank, world, uint8=True,
                            max_frames=e["max_frames"])
        param = next(net.parameters())
        autocast = AUTOCAST.get(cfg["train"]["precision"])
        net.eval()
        logits, labels, ids = [], [], []
        with torch.no_grad(), (torch.autocast(param.device.type, dtype=autocast) if autocast
                               else contextlib.nullcontext()):
            for clips, label, index, valid in batches(source, source.rows_per_batch(
                    int(e["batch_clips"])), workers(d["workers"], world)):
                keep = valid.astype(bool)  # bad videos came as zeros
                if not keep.any():
                    continue
                clips = clips[keep]
                out = net(to_input(clips.reshape(-1, *clips.shape[2:]), None, param.dtype,
                                   param.device))
                logits.append(out.float().cpu().numpy())
                labels.append(np.repeat(label[keep], source.k))
                ids.append(np.repeat(index[keep], source.k))
        classes = net.num_classes
        local = (np.concatenate(logits) if logits else np.zeros((0, classes), np.float32),
                 np.concatenate(labels) if labels else np.zeros(0, np.int32),
                 np.concatenate(ids) if ids else np.zeros(0, np.int32), dict(source.bad))
        parts = [local]
        if world > 1:
            parts = [None] * world
            torch.distributed.all_gather_object(parts, local)
        if not sum(len(p[2]) for p in parts):
            raise I3DError("no video of the evaluation set could be read")
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]), videos,
                {k: v for p in parts for k, v in p[3].items()})


def distributed(device: str) -> tuple:
    """(rank, world): torchrun's workers join the process group (NCCL on GPUs, gloo on CPUs);
    a plain process is rank 0 of 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()
