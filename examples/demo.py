"""Train a small character-level GPT on Shakespeare with DeepSpeed on 2 CPU ranks, save a
checkpoint, and write a few lines of text from it.

    python examples/demo.py                    # the defaults: ~3-5 minutes on a 2-core machine
    python examples/demo.py --zero_stage 1     # the same with ZeRO (needs ds-zero)
    python examples/demo.py --steps 100        # shorter

Run without a launcher, the script starts itself under the ``deepspeed`` launcher
(``deepspeed --num_gpus 2 examples/demo.py ...``: two CPU processes talking over gloo). Each rank
trains on its own random windows of ``examples/data/shakespeare.txt``; ``deepspeed.initialize``
averages the gradients. Rank 0 prints progress, the engine writes the loss curve with its CSV
monitor, the checkpoint goes to ``<out_dir>/checkpoints/global_step<N>/`` in DeepSpeed's layout,
and a fresh model loaded from that checkpoint generates the sample text.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "shakespeare.txt")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--zero_stage", type=int, default=0, choices=[0, 1, 2, 3],
                        help="ZeRO stage (1-3 need the ds-zero package)")
    parser.add_argument("--num_ranks", type=int, default=2, help="Processes started by the launcher")
    parser.add_argument("--steps", type=int, default=600, help="Optimizer steps")
    parser.add_argument("--micro_batch", type=int, default=16, help="Sequences per rank per step")
    parser.add_argument("--seq_len", type=int, default=64, help="Characters per sequence")
    parser.add_argument("--n_layer", type=int, default=4)
    parser.add_argument("--n_embd", type=int, default=128)
    parser.add_argument("--lr", type=float, default=4e-3, help="Peak learning rate (AdamW)")
    parser.add_argument("--print_every", type=int, default=25, help="Steps between progress lines")
    parser.add_argument("--out_dir", default="demo_output", help="Checkpoints and the CSV loss log go here")
    parser.add_argument("--sample_chars", type=int, default=400, help="Characters generated at the end")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--local_rank", type=int, default=-1, help="Set by the deepspeed launcher")
    return parser.parse_args(argv)


# -- launching ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args, argv) -> int:
    """Start this script on ``num_ranks`` CPU ranks through the ``deepspeed`` launcher."""
    if args.zero_stage > 0:
        import importlib.util

        if importlib.util.find_spec("deepspeed.zero") is None:
            print(f"--zero_stage {args.zero_stage} needs the ds-zero package, which is not installed. "
                  f"Fix: pip install ds-zero (or run with --zero_stage 0)", file=sys.stderr)
            return 2
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(args.num_ranks),
           "--master_port", str(_free_port()), os.path.abspath(__file__)] + list(argv)
    print("launching: deepspeed --num_gpus {} {} {}".format(args.num_ranks, os.path.relpath(__file__),
                                                             " ".join(argv)).rstrip(), flush=True)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Note: the DeepSpeed logger's INFO lines (launcher commands, engine setup) would bury the
    # demo's own output; DS_LOG_LEVEL=info shows them again.
    env.setdefault("DS_LOG_LEVEL", "warning")
    return subprocess.call(cmd, env=env)


# -- data and model ----------------------------------------------------------------------------


class CharData:
    """The text as a tensor of character ids, and random training windows from it."""

    def __init__(self, path: str):
        import torch

        with open(path, encoding="utf-8") as fd:
            self.text = fd.read()
        self.chars = sorted(set(self.text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.ids = torch.tensor([self.stoi[c] for c in self.text], dtype=torch.long)

    def batch(self, generator, batch_size: int, seq_len: int):
        import torch

        starts = torch.randint(len(self.ids) - seq_len - 1, (batch_size,), generator=generator)
        x = torch.stack([self.ids[s:s + seq_len] for s in starts.tolist()])
        y = torch.stack([self.ids[s + 1:s + seq_len + 1] for s in starts.tolist()])
        return x, y

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


def _model(args, vocab_size: int):
    sys.path.insert(0, HERE)
    from gpt import GPT, GPTConfig

    return GPT(GPTConfig(vocab_size=vocab_size, n_layer=args.n_layer, n_embd=args.n_embd, n_head=4,
                         block_size=args.seq_len))


def ds_config(args, world_size: int) -> dict:
    return {
        "train_micro_batch_size_per_gpu": args.micro_batch,
        "gradient_accumulation_steps": 1,
        "train_batch_size": args.micro_batch * world_size,
        "steps_per_print": 10**9,  # the demo prints its own progress lines
        "gradient_clipping": 1.0,
        "optimizer": {"type": "AdamW", "params": {"lr": args.lr, "betas": [0.9, 0.99], "weight_decay": 0.0}},
        "scheduler": {"type": "WarmupCosineLR",
                      "params": {"total_num_steps": args.steps, "warmup_num_steps": min(30, args.steps // 10),
                                 "warmup_min_ratio": 0.0, "cos_min_ratio": 0.1}},
        "zero_optimization": {"stage": args.zero_stage},
        "csv_monitor": {"enabled": True, "output_path": args.out_dir, "job_name": "demo"},
    }


@__import__("torch").no_grad()
def generate(model, data: CharData, prompt: str, n_chars: int, block_size: int, seed: int) -> str:
    import torch

    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[data.stoi[c] for c in prompt]], dtype=torch.long)
    model.eval()
    for _ in range(n_chars):
        logits = model(ids[:, -block_size:])[:, -1, :]
        probs = torch.softmax(logits / 0.8, dim=-1)
        ids = torch.cat([ids, torch.multinomial(probs, 1, generator=gen)], dim=1)
    return data.decode(ids[0].tolist())


# -- training (one rank) ------------------------------------------------------------------------


def train(args) -> int:
    import torch

    import deepspeed

    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    torch.manual_seed(args.seed)  # same initial weights on every rank
    data = CharData(DATA)
    model = _model(args, len(data.chars))
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(),
                                           config=ds_config(args, world_size))
    # The engine's throughput timer draws a progress bar on rank 0 when stdout is a terminal;
    # give it the step count, and end its line before printing one of ours.
    tput = getattr(engine, "tput_timer", None)
    if tput is not None and hasattr(tput, "progress"):
        tput.total_steps = args.steps
    else:
        tput = None

    def say(msg: str) -> None:
        if rank == 0:
            if tput is not None:
                tput.close()
            print(msg, flush=True)

    n_params = sum(p.numel() for p in model.parameters())
    say(f"rank 0 of {world_size}: GPT with {n_params / 1e6:.2f}M parameters, vocabulary of "
        f"{len(data.chars)} characters, {len(data.text) / 1e3:.0f}K characters of Shakespeare; "
        f"ZeRO stage {args.zero_stage}; {args.steps} steps of {args.micro_batch}x{args.seq_len} characters per rank")

    gen = torch.Generator().manual_seed(args.seed + 1000 * (rank + 1))  # each rank its own windows
    losses: list[float] = []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = data.batch(gen, args.micro_batch, args.seq_len)
        loss = engine(x, y)
        engine.backward(loss)
        engine.step()
        mean = loss.detach().clone()
        torch.distributed.all_reduce(mean)
        losses.append(mean.item() / world_size)
        if tput is not None:
            tput.progress(loss=losses[-1])
        if step == 1 or step % args.print_every == 0 or step == args.steps:
            elapsed = time.perf_counter() - start
            recent = sum(losses[-args.print_every:]) / len(losses[-args.print_every:])
            rate = step * args.micro_batch * args.seq_len * world_size / elapsed
            say(f"step {step:4d}/{args.steps} | loss {recent:.3f} | lr {engine.get_lr()[0]:.2e} | "
                f"{rate:,.0f} chars/s | {elapsed:5.1f}s")

    ckpt_dir = os.path.join(args.out_dir, "checkpoints")
    engine.save_checkpoint(ckpt_dir)
    torch.distributed.barrier()
    if rank != 0:
        return 0

    first = losses[0]
    last = sum(losses[-20:]) / len(losses[-20:])
    say(f"\nloss {first:.3f} -> {last:.3f} (mean of the last {min(20, len(losses))} steps): "
        f"fell by {100 * (1 - last / first):.0f}%")
    with open(os.path.join(ckpt_dir, "latest")) as fd:
        tag = fd.read().strip()
    path = os.path.join(ckpt_dir, tag, "mp_rank_00_model_states.pt")
    say(f"checkpoint: {path}")
    fresh = _model(args, len(data.chars))
    fresh.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["module"])
    sample = generate(fresh, data, "HAMLET.\n", args.sample_chars, args.seq_len, args.seed)
    say("\n--- sample from the checkpoint " + "-" * 40 + "\n" + sample + "\n" + "-" * 71)
    with open(os.path.join(args.out_dir, "summary.json"), "w") as fd:
        json.dump({"first_loss": first, "final_loss": last, "steps": args.steps, "world_size": world_size,
                   "zero_stage": args.zero_stage, "checkpoint": path, "sample": sample,
                   "seconds": time.perf_counter() - start}, fd, indent=2)
    if not math.isfinite(last) or last > first / 2:
        say(f"warning: the loss fell by less than half ({first:.3f} -> {last:.3f})")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if "RANK" not in os.environ or "LOCAL_RANK" not in os.environ:
        return _launch(args, [a for a in argv if not a.startswith("--local_rank")])
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
