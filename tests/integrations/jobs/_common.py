"""What every integration job shares: a tiny random-init causal LM, a learnable data set, the
ds_config, and the result file each job writes for the test to check.

Nothing is downloaded: the model is built from a config here and the tokens are synthetic.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import torch

VOCAB = 64
SEQ = 32
STEPS = 30
MICRO = 4
EVAL_ROWS = 16
EVAL_SEED = 2


def cpu_deepspeed_state():
    """Accelerate's process state for DeepSpeed on gloo ranks of a machine without an accelerator.

    Accelerate picks the process-group backend from the devices it finds; on a CPU-only machine it
    finds none, so under DeepSpeed it would count one process per job (and the Trainer would fill
    ``train_batch_size`` for a world of 1). Made here first with ``backend="gloo"``, the state is
    reused by ``TrainingArguments(accelerator_config={"use_configured_state": True})`` and by
    ``Accelerator()``. On a GPU machine none of this is needed.
    """
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        return PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]


def tiny_config():
    from transformers import LlamaConfig

    # Note: small enough to run 30 steps on 2 CPU ranks in a few seconds, big enough that ZeRO-3
    # partitions and gathers real parameters (every weight has > 1 element per rank).
    return LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2 * SEQ,
                       tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def sequences(n: int, seed: int) -> torch.Tensor:
    """Learnable tokens: each row counts up by a row-specific stride from a random start, so the
    next token follows from the previous two (the loss falls far below ln(VOCAB) in 30 steps)."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(3, VOCAB, (n, 1), generator=g)
    stride = torch.randint(1, 4, (n, 1), generator=g)
    pos = torch.arange(SEQ).unsqueeze(0)
    return 3 + (start + stride * pos) % (VOCAB - 3)


class TokenDataset(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int):
        self.ids = sequences(n, seed)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long),
                "labels": self.ids[i]}


def ds_config(stage: int, dtype: str) -> dict:
    """A ds_config as the Hugging Face docs write it: "auto" wherever the Trainer fills the value."""
    zero: dict = {"stage": stage, "overlap_comm": False, "contiguous_gradients": True,
                  "reduce_bucket_size": "auto"}
    if stage == 3:
        zero.update({"stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
                     "stage3_gather_16bit_weights_on_model_save": True})
    # Note: on a GPU the Trainer is given --bf16 and the config says "bf16": {"enabled": "auto"}.
    # Without one, TrainingArguments refuses bf16=True unless use_cpu (which turns DeepSpeed off);
    # ACCELERATE_MIXED_PRECISION=bf16 (what `accelerate launch --mixed_precision bf16` sets) with no
    # bf16 section has Accelerate write "bf16": {"enabled": true} itself (bf16_env()).
    precision = {} if dtype == "bf16" else {"bf16": {"enabled": "auto"}}
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        **precision,
        "fp16": {"enabled": False},
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                  "weight_decay": "auto"}},
        "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                     "warmup_num_steps": "auto"}},
        "zero_optimization": zero,
        "steps_per_print": 1000,
        "wall_clock_breakdown": False,
    }


def bf16_env(dtype: str) -> None:
    """Ask Accelerate for bf16 the way ``accelerate launch --mixed_precision bf16`` does."""
    if dtype == "bf16":
        os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16"


def engine_stage(engine) -> int:
    """The ZeRO stage the engine runs at, asked of the engine (not read from the config or the log)."""
    return int(engine.zero_optimization_stage())


def write_result(out: pathlib.Path, **fields) -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(fields, indent=1))
    tmp.replace(out)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def tokenizer():
    """A word-level tokenizer built here (no download): token ``t<i>`` is id ``i``; ids 0-2 are
    pad / bos / eos, matching tiny_config()."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def texts(n: int, seed: int) -> list[str]:
    return [" ".join(f"t{i}" for i in row.tolist()) for row in sequences(n, seed)]
