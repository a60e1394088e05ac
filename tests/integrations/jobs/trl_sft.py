"""A TRL ``SFTTrainer`` run under ZeRO-3 on this repo's DeepSpeed (text in, tokenizer built here).

    torchrun --nproc_per_node 2 trl_sft.py --out DIR

Writes ``DIR/result.json``: per-step losses, the engine's ZeRO stage, samples/s, and whether
gathering every ZeRO-3 parameter (``deepspeed.zero.GatheredParameters``, what TRL's generation
helpers do before ``generate``) gave full shapes, generated, and partitioned them again after.
(TRL's own ``unwrap_model_for_generation`` also removes and re-adds DeepSpeed's internal
parameter-offload hooks, which this repo's ZeRO-3 does not expose: not run here.)
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
    ap.add_argument("--local_rank", type=int, default=-1)
    args = ap.parse_args()

    import deepspeed
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(0)
    c.cpu_deepspeed_state()
    cfg = SFTConfig(
        output_dir=str(args.out), per_device_train_batch_size=c.MICRO, max_steps=c.STEPS, learning_rate=3e-3,
        warmup_steps=1, weight_decay=0.0, logging_steps=1, save_strategy="no", report_to="none",
        deepspeed=c.ds_config(3, "fp32"), accelerator_config={"use_configured_state": True},
        bf16=False, max_length=c.SEQ + 2, dataloader_num_workers=0, disable_tqdm=True, seed=0,
    )
    model = AutoModelForCausalLM.from_config(c.tiny_config())
    assert all(hasattr(p, "ds_numel") for p in model.parameters()), "zero.Init did not partition the model"
    tok = c.tokenizer()
    data = Dataset.from_dict({"text": c.texts(c.STEPS * c.MICRO * 2, seed=1)})
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok)
    out = trainer.train()
    engine = trainer.model_wrapped
    assert type(engine) is deepspeed.DeepSpeedEngine, type(engine)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]

    # Generation under ZeRO-3 as TRL does it: gather every parameter, generate, re-partition.
    prompt = tok(" ".join(c.texts(1, seed=3)[0].split()[:8]), return_tensors="pt")
    unwrapped = trainer.accelerator.unwrap_model(engine)
    with deepspeed.zero.GatheredParameters(list(unwrapped.parameters())):
        full = {n: tuple(p.shape) for n, p in unwrapped.named_parameters()}
        gen = unwrapped.generate(**prompt, max_new_tokens=4, do_sample=False)
    partitioned_after = all(p.numel() == 0 for p in engine.module.parameters() if not p.ds_persist)
    c.write_result(args.out / "result.json", stage=c.engine_stage(engine), losses=losses,
                   samples_per_second=out.metrics["train_samples_per_second"], world_size=int(os.environ["WORLD_SIZE"]),
                   gathered_shapes_ok=full["lm_head.weight"] == (c.VOCAB, 64), generated=gen.shape[1] - prompt["input_ids"].shape[1],
                   partitioned_after=partitioned_after, torch=torch.__version__)


if __name__ == "__main__":
    main()
