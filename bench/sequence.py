"""Sequence parallelism: activation memory per rank and tokens/s, SP=1 vs SP=2 (and with tiling).

A Llama-like model (2 layers, d=256, 8 heads, GQA with 4 key/value heads, SwiGLU 4d, vocab 8192;
fp32, CPU, gloo) does forward and backward of the mean next-token loss on one sequence of 2k,
4k and 8k tokens:

* ``sp1``: one rank, the whole sequence;
* ``sp2``: 2 ranks, each half the sequence, attention through ``DistributedAttention``;
* ``sp2-tiled``: as ``sp2`` with ``TiledMLP`` (4 tiles) and ``TiledFusedLogitsLoss`` (4 tiles).

Reported per rank (a fresh set of processes per run, configurations alternating, the order
flipping every round; medians over rounds): activation bytes saved for backward (unique tensor
storages saved through ``torch.autograd.graph.saved_tensors_hooks`` and still alive, parameters
excluded, peak over forward and backward, so the tiles the tiled functions recompute count while
they live), peak RSS growth during the step
(``ru_maxrss`` after minus RSS before), and tokens/s (sequence length / median step time).

    python bench/sequence.py --rounds 3 --iters 2

Not measured here: DeepSpeed 0.19.8 (its DistributedAttention needs einops and a CUDA-era code
path; see the ds-sequence README for what was and was not compared).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import time
import weakref

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent
VOCAB, D, HEADS, KV, LAYERS = 8192, 256, 8, 4, 2


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class _Model(torch.nn.Module):
    def __init__(self, group, tiled):
        super().__init__()
        from deepspeed.sequence.layer import DistributedAttention

        torch.manual_seed(0)
        self.tiled = tiled
        self.embed = torch.nn.Embedding(VOCAB, D)
        self.layers = torch.nn.ModuleList()
        for _ in range(LAYERS):
            m = torch.nn.Module()
            m.qkv = torch.nn.Linear(D, D + 2 * KV * (D // HEADS), bias=False)
            m.o = torch.nn.Linear(D, D, bias=False)
            m.gate, m.up = torch.nn.Linear(D, 4 * D, bias=False), torch.nn.Linear(D, 4 * D, bias=False)
            m.down = torch.nn.Linear(4 * D, D, bias=False)
            m.n1, m.n2 = torch.nn.RMSNorm(D), torch.nn.RMSNorm(D)
            self.layers.append(m)
        self.norm = torch.nn.RMSNorm(D)
        self.head = torch.nn.Linear(D, VOCAB, bias=False)
        self.attn = DistributedAttention(self._local, group, scatter_idx=2, gather_idx=1) if group is not None else None

    @staticmethod
    def _local(q, k, v):  # [b, s, h, d]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return out.transpose(1, 2)

    @staticmethod
    def _mlp(m, x):
        return m.down(F.silu(m.gate(x)) * m.up(x))

    def forward(self, tokens, labels):
        from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledFusedLogitsLoss, TiledMLP

        x = self.embed(tokens)
        b, s, _ = x.shape
        dh = D // HEADS
        for m in self.layers:
            q, k, v = m.qkv(m.n1(x)).split([D, KV * dh, KV * dh], dim=-1)
            q, k, v = q.view(b, s, HEADS, dh), k.view(b, s, KV, dh), v.view(b, s, KV, dh)
            a = self.attn(q, k, v) if self.attn is not None else self._local(q, k, v)
            x = x + m.o(a.reshape(b, s, D))
            h = m.n2(x)
            x = x + (TiledMLP.apply(self._mlp, m, h, 4, None) if self.tiled else self._mlp(m, h))
        h = self.norm(x)
        if self.tiled:
            def loss_fn(head, xt, yt):
                return F.cross_entropy(head(xt).float(), yt.view(-1), reduction="sum")

            return TiledFusedLogitsLoss.apply(loss_fn, self.head, h, labels, None, 4, [self.head.weight], "sum") / labels.numel()
        return F.cross_entropy(self.head(h).view(-1, VOCAB), labels.reshape(-1))


def _worker(seq, mode, iters):
    import deepspeed.comm as dist

    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if world > 1 else 0
    group = dist.new_group(list(range(world))) if world > 1 else None
    model = _Model(group, tiled=mode.endswith("tiled"))
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (1, seq + 1), generator=g)
    x, y = tokens[:, :-1], tokens[:, 1:]
    n = seq // world
    x, y = x[:, rank * n:(rank + 1) * n], y[:, rank * n:(rank + 1) * n]
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    live = {"cur": 0, "peak": 0, "refs": {}}

    def release(ptr):
        n, nbytes = live["refs"][ptr]
        if n == 1:
            del live["refs"][ptr]
            live["cur"] -= nbytes
        else:
            live["refs"][ptr] = (n - 1, nbytes)

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr in params:
            return t
        n, nbytes = live["refs"].get(ptr, (0, t.untyped_storage().nbytes()))
        if n == 0:
            live["cur"] += nbytes
            live["peak"] = max(live["peak"], live["cur"])
        live["refs"][ptr] = (n + 1, nbytes)
        weakref.finalize(t, release, ptr)
        return t

    # warm-up, and the peak of live saved activations (forward and the backward's recomputation)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, y).backward()
    saved = live["peak"]
    model.zero_grad(set_to_none=True)
    times = []
    before = _rss_kb()
    for _ in range(iters):
        if world > 1:
            dist.barrier()
        t0 = time.perf_counter()
        model(x, y).backward()
        if world > 1:
            dist.barrier()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"saved_mb": saved / 2**20, "rss_growth_mb": max(peak - before, 0) / 1024, "step_s": min(times)}


def _run(seq, mode, iters):
    from deepspeed.testing.distributed import run_distributed

    world = 1 if mode == "sp1" else 2
    outs = run_distributed(_worker, world_size=world, args=(seq, mode, iters), timeout=1800)
    return {"saved_mb": max(o["saved_mb"] for o in outs), "rss_growth_mb": max(o["rss_growth_mb"] for o in outs),
            "tokens_per_s": seq / max(o["step_s"] for o in outs)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", default="2048,4096,8192")
    ap.add_argument("--modes", default="sp1,sp2,sp2-tiled")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "results" / "sequence.json"))
    args = ap.parse_args(argv)
    seqs = [int(s) for s in args.seqs.split(",")]
    modes = args.modes.split(",")
    runs: dict = {}
    for r in range(args.rounds):
        order = modes if r % 2 == 0 else modes[::-1]
        for seq in seqs:
            for mode in order:
                res = _run(seq, mode, args.iters)
                runs.setdefault(f"{seq}/{mode}", []).append(res)
                print(f"round {r} seq {seq} {mode}: {res}", flush=True)
    table = {}
    for key, rs in runs.items():
        table[key] = {k: statistics.median(x[k] for x in rs) for k in rs[0]}
    print("\n| seq | mode | saved activations / rank (MiB) | x sp1 | peak RSS growth / rank (MiB) | tokens/s |")
    print("|---|---|---|---|---|---|")
    for seq in seqs:
        base = table.get(f"{seq}/sp1", {}).get("saved_mb")
        for mode in modes:
            t = table[f"{seq}/{mode}"]
            ratio = f"{t['saved_mb'] / base:.2f}" if base else "-"
            print(f"| {seq} | {mode} | {t['saved_mb']:.0f} | {ratio} | {t['rss_growth_mb']:.0f} | "
                  f"{t['tokens_per_s']:.0f} |")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
                               "rounds": args.rounds, "iters": args.iters, "median": table, "runs": runs},
                              indent=1))
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
