"""`i3d train` and `i3d eval` on MindSpore: the backend of `recipe.loop` and
`recipe.evaluation`, one device or many (msrun).

Every rank starts from the same weights, the torch loop's too (`recipe.init`), and draws its
own dropout masks (`rank_seed`)."""
from __future__ import annotations

import mindspore as ms

from convert.architecture import NUM_CLASSES
from recipe import loop
from recipe.init import initial

from . import checkpoint
from .evaluate import predict_videos
from .model import set_mode
from .network import build_net
from .pipeline import train_dataset
from .trainer import Trainer, distributed


class MindSporeBackend(loop.Backend):
    name = "mindspore"

    def setup(self, cfg: dict) -> tuple:
        t = cfg["train"]
        set_mode(t["mode"], t["device"])
        rank, world = distributed()
        ms.set_seed(loop.rank_seed(t["seed"], rank))  # dropout: nn.Dropout takes its seed when built
        return rank, world

    def trainer(self, cfg: dict, classes: int, pretrained, world: int) -> Trainer:
        m, t = cfg["model"], cfg["train"]
        net = build_net(m, classes, t["precision"])
        params = net.trainable_params()
        shapes = {p.name: tuple(p.shape) for p in params}
        for p in params:  # what is not loaded below starts as in the torch loop
            value = initial(p.name, shapes, t["seed"])
            if value is not None:
                p.set_data(ms.Tensor(value, p.dtype))
        source = pretrained or m["weights"]
        if source and source != "scratch":
            checkpoint.load_pretrained(net, source, keep_head=classes == NUM_CLASSES
                                       and m["final_endpoint"] == "Logits")
        return Trainer(net, t, world, m["freeze_bn"])

    def batches(self, source, workers: int):
        """The pipeline's batches; a worker's I3DError as itself, not as MindSpore's wrapping."""
        batches = train_dataset(source, workers).create_tuple_iterator(output_numpy=True,
                                                                       num_epochs=1)
        try:
            yield from batches
        except RuntimeError:
            if source.failed is not None:
                raise source.failed from None
            raise

    def load(self, cfg: dict, checkpoint_: str, classes: int):
        """`i3d eval`'s network: the configured one with `checkpoint_`'s weights."""
        return checkpoint.load_for_eval(cfg["model"], checkpoint_, classes)

    def predict(self, net, cfg, protocol, rank, world) -> tuple:
        return predict_videos(net, cfg, protocol, rank=rank, world=world)


def train(cfg: dict, resume: bool = False, pretrained: str | None = None) -> tuple:
    """`recipe.loop.train` on MindSpore: (summary, trainer)."""
    return loop.train(cfg, MindSporeBackend(), resume, pretrained)
