"""Malformed ds_configs, generated here from one valid base: every one must be refused at
``deepspeed.initialize`` with a message that names the dotted key path (and, where the issue
that asked for this listed the wording, says what is allowed).

Each case sets one key of the base to a bad value (or removes one); the key path that must appear
in the message is the case's id.

It lives in tests/ (the combined session): the set covers sections that ds-zero validates.
"""

import copy

import pytest
import torch

import deepspeed

BASE = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "Adam", "params": {"lr": 1e-3}}}
DELETE = object()

# (dotted key to set, bad value, dotted key the message must name, extra config to merge first)
_NUMBERS_POSITIVE = ["train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"]
_BOOLS = ["fp16.enabled", "bf16.enabled", "prescale_gradients", "wall_clock_breakdown", "dataloader_drop_last",
          "tensorboard.enabled", "zero_optimization.overlap_comm", "zero_optimization.contiguous_gradients",
          "checkpoint.unsafe_load", "comms_logger.enabled", "optimizer.params.amsgrad"]


def _cases():
    cases = []
    for key in _NUMBERS_POSITIVE:
        extra = {"train_batch_size": None} if key != "train_batch_size" else {}
        for bad in ("32", 0, -4, 2.5, True):
            cases.append((key, bad, key, extra))
    for key in _BOOLS:
        for bad in ("yes", "true"):
            cases.append((key, bad, key, {}))
    cases += [
        ("gradient_clipping", -1.0, "gradient_clipping", {}),
        ("gradient_clipping", "1.0", "gradient_clipping", {}),
        ("steps_per_print", 0, "steps_per_print", {}),
        ("gradient_predivide_factor", 0, "gradient_predivide_factor", {}),
        ("sequence_parallel_size", 0, "sequence_parallel_size", {}),
        ("communication_data_type", "float8", "communication_data_type", {}),
        ("nonfinite_gradients", "explode", "nonfinite_gradients", {}),
        ("checkpoint.tag_validation", "MAYBE", "checkpoint.tag_validation", {}),
        ("fp16.initial_scale_power", 100, "fp16.initial_scale_power", {"fp16": {"enabled": True}}),
        ("fp16.initial_scale_power", -1, "fp16.initial_scale_power", {"fp16": {"enabled": True}}),
        ("fp16.initial_scale_power", "16", "fp16.initial_scale_power", {"fp16": {"enabled": True}}),
        ("fp16.loss_scale", -1.0, "fp16.loss_scale", {"fp16": {"enabled": True}}),
        ("fp16.loss_scale_window", 0, "fp16.loss_scale_window", {"fp16": {"enabled": True}}),
        ("fp16.hysteresis", 0, "fp16.hysteresis", {"fp16": {"enabled": True}}),
        ("fp16.min_loss_scale", 0, "fp16.min_loss_scale", {"fp16": {"enabled": True}}),
        ("zero_optimization.stage", 7, "zero_optimization.stage", {}),
        ("zero_optimization.stage", "2", "zero_optimization.stage", {}),
        ("zero_optimization.stage", 2.5, "zero_optimization.stage", {}),
        ("zero_optimization.stage", None, "zero_optimization.stage", {}),
        ("zero_optimization.reduce_bucket_size", 0, "zero_optimization.reduce_bucket_size", {}),
        ("zero_optimization.reduce_bucket_size", -5, "zero_optimization.reduce_bucket_size", {}),
        ("zero_optimization.allgather_bucket_size", 0, "zero_optimization.allgather_bucket_size", {}),
        ("zero_optimization.sub_group_size", 0, "zero_optimization.sub_group_size",
         {"zero_optimization": {"stage": 3}}),
        ("zero_optimization.offload_param", {"device": "cpu"}, "zero_optimization.offload_param",
         {"zero_optimization": {"stage": 1}}),
        ("zero_optimization.offload_optimizer.device", "gpu0", "zero_optimization.offload_optimizer.device",
         {"zero_optimization": {"stage": 2}}),
        ("optimizer.type", DELETE, "optimizer.type", {}),
        ("optimizer.type", "Adamm", "optimizer.type", {}),
        ("optimizer.type", 5, "optimizer.type", {}),
        ("optimizer.params", "lr", "optimizer.params", {}),
        ("optimizer.params.lr", -0.1, "optimizer.params.lr", {}),
        ("optimizer.params.lr", "fast", "optimizer.params.lr", {}),
        ("optimizer.params.learning_rate", 1e-3, "optimizer.params.learning_rate", {}),
        ("optimizer.params.betas", [0.9], "optimizer.params.betas", {}),
        ("optimizer.params.betas", 0.9, "optimizer.params.betas", {}),
        ("optimizer.params.betas", [0.9, 1.5], "optimizer.params.betas", {}),
        ("optimizer.params.betas", ["a", "b"], "optimizer.params.betas", {}),
        ("optimizer.params.eps", -1e-8, "optimizer.params.eps", {}),
        ("optimizer.params.weight_decay", -1, "optimizer.params.weight_decay", {}),
        ("optimizer.params.momentum", -0.5, "optimizer.params.momentum", {"optimizer": {"type": "SGD"}}),
        ("optimizer.params.nesterov", "yes", "optimizer.params.nesterov", {"optimizer": {"type": "SGD"}}),
        ("optimizer.params.betas", [0.9], "optimizer.params.betas", {"optimizer": {"type": "Lion"}}),
        ("optimizer.params.lr_decay", -1, "optimizer.params.lr_decay", {"optimizer": {"type": "Adagrad"}}),
        ("optimizer.params.momentum", 0.9, "optimizer.params.momentum", {"optimizer": {"type": "AdamW"}}),
        ("scheduler.type", DELETE, "scheduler.type", {"scheduler": {"type": "WarmupLR", "params": {}}}),
        ("scheduler.type", "Warmup", "scheduler.type", {"scheduler": {"type": "WarmupLR", "params": {}}}),
        ("scheduler.params.warmup_num_steps", -1, "scheduler.params.warmup_num_steps",
         {"scheduler": {"type": "WarmupLR", "params": {}}}),
        ("scheduler.params.warmup_max_lr", "high", "scheduler.params.warmup_max_lr",
         {"scheduler": {"type": "WarmupLR", "params": {}}}),
        ("scheduler.params.warmup_steps", 10, "scheduler.params.warmup_steps",
         {"scheduler": {"type": "WarmupLR", "params": {}}}),
    ]
    return cases


