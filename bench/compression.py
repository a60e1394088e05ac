"""Post-training quantization on the demo's Shakespeare GPT: ds-compression's ZeroQuant vs torchao
vs fp32, for int8 weight-only, int4 weight-only (groups of 32) and W8A8 (token-wise int8
activations, per-row int8 weights).

The GPT of examples/gpt.py (4 layers, 256 wide, 4 heads, sequence 128, character vocabulary) is
trained ``--steps`` AdamW steps on the first 90% of examples/data/shakespeare.txt, then every
variant quantizes the Linear layers of its blocks (the vocabulary head stays fp32 everywhere).
Reported per variant: perplexity on 64 held-out windows and its change against fp32, serialized
model bytes (``torch.save`` of the state dict), and CPU tokens/s of a forward pass over a batch
of ``--batch`` windows, timed in rounds that alternate the variants (the order rotates every
round; this machine is shared), median over rounds. torchao is optional (``nox -s
bench_compression`` installs it); without it only ours and fp32 are measured.

    python bench/compression.py --steps 200 --rounds 15 --out bench/results/compression.json
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "examples"))
SEQ = 128


def load_text():
    with open(os.path.join(ROOT, "examples", "data", "shakespeare.txt"), encoding="utf-8") as fd:
        text = fd.read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    return torch.tensor([stoi[c] for c in text], dtype=torch.long), len(chars)


def train(ids, vocab, steps, batch=8, lr=3e-3):
    from gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab, n_layer=4, n_embd=256, n_head=4, block_size=SEQ))
    split = int(len(ids) * 0.9)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    for step in range(steps):
        starts = torch.randint(split - SEQ - 1, (batch,), generator=g).tolist()
        x = torch.stack([ids[s:s + SEQ] for s in starts])
        y = torch.stack([ids[s + 1:s + SEQ + 1] for s in starts])
        loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"  train step {step}: loss {loss.item():.3f}", flush=True)
    return model.eval()


def windows(ids, n=64):
    start = int(len(ids) * 0.9)
    x = torch.stack([ids[start + i * SEQ:start + (i + 1) * SEQ] for i in range(n)])
    y = torch.stack([ids[start + i * SEQ + 1:start + (i + 1) * SEQ + 1] for i in range(n)])
    return x, y


@torch.no_grad()
def perplexity(model, x, y, batch=16):
    total, count = 0.0, 0
    for i in range(0, len(x), batch):
        logits = model(x[i:i + batch])
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i:i + batch].reshape(-1),
                                 reduction="sum").item()
        count += y[i:i + batch].numel()
    return math.exp(total / count)


def nbytes(model) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def ours(model, scheme, group):
    from deepspeed.compression.zeroquant import quantize_zeroquant

    return quantize_zeroquant(copy.deepcopy(model), scheme, group, modules=[r"^blocks\."])


def torchao_variant(model, scheme, group):
    """torchao's equivalent, and the name of the config used."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    if scheme == "w8":
        config = Int8WeightOnlyConfig()
    elif scheme == "w8a8":
        config = Int8DynamicActivationInt8WeightConfig()
    else:
        # Note: torchao 0.18 has no packed int4 CPU layout for x86 any more (the "opaque"
        # Int4WeightOnlyConfig format is gone; "plain" needs a GPU kernel library); its CPU int4
        # weight-only path is IntxWeightOnlyConfig, int4 values kept unpacked in int8.
        from torchao.quantization import IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerGroup

        config = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group))
    m = copy.deepcopy(model)
    quantize_(m, config, filter_fn=lambda mod, fqn: isinstance(mod, torch.nn.Linear) and fqn.startswith("blocks."))
    return m, type(config).__name__


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200, help="training steps before quantizing")
    ap.add_argument("--rounds", type=int, default=15, help="timing rounds (alternating variants)")
    ap.add_argument("--iters", type=int, default=3, help="forward passes per variant per round")
    ap.add_argument("--batch", type=int, default=8, help="windows of 128 tokens per forward pass")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "compression.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import torchao
        have_ao = torchao.__version__
    except ImportError:
        have_ao = None
    ids, vocab = load_text()
    print(f"training the Shakespeare GPT for {args.steps} steps ...", flush=True)
    fp32 = train(ids, vocab, args.steps)
    x, y = windows(ids)
    variants = {"fp32": fp32}
    configs: dict[str, str] = {}
    for scheme, group in (("w8", 256), ("w4", 32), ("w8a8", 256)):
        variants[f"ours {scheme}"] = ours(fp32, scheme, group)
        if have_ao:
            variants[f"torchao {scheme}"], configs[scheme] = torchao_variant(fp32, scheme, group)
    results = {name: {"perplexity": perplexity(m, x, y), "bytes": nbytes(m)} for name, m in variants.items()}
    base = results["fp32"]["perplexity"]
    batch = x[:args.batch]
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for m in variants.values():
            m(batch)  # warm-up
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    variants[n](batch)
                times[n].append(args.iters * batch.numel() / (time.perf_counter() - t0))
    for n in names:
        results[n]["tokens_per_s"] = statistics.median(times[n])
        results[n]["perplexity_delta"] = results[n]["perplexity"] / base - 1
    meta = {"torch": torch.__version__, "torchao": have_ao, "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "steps": args.steps,
            "rounds": args.rounds, "iters": args.iters, "batch_tokens": batch.numel(), "torchao_configs": configs}
    print(f"\nfp32 perplexity {base:.4f}; torch {meta['torch']}, torchao {have_ao}, {meta['threads']} threads, "
          f"batch {batch.numel()} tokens, median of {args.rounds} alternating rounds\n")
    print("| variant | perplexity | vs fp32 | model bytes | tokens/s | vs fp32 |")
    print("|---|---|---|---|---|---|")
    fp_tps = results["fp32"]["tokens_per_s"]
    for n in names:
        r = results[n]
        print(f"| {n} | {r['perplexity']:.4f} | {100 * r['perplexity_delta']:+.3f}% | {r['bytes'] / 1e6:.2f} MB | "
              f"{r['tokens_per_s']:.0f} | {r['tokens_per_s'] / fp_tps:.2f}x |")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fd:
        json.dump({"meta": meta, "results": results, "samples": times}, fd, indent=1)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
