"""The small models and the one-process reference the pipeline tests share."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec

DIM, HID, MB, STEPS, LR = 8, 16, 2, 10, 0.05


def tied_out(module, x):
    """The last layer reuses the first layer's weight, transposed (tied embeddings)."""
    return F.linear(x, module.weight.t())


def layers():
    """6 layers with parameters, the first and last tied: ``emb`` on stage 0 and the last stage."""
    return [
        TiedLayerSpec("emb", torch.nn.Linear, DIM, DIM, bias=False),
        LayerSpec(torch.nn.Linear, DIM, HID), torch.nn.Tanh(),
        LayerSpec(torch.nn.Linear, HID, HID), torch.nn.Tanh(),
        LayerSpec(torch.nn.Linear, HID, HID), torch.nn.Tanh(),
        LayerSpec(torch.nn.Linear, HID, DIM),
        TiedLayerSpec("emb", torch.nn.Linear, DIM, DIM, bias=False, forward_fn=tied_out),
    ]


def build(num_stages=None, topology=None, **kw):
    kw.setdefault("partition_method", "uniform")
    return PipelineModule(layers(), num_stages=num_stages, topology=topology, loss_fn=torch.nn.MSELoss(),
                          seed_layers=True, **kw)


def data(dp_rank=0, dp=1, gas=4, steps=STEPS):
    """The micro-batches data-parallel rank ``dp_rank`` reads, ``steps * gas`` of them."""
    g = torch.Generator().manual_seed(7)
    all_mb = [(torch.randn(MB, DIM, generator=g), torch.randn(MB, DIM, generator=g)) for _ in range(steps * gas * dp)]
    # step s, data-parallel rank r reads micro-batches [s*gas*dp + r*gas, ... + gas)
    return [all_mb[s * gas * dp + dp_rank * gas + i] for s in range(steps) for i in range(gas)]


def config(gas=4, dp=1, **extra):
    cfg = {"train_batch_size": MB * gas * dp, "train_micro_batch_size_per_gpu": MB,
           "optimizer": {"type": "SGD", "params": {"lr": LR}}, "steps_per_print": 1000}
    cfg.update(extra)
    return cfg


def reference(gas=4, dp=1, steps=STEPS, clip=0.0, norms=None):
    """One process, plain torch: the same layers (one stage), SGD over every micro-batch of the job
    (with ``clip``: torch's global-norm clipping; the norms before clipping go into ``norms``)."""
    model = build(num_stages=1)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    per_rank = [data(r, dp, gas, steps) for r in range(dp)]
    losses = []
    for s in range(steps):
        opt.zero_grad()
        total = 0.0
        for r in range(dp):
            for i in range(gas):
                x, y = per_rank[r][s * gas + i]
                loss = torch.nn.functional.mse_loss(model(x), y)
                (loss / (gas * dp)).backward()
                total += loss.item()
        if clip:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            if norms is not None:
                norms.append(float(norm))
        opt.step()
        losses.append(total / (gas * dp))
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}
