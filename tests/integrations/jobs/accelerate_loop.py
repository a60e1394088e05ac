"""An Accelerate training loop on this repo's DeepSpeed, run by ``accelerate launch --use_deepspeed``.

    accelerate launch --use_deepspeed --num_processes 2 --zero_stage 2 --gradient_accumulation_steps 2 \
        --gradient_clipping 1.0 accelerate_loop.py --out DIR
    accelerate launch --use_deepspeed --num_processes 2 --deepspeed_config_file ds.json \
        accelerate_loop.py --out DIR          # ds.json with an optimizer and "auto" values

With an ``optimizer`` section in the ds_config the loop passes ``DummyOptim`` / ``DummyScheduler``
(DeepSpeed builds both, Accelerate fills their "auto" values); without one it passes a torch AdamW.
Writes ``DIR/result.json``: per-step losses (mean over ranks), the engine's ZeRO stage, samples/s.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common as c  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=pathlib.Path, required=True)
    args = ap.parse_args()

    import deepspeed
    from accelerate import Accelerator
    from accelerate.utils import DummyOptim, DummyScheduler, InitProcessGroupKwargs, set_seed

    # Note: on a machine without an accelerator Accelerate finds no backend by itself (see
    # _common.cpu_deepspeed_state); this is the loop's way of saying gloo.
    accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")])
    set_seed(0)
    plugin = accelerator.state.deepspeed_plugin
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(c.tiny_config())
    data = torch.utils.data.DataLoader(c.TokenDataset(c.STEPS * c.MICRO * 2 * 2, seed=1), batch_size=c.MICRO,
                                       shuffle=True)
    if "optimizer" in plugin.deepspeed_config:
        opt = DummyOptim(model.parameters(), lr=3e-3, weight_decay=0.0)
        sched = DummyScheduler(opt, total_num_steps=c.STEPS, warmup_num_steps=1)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 2))
    model, opt, data, sched = accelerator.prepare(model, opt, data, sched)
    assert type(model) is deepspeed.DeepSpeedEngine, type(model)
    stage = c.engine_stage(model)
    gas = model.gradient_accumulation_steps()  # "auto" in a config file until prepare() fills it

    losses, micro_losses, steps = [], [], 0
    model.train()
    with c.Timer() as timer:
        for batch in data:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                micro_losses.append(accelerator.reduce(loss.detach().float(), "mean").item())
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # under DeepSpeed: the engine clips
                opt.step()
                sched.step()
                opt.zero_grad()
            if accelerator.sync_gradients:
                losses.append(sum(micro_losses) / len(micro_losses))
                micro_losses, steps = [], steps + 1
                if steps == c.STEPS:
                    break
    samples = steps * gas * c.MICRO * accelerator.num_processes
    c.write_result(args.out / "result.json", stage=stage, losses=losses, gas=gas,
                   world_size=accelerator.num_processes, global_steps=model.global_steps,
                   optimizer=type(model.optimizer).__name__, samples_per_second=samples / timer.seconds,
                   gradient_clipping=model.gradient_clipping(),
                   rank_env=os.environ.get("RANK"))


if __name__ == "__main__":
    main()
