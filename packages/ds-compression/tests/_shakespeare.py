"""The demo's model and data (examples/gpt.py, examples/data/shakespeare.txt) trained briefly, and
its perplexity on held-out text; shared by the ZeroQuant tests and bench/compression.py."""

from __future__ import annotations

import math
import os
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TEXT = os.path.join(ROOT, "examples", "data", "shakespeare.txt")


def available() -> bool:
    return os.path.isfile(TEXT) and os.path.isfile(os.path.join(ROOT, "examples", "gpt.py"))


def load_text() -> tuple[torch.Tensor, int]:
    with open(TEXT, encoding="utf-8") as fd:
        text = fd.read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    return torch.tensor([stoi[c] for c in text], dtype=torch.long), len(chars)


def build(vocab: int, n_layer: int = 2, n_embd: int = 128, seq: int = 64, seed: int = 0):
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from gpt import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, n_layer=n_layer, n_embd=n_embd, n_head=4, block_size=seq))


def train(model, ids: torch.Tensor, steps: int, seq: int = 64, batch: int = 16, lr: float = 3e-3, seed: int = 0):
    """AdamW on random windows of the first 90% of the text."""
    split = int(len(ids) * 0.9)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    model.train()
    for _ in range(steps):
        starts = torch.randint(split - seq - 1, (batch,), generator=g)
        x = torch.stack([ids[s:s + seq] for s in starts.tolist()])
        y = torch.stack([ids[s + 1:s + seq + 1] for s in starts.tolist()])
        loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def eval_windows(ids: torch.Tensor, seq: int = 64, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fixed, non-overlapping windows of the held-out last 10% of the text."""
    start = int(len(ids) * 0.9)
    x = torch.stack([ids[start + i * seq:start + (i + 1) * seq] for i in range(n)])
    y = torch.stack([ids[start + i * seq + 1:start + (i + 1) * seq + 1] for i in range(n)])
    return x, y


@torch.no_grad()
def perplexity(model, x: torch.Tensor, y: torch.Tensor, batch: int = 16) -> float:
    total, count = 0.0, 0
    for i in range(0, x.shape[0], batch):
        logits = model(x[i:i + batch])
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i:i + batch].reshape(-1),
                                 reduction="sum").item()
        count += y[i:i + batch].numel()
    return math.exp(total / count)
