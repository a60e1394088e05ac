"""The zero-bubble split of a stage's backward: B (input gradient) now, W (weight gradients) later.

The stage's forward runs layer by layer with each layer's input detached into a leaf, so every
layer has its own small graph. B walks the layers backwards computing only the input gradients
(``torch.autograd.grad`` with respect to the layer inputs: autograd then skips the weight
gradients), keeping each layer's output gradient; W later runs each layer's graph again with
respect to its parameters only. No forward is recomputed and no gradient is computed twice.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from deepspeed.runtime.pipe.p2p import needs_grad


def _leafs(x):
    def one(t):
        if torch.is_tensor(t) and needs_grad(t):
            return t.detach().requires_grad_(True)
        return t

    return tuple(one(t) for t in x) if isinstance(x, tuple) else one(x)


def _flagged(x) -> list:
    items = x if isinstance(x, tuple) else (x,)
    return [t for t in items if torch.is_tensor(t) and needs_grad(t)]


def _params_of(f, stage_params):
    mod = f if isinstance(f, nn.Module) else None
    if mod is None and isinstance(f, partial) and f.args and isinstance(f.args[0], nn.Module):
        mod = f.args[0]
    if mod is None:
        return None if stage_params else []  # an opaque callable: W runs against every parameter
    return [p for p in mod.parameters() if p.requires_grad]


class Record:
    __slots__ = ("inputs", "outputs", "params", "out_grads")

    def __init__(self, inputs, outputs, params):
        self.inputs, self.outputs, self.params, self.out_grads = inputs, outputs, params, None


def forward(layers, stage_input, stage_params):
    """Run ``layers`` (``[(index, callable)]``) keeping one :class:`Record` per layer."""
    records, x = [], stage_input
    for _, f in layers:
        xin = _leafs(x)
        y = f(xin)
        records.append(Record(xin, y, _params_of(f, stage_params)))
        x = y
    return x, records


def backward_input(records, out_grads, stage_params) -> list:
    """B: from the gradients of the last layer's flagged outputs down to the stage input's; returns
    the gradients of the stage input's flagged tensors."""
    grads = list(out_grads)
    for rec in reversed(records):
        outs = _flagged(rec.outputs)
        ins = _flagged(rec.inputs)
        has_params = rec.params is None or bool(rec.params)
        if has_params:
            rec.out_grads = (outs, grads)
        if ins and outs:
            got = torch.autograd.grad(outs, ins, grads, retain_graph=has_params, allow_unused=True)
            grads = [g if g is not None else torch.zeros_like(t) for g, t in zip(got, ins)]
        else:
            grads = [torch.zeros_like(t) for t in ins]
    return grads


def backward_weight(records, stage_params) -> None:
    """W: the parameter gradients of every layer (accumulated into ``.grad``); frees the graphs."""
    for rec in records:
        if rec.out_grads is None:
            continue
        outs, grads = rec.out_grads
        params = rec.params if rec.params is not None else stage_params
        if outs and params:
            torch.autograd.backward(outs, grads, inputs=params)
        rec.out_grads = None
