"""The model every benchmark uses: the GPT of examples/gpt.py at 4 layers, hidden 256, 4 heads,
vocabulary 1000, sequence 128, micro-batch 4 (about 3.7M parameters)."""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from gpt import GPT, GPTConfig  # noqa: E402

VOCAB, N_LAYER, N_EMBD, N_HEAD, SEQ, MICRO_BATCH = 1000, 4, 256, 4, 128, 4


def build_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, n_layer=N_LAYER, n_embd=N_EMBD, n_head=N_HEAD, block_size=SEQ))


def make_batch(step: int, rank: int, micro_batch: int = MICRO_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic random tokens for (step, rank): inputs and next-token targets."""
    g = torch.Generator().manual_seed(1_000_003 * step + rank)
    tokens = torch.randint(0, VOCAB, (micro_batch, SEQ + 1), generator=g)
    return tokens[:, :-1], tokens[:, 1:]
