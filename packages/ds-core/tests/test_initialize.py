"""deepspeed.initialize: signature, config sources, optimizer/scheduler/parameter forms, dataloader."""

import argparse
import inspect
import json
import os
import sys

import pytest
import torch

import deepspeed
from deepspeed.runtime.config import DeepSpeedConfig
from deepspeed.runtime.feature import DeepSpeedFeature
from deepspeed.runtime.lr_schedules import WarmupLR
from deepspeed.testing.distributed import run_distributed

sys.path.insert(0, os.path.dirname(__file__))
from _engine_models import model  # noqa: E402

CFG = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "SGD", "params": {"lr": 0.1}}}


def test_signature_and_return_tuple():
    params = list(inspect.signature(deepspeed.initialize).parameters)
    assert params == ["args", "model", "optimizer", "model_parameters", "training_data", "lr_scheduler", "mpu",
                      "dist_init_required", "collate_fn", "config", "config_params"]
    out = deepspeed.initialize(model=model(), config=CFG)
    assert len(out) == 4
    engine, opt, dl, sched = out
    assert opt is engine.optimizer and isinstance(opt, torch.optim.SGD) and dl is None and sched is None


def test_config_params_alias_and_args_deepspeed_config(tmp_path):
    engine, *_ = deepspeed.initialize(model=model(), config_params=CFG)
    assert engine.train_micro_batch_size_per_gpu() == 2
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({**CFG, "train_micro_batch_size_per_gpu": 3}))
    parser = deepspeed.add_config_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--deepspeed", "--deepspeed_config", str(path)])
    engine, *_ = deepspeed.initialize(args=args, model=model())
    assert engine.train_micro_batch_size_per_gpu() == 3
    with pytest.raises(ValueError, match="both as args.deepspeed_config and as the config argument"):
        deepspeed.initialize(args=args, model=model(), config=CFG)
    with pytest.raises(ValueError, match="no DeepSpeed config"):
        deepspeed.initialize(model=model())
    with pytest.raises(ValueError, match="config_params is the legacy name of config"):
        deepspeed.initialize(model=model(), config=CFG, config_params={"train_batch_size": 4})


def test_model_parameters_forms():
    m = model()
    # an iterator (filter), as Lightning passes it
    m.layers[0].weight.requires_grad_(False)
    engine, opt, *_ = deepspeed.initialize(model=m, model_parameters=filter(lambda p: p.requires_grad, m.parameters()),
                                           config=CFG)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(m.parameters())) - 1
    # param groups with their own lr
    m = model()
    groups = [{"params": m.layers.parameters(), "lr": 0.5}, {"params": m.head.parameters()}]
    engine, opt, *_ = deepspeed.initialize(model=m, model_parameters=groups, config=CFG)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1]
    # a list of tensors
    m = model()
    engine, opt, *_ = deepspeed.initialize(model=m, model_parameters=list(m.head.parameters()), config=CFG)
    assert len(opt.param_groups[0]["params"]) == 2


def test_optimizer_and_scheduler_objects_or_callables():
    m = model()
    client = torch.optim.Adam(m.parameters(), lr=1e-3)
    sched = WarmupLR(client, warmup_max_lr=1e-3, warmup_num_steps=10)
    engine, opt, _, s = deepspeed.initialize(model=m, optimizer=client, lr_scheduler=sched,
                                             config={"train_micro_batch_size_per_gpu": 2})
    assert opt is client and s is sched
    engine, opt, _, s = deepspeed.initialize(
        model=model(), optimizer=lambda params: torch.optim.SGD(params, lr=0.3),
        lr_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
        config={"train_micro_batch_size_per_gpu": 2})
    assert isinstance(opt, torch.optim.SGD) and isinstance(s, torch.optim.lr_scheduler.StepLR)
    engine.backward(engine(torch.randn(2, 8), torch.randn(2, 4)))
    engine.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.15)
    with pytest.raises(ValueError, match="ds_config.optimizer.type='sgd'|optimizer.type='SGD'"):
        deepspeed.initialize(model=model(), optimizer=client, config=CFG)


