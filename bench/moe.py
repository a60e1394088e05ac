"""MoE layer forward+backward: ds-moe vs the PyPI ``deepspeed`` release, same shapes and weights.

One ``deepspeed.moe.layer.MoE`` (8 experts, each ``Linear(d, 4d) -> GELU -> Linear(4d, d)``,
d = 128) on 4096 tokens in one process, forward and backward of ``sum(out * target) + l_aux``:

* ``capacity``: top-2, ``capacity_factor=1.0``, token dropping with RTS (DeepSpeed's default path);
* ``dropless-skewed``: top-1, ``drop_tokens=False``, a router that sends about half the tokens to
  expert 0 (DeepSpeed pads every expert to the largest load; ds-moe computes only routed rows);
* ``dropless-skewed-top2``: the same with top-2.

Reported per run (a fresh process per configuration and implementation, alternating, the order
flipping every round): median seconds per iteration -> tokens/s; activation bytes saved for
backward (unique tensor storages reached through ``torch.autograd.graph.saved_tensors_hooks``,
parameters excluded) and peak RSS (``ru_maxrss``). The same worker code runs in both venvs:
``import deepspeed`` is this project in ours and ``deepspeed==0.19.8`` in the reference venv
(bench/_reference.py).

    python bench/moe.py --rounds 3 --iters 10 --reference-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

TOKENS, D, EXPERTS = 4096, 128, 8
CONFIGS = {
    "capacity": dict(k=2, capacity_factor=1.0, drop_tokens=True, skew=0.0),
    "dropless-skewed": dict(k=1, drop_tokens=False, skew=3.0),
    "dropless-skewed-top2": dict(k=2, drop_tokens=False, skew=3.0),
}


# -- worker (runs in either venv) --------------------------------------------------------------------
def _worker(name: str, iters: int, warmup: int, threads: int) -> dict:
    import resource
    import time

    import torch

    torch.set_num_threads(threads)
    from deepspeed.moe.layer import MoE

    cfg = dict(CONFIGS[name])
    skew = cfg.pop("skew")
    torch.manual_seed(0)
    expert = torch.nn.Sequential(torch.nn.Linear(D, 4 * D), torch.nn.GELU(), torch.nn.Linear(4 * D, D))
    moe = MoE(D, expert, num_experts=EXPERTS, min_capacity=4, top2_2nd_expert_sampling=False, **cfg)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(D, generator=g)
    u = u / u.norm()
    x = torch.randn(TOKENS, D, generator=g) + skew * u * (torch.rand(TOKENS, 1, generator=g) < 0.5)
    target = torch.randn(TOKENS, D, generator=g)
    with torch.no_grad():
        for p in moe.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        if skew:
            moe.deepspeed_moe.gate.wg.weight[0] = u * 4.0  # tokens along u prefer expert 0
    params = {p.untyped_storage().data_ptr() for p in moe.parameters()}

    def step(measure=False):
        saved = {}

        def pack(t):
            if measure:
                s = t.untyped_storage()
                if s.data_ptr() not in params:
                    saved[s.data_ptr()] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out, l_aux, counts = moe(x)
            loss = (out * target).sum() + l_aux
        loss.backward()
        moe.zero_grad(set_to_none=True)
        return sum(saved.values()), counts

    for _ in range(warmup):
        step()
    act_bytes, counts = step(measure=True)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    import deepspeed

    return {"impl": f"deepspeed {deepspeed.__version__}", "sec_per_iter": statistics.median(times),
            "tokens_per_s": TOKENS / statistics.median(times), "activation_bytes": act_bytes,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "max_load": int(counts.max()), "loads": [int(c) for c in counts]}


# -- driver ---------------------------------------------------------------------------------------------
def _run(python: str, name: str, args, env=None) -> dict:
    cmd = [python, os.path.abspath(__file__), "--worker", name, "--iters", str(args.iters), "--warmup",
           str(args.warmup), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=sorted(CONFIGS))
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--reference-python", help="python of the deepspeed==0.19.8 venv (bench/_reference.py --ensure)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "moe.json"))
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.iters, args.warmup, args.threads)))
        return 0
    sys.path.insert(0, HERE)
    from _reference import reference_env

    impls = [("ours", sys.executable, None)]
    if args.reference_python:
        import pathlib

        impls.append(("deepspeed", args.reference_python,
                      reference_env(pathlib.Path(args.reference_python).resolve().parent.parent)))
    runs: dict = {c: {i[0]: [] for i in impls} for c in args.configs}
    for r in range(args.rounds):
        order = impls if r % 2 == 0 else impls[::-1]
        for c in args.configs:
            for label, py, env in order:
                res = _run(py, c, args, env)
                runs[c][label].append(res)
                print(f"round {r} {c:22s} {label:9s} {res['tokens_per_s']:9.0f} tok/s  act "
                      f"{res['activation_bytes'] / 2**20:7.1f} MiB  rss {res['peak_rss_mb']:7.1f} MiB  "
                      f"max load {res['max_load']}", flush=True)
    summary = {}
    print("\n| routing | ours tokens/s | DeepSpeed tokens/s | speed-up | ours act. MiB | DeepSpeed act. MiB | "
          "act. ratio | peak RSS MiB ours / DS |\n|---|---|---|---|---|---|---|---|")
    for c in args.configs:
        row = {}
        for label in runs[c]:
            rs = runs[c][label]
            row[label] = {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
                          "activation_mib": statistics.median(r["activation_bytes"] for r in rs) / 2**20,
                          "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs), "runs": rs}
        summary[c] = row
        o, d = row["ours"], row.get("deepspeed")
        if d:
            print(f"| {c} | {o['tokens_per_s']:.0f} | {d['tokens_per_s']:.0f} | "
                  f"{o['tokens_per_s'] / d['tokens_per_s']:.2f}x | {o['activation_mib']:.1f} | "
                  f"{d['activation_mib']:.1f} | {o['activation_mib'] / d['activation_mib']:.2f} | "
                  f"{o['peak_rss_mb']:.0f} / {d['peak_rss_mb']:.0f} |")
        else:
            print(f"| {c} | {o['tokens_per_s']:.0f} | - | - | {o['activation_mib']:.1f} | - | - | "
                  f"{o['peak_rss_mb']:.0f} / - |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": platform.platform(), "cpus": os.cpu_count(), "tokens": TOKENS, "d": D,
                   "experts": EXPERTS, "threads": args.threads, "iters": args.iters, "rounds": args.rounds,
                   "configs": CONFIGS, "results": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
