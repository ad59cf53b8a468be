"""Weights into the MindSpore network: a pretrained start, a checkpoint to evaluate (the
training checkpoints' files are `recipe.checkpoints`)."""
from __future__ import annotations

import mindspore as ms

from convert.checkpoints import read_weights
from convert.errors import I3DError
from recipe.checkpoints import HEAD_PREFIXES, check, training_state

from .model import parameters_from
from .network import build_net


def load_pretrained(net, source: str, keep_head: bool) -> dict:
    """Kinetics (or any readable) weights into `net`; the classifier is left fresh unless
    `keep_head`, and then it must be in the file with the same classes (never a random head).
    Everything else must fit exactly, the variant too: the net's
    (model.variant) is declared for a file that records none, and one that records another
    is refused."""
    weights, info = read_weights(source, net.variant)
    params = parameters_from(weights)
    own = {p.name: p for p in net.get_parameters()}
    take = {k: p for k, p in params.items()
            if k in own and (keep_head or not k.startswith(HEAD_PREFIXES))}
    missing = [k for k in own if k not in take and (keep_head or not k.startswith(HEAD_PREFIXES))]
    for k in missing:
        if k.startswith(HEAD_PREFIXES):  # e.g. eval --checkpoint default with a 4-class config
            raise I3DError(f"{source}: has no classifier for the configured {net.num_classes}-class "
                           f"head ({k}): use a checkpoint trained with this config")
    if missing:
        raise I3DError(f"{source}: lacks {len(missing)} parameters of the network ({missing[0]}, ...)")
    for k, p in take.items():
        if tuple(p.shape) != tuple(own[k].shape):
            if k.startswith(HEAD_PREFIXES):
                raise I3DError(f"{source}: its classifier has {p.shape[0]} classes, the configured "
                               f"head {own[k].shape[0]}: use a checkpoint trained with this config")
            raise I3DError(f"{source}: {k} has shape {tuple(p.shape)}, the network {tuple(own[k].shape)}")
    for k, p in take.items():  # set directly: load_param_into_net warns about the fresh head
        own[k].set_data(ms.Tensor(p.asnumpy()))
    return info


def load_for_eval(model_cfg: dict, checkpoint: str, num_classes: int):
    """The configured network with `checkpoint`'s weights: a training checkpoint of this tool,
    or anything `i3d convert` reads ('default' = DeepMind's Kinetics-400 weights)."""
    net = build_net(model_cfg, num_classes)
    flat = training_state(checkpoint, net.variant)
    if flat is None:
        load_pretrained(net, checkpoint, keep_head=True)
    else:  # a training checkpoint: every parameter of the configured network
        set_all(net.get_parameters(), flat, checkpoint)
    return net


def set_all(params, flat: dict, source: str):
    """Every parameter from `flat` (a training checkpoint), each checked first."""
    own = {p.name: p for p in params}
    check(flat, {k: p.shape for k, p in own.items()}, source)
    for k, p in own.items():
        p.set_data(ms.Tensor(flat[k], p.dtype))