def _merge(dst, src):
    for k, v in src.items():
        if v is None:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def _build(key, value, extra):
    cfg = copy.deepcopy(BASE)
    _merge(cfg, extra)
    *parents, last = key.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return cfg


CASES = _cases()


def test_the_fuzz_set_is_large_enough():
    assert len(CASES) >= 60
    assert len({(k, repr(v), repr(e)) for k, v, _, e in CASES}) == len(CASES)  # no duplicates


@pytest.mark.parametrize("key,value,named,extra", CASES, ids=[f"{c[0]}={c[1]!r}" for c in CASES])
def test_malformed_config_is_refused_at_initialize_naming_the_key(key, value, named, extra):
    cfg = _build(key, value, extra)
    with pytest.raises((ValueError, NotImplementedError)) as info:
        deepspeed.initialize(model=torch.nn.Linear(4, 2), config=cfg)
    msg = str(info.value)
    assert named in msg, f"{cfg} -> {msg}"
    assert "(got 7) (got 7)" not in msg and "3 or 3" not in msg


def _error(cfg):
    with pytest.raises(ValueError) as info:
        deepspeed.initialize(model=torch.nn.Linear(4, 2), config=cfg)
    return str(info.value)


def test_the_wording_of_the_issue_cases():
    """The vague, coerced and doubled messages the fuzz set found, as they read now."""
    assert _error(_build("optimizer.params.learning_rate", 1e-3, {})).startswith(
        "ds_config.optimizer.params.learning_rate: unknown parameter of optimizer 'adam'; did you mean "
        "'optimizer.params.lr'?")
    assert _error(_build("optimizer.params.lr", -0.1, {})) == "ds_config.optimizer.params.lr: must be a number >= 0 (got -0.1)"
    assert _error(_build("optimizer.params.weight_decay", -1, {})) == \
        "ds_config.optimizer.params.weight_decay: must be a number >= 0 (got -1)"
    msg = _error(_build("zero_optimization.stage", 7, {}))
    assert msg.count("(got 7)") == 1 and "stage must be 0, 1, 2 or 3 (got 7)" in msg
    assert _error(_build("zero_optimization.stage", 2.5, {})) == \
        "ds_config.zero_optimization.stage: must be 0, 1, 2 or 3 (got 2.5)"  # was "0, 1, 2, 3 or 3"
    assert _error(_build("fp16.enabled", "yes", {})) == ("ds_config.fp16.enabled: must be true or false, written "
                                                         "without quotes (e.g. true), not a string (got 'yes')")
    assert "ds_config.fp16.initial_scale_power: Input should be less than or equal to 63 (got 100)" in _error(
        _build("fp16.initial_scale_power", 100, {"fp16": {"enabled": True}}))
    assert "optimizer.type is required when optimizer.params is given" in _error(
        {"train_micro_batch_size_per_gpu": 2, "optimizer": {"params": {"lr": 1e-3}}})


def test_valid_configs_still_pass():
    """The checks refuse only what is wrong: "auto", numbers written as numbers, DeepSpeed's keys."""
    cfg = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_clipping": "auto",
           "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "betas": [0.9, 0.95], "eps": 1e-8,
                                                     "weight_decay": 0.01, "torch_adam": True}},
           "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 1e-3,
                                                        "warmup_num_steps": 10}},
           "bf16": {"enabled": True}, "zero_optimization": {"stage": 2, "reduce_bucket_size": 5e8}}
    engine, *_ = deepspeed.initialize(model=torch.nn.Linear(4, 2), config=cfg)
    assert engine.zero_optimization_stage() == 2