def test_config_scheduler_wins_over_client_callable():
    cfg = {**CFG, "scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": 0.1, "warmup_num_steps": 5}}}
    _, _, _, s = deepspeed.initialize(model=model(), lr_scheduler=lambda o: None, config=cfg)
    assert type(s).__name__ in deepspeed.runtime.lr_schedules.VALID_LR_SCHEDULES


class _Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"x": torch.full((8,), float(i)), "i": i}


def _collate(items):
    return torch.stack([it["x"] for it in items]), [it["i"] for it in items]


def _dataloader_body(drop_last):
    cfg = {"train_micro_batch_size_per_gpu": 3, "dataloader_drop_last": drop_last}  # no optimizer: fast ranks
    _, _, dl, _ = deepspeed.initialize(model=model(), training_data=_Pairs(), collate_fn=_collate, config=cfg)
    return [ids for _, ids in dl], len(dl)


def test_training_data_gives_a_distributed_dataloader():
    res = run_distributed(_dataloader_body, args=(False,))
    seen = [i for batches, _ in res for ids in batches for i in ids]
    assert sorted(seen) == list(range(10)) and [n for _, n in res] == [2, 2]
    assert [len(b) for b in res[0][0]] == [3, 2]
    dropped = run_distributed(_dataloader_body, args=(True,))
    assert [[len(b) for b in batches] for batches, _ in dropped] == [[3], [3]]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="model is None"):
        deepspeed.initialize(config=CFG)
    with pytest.raises(ValueError, match="ds_config.optimizer.type: 'NoSuchOpt' is not a DeepSpeed optimizer"):
        deepspeed.initialize(model=model(), config={**CFG, "optimizer": {"type": "NoSuchOpt", "params": {}}})
    with pytest.raises(ValueError, match="'max_grad_norm' is not supported"):
        deepspeed.initialize(model=model(), config={**CFG, "optimizer": {"type": "Adam", "params": {"max_grad_norm": 1}}})


class _Pipe(torch.nn.Linear):
    """Stands for a model type a feature trains with its own engine (a pipeline module)."""


class _PipeEngine(deepspeed.DeepSpeedEngine):
    pass


class _Feature(DeepSpeedFeature):
    name = "probe"

    def config_attributes(self, config):
        return {"steps_per_print": 7}

    def engine_class(self, model, config):
        assert isinstance(config, DeepSpeedConfig)  # one config type for every hook
        return _PipeEngine if isinstance(model, _Pipe) else None


def test_feature_config_attributes_and_engine_class(monkeypatch):
    """A feature sets DeepSpeedConfig attributes (contract 2.0's config_attributes; 1.0 had a
    transform_config hook over the raw dict) and picks the engine class for its model type."""
    from deepspeed import _features

    monkeypatch.setattr(_features, "installed", lambda: _features.FeatureSet.from_features(_Feature()))
    engine, *_ = deepspeed.initialize(model=_Pipe(2, 2), config={"train_micro_batch_size_per_gpu": 1})
    assert type(engine) is _PipeEngine and engine.steps_per_print() == 7 and "steps_per_print" not in engine.config
    engine, *_ = deepspeed.initialize(model=model(), config={"train_micro_batch_size_per_gpu": 1})
    assert type(engine) is deepspeed.DeepSpeedEngine


def test_runtime_utils_move_to_device():
    from deepspeed.runtime.utils import move_to_device

    item = {"a": [torch.ones(1, dtype=torch.float64), (torch.zeros(2), 3)], "b": "text"}
    moved = move_to_device(item, torch.device("meta"))
    assert moved["a"][0].device.type == "meta" and moved["a"][1][0].device.type == "meta"
    assert moved["a"][1][1] == 3 and moved["b"] == "text"
    kept = move_to_device(item, torch.device("meta"), criterion_func=lambda t: torch.is_tensor(t) and t.dim() == 2)
    assert kept["a"][0].device.type == "cpu"
