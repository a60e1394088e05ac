"""How features compose (deepspeed._features, rules of deepspeed.protocols.feature): each rule is
exercised with two fake features, directly and through deepspeed.initialize."""

import os
import sys

import pytest
import torch

import deepspeed
from deepspeed import _features
from deepspeed._features import FeatureError, FeatureSet
from deepspeed.protocols import DeepSpeedFeature, EngineOptimizer, Order
from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

sys.path.insert(0, os.path.dirname(__file__))
from _engine_models import batch, model  # noqa: E402

CFG = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "SGD", "params": {"lr": 0.1}}}


def _feature(name, order=Order.DEFAULT, **hooks):
    """A feature class named ``name`` whose hooks are the given functions (self omitted)."""
    body = {"name": name, "order": order, "DS_PLUGIN_API": "2.0"}
    for hook, fn in hooks.items():
        body[hook] = (lambda f: lambda self, *a, **k: f(*a, **k))(fn)
    return type(f"F_{name}", (DeepSpeedFeature,), body)()


def _install(monkeypatch, *features):
    monkeypatch.setattr(_features, "installed", lambda: FeatureSet.from_features(*features))


# -- chain hooks run in declared order, each seeing the previous result ----------------------


def test_transform_model_chain_follows_order_not_registration(monkeypatch):
    seen = []

    def tag(label):
        def transform(model, config):
            seen.append(label)
            model.tags = getattr(model, "tags", ()) + (label,)
            return model
        return transform

    late = _feature("zz_partition", Order.PARTITION, transform_model=tag("partition"))
    early = _feature("aa_rewrite", Order.MODEL_REWRITE, transform_model=tag("rewrite"))
    _install(monkeypatch, late, early)
    engine, *_ = deepspeed.initialize(model=model(), config=CFG)
    assert engine.module.tags == ("rewrite", "partition") and seen == ["rewrite", "partition"]


class _Regrouped(torch.optim.SGD):
    """What a parameter-grouping feature returns: another torch optimizer."""


class _Driver(EngineOptimizer):
    """A minimal optimizer that takes over the step (what ZeRO does)."""

    def __init__(self, inner):
        self.optimizer = inner
        self.steps = 0

    def backward(self, loss, retain_graph=False):
        loss.backward(retain_graph=retain_graph)

    def step(self):
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.steps += 1
        return True

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none=set_to_none)


def test_wrap_optimizer_chain_each_sees_the_previous_result(monkeypatch):
    received = {}

    def regroup(engine, opt):
        received["groups"] = type(opt).__name__
        return _Regrouped(opt.param_groups, lr=0.05)

    def take_over(engine, opt):
        received["partition"] = type(opt).__name__
        return _Driver(opt)

    _install(monkeypatch, _feature("p", Order.PARTITION, wrap_optimizer=take_over),
             _feature("g", Order.PARAMETER_GROUPS, wrap_optimizer=regroup))
    engine, opt, *_ = deepspeed.initialize(model=model(), config=CFG)
    assert received == {"groups": "SGD", "partition": "_Regrouped"}
    assert isinstance(opt, _Driver) and engine.optimizer is opt
    engine.backward(engine(*batch(0, 0)))
    engine.step()
    assert opt.steps == 1 and engine.global_steps == 1


def test_two_features_taking_over_the_optimizer_are_refused(monkeypatch):
    _install(monkeypatch, _feature("one", Order.PARTITION, wrap_optimizer=lambda e, o: _Driver(o)),
             _feature("two", Order.SCHEDULE, wrap_optimizer=lambda e, o: _Driver(o)))
    with pytest.raises(FeatureError, match=r"feature 'one'.* and .*feature 'two'.* both take over the optimizer"):
        deepspeed.initialize(model=model(), config=CFG)


# -- single-answer hooks --------------------------------------------------------------------


class _EngineA(deepspeed.DeepSpeedEngine):
    pass


def test_engine_class_single_answer(monkeypatch):
    _install(monkeypatch, _feature("pipe_like", engine_class=lambda m, c: _EngineA),
             _feature("quiet", engine_class=lambda m, c: None))
    engine, *_ = deepspeed.initialize(model=model(), config=CFG)
    assert type(engine) is _EngineA
    _install(monkeypatch, _feature("a", engine_class=lambda m, c: _EngineA),
             _feature("b", engine_class=lambda m, c: _EngineA))
    with pytest.raises(FeatureError, match=r"two features answer engine_class: .*feature 'a'.* and .*feature 'b'"):
        deepspeed.initialize(model=model(), config=CFG)


def test_checkpoint_engine_single_answer(monkeypatch):
    mine = TorchCheckpointEngine()
    _install(monkeypatch, _feature("ckpt", checkpoint_engine=lambda c: mine))
    engine, *_ = deepspeed.initialize(model=model(), config=CFG)
    assert engine.checkpoint_engine is mine
    _install(monkeypatch, _feature("x", checkpoint_engine=lambda c: mine),
             _feature("y", checkpoint_engine=lambda c: TorchCheckpointEngine()))
    with pytest.raises(FeatureError, match=r"two features answer checkpoint_engine: .*'x'.* and .*'y'"):
        deepspeed.initialize(model=model(), config=CFG)


def test_optimizer_device_answers_must_agree(monkeypatch):
    _install(monkeypatch, _feature("host", optimizer_device=lambda c: "cpu"),
             _feature("device", optimizer_device=lambda c: "cuda"))
    with pytest.raises(FeatureError, match=r"feature 'device'\) steps the optimizer on 'cuda' and .*feature 'host'\) on 'cpu'; they must agree"):
        deepspeed.initialize(model=model(), config=CFG)


# -- declared composition --------------------------------------------------------------------


def test_unsupported_mix_is_refused_at_initialize_with_the_reason(monkeypatch):
    zero_like = _feature("zero_like", Order.PARTITION, is_active=lambda c: True,
                         incompatibility=lambda other, c: "ZeRO-2 and ZeRO-3 are incompatible with pipeline parallelism"
                         if other == "pipe_like" else None)
    pipe_like = _feature("pipe_like", Order.SCHEDULE, is_active=lambda c: True)
    _install(monkeypatch, zero_like, pipe_like)
    with pytest.raises(NotImplementedError, match=r"ZeRO-2 and ZeRO-3 are incompatible with pipeline parallelism "
                                                  r"\(.*'zero_like'.* does not compose with .*'pipe_like'"):
        deepspeed.initialize(model=model(), config=CFG)
    # an inactive feature takes no part in the check
    idle_pipe = _feature("pipe_like", Order.SCHEDULE, is_active=lambda c: False)
    _install(monkeypatch, zero_like, idle_pipe)
    deepspeed.initialize(model=model(), config=CFG)


def test_parallel_dims_must_agree():
    a = _feature("a", parallel_dims=lambda c: {"tensor": 2})
    b = _feature("b", parallel_dims=lambda c: {"tensor": 4})
    with pytest.raises(FeatureError, match=r"sets parallel dimension 'tensor' to 2 and .*'b'.* to 4"):
        FeatureSet.from_features(a, b).parallel_dims(None)
    assert FeatureSet.from_features(a, _feature("c", parallel_dims=lambda c: {"pipe": 2})).parallel_dims(None) == {
        "tensor": 2, "pipe": 2}


def test_config_section_registered_twice_names_both():
    a = _feature("a", config_sections=lambda: {"shared_key": (int, 0)})
    b = _feature("b", config_sections=lambda: {"shared_key": (int, 1)})
    with pytest.raises(FeatureError, match=r"register ds_config section 'shared_key': .*'a'.* and .*'b'"):
        FeatureSet.from_features(a, b).config_sections(())


# -- validation at registration --------------------------------------------------------------


def test_equal_order_on_a_shared_chain_hook_is_refused():
    a = _feature("a", Order.PARTITION, transform_model=lambda m, c: m)
    b = _feature("b", Order.PARTITION, transform_model=lambda m, c: m)
    with pytest.raises(FeatureError, match=r"both implement the chain hook transform_model at order 300"):
        FeatureSet.from_features(a, b)
    FeatureSet.from_features(a, _feature("c", Order.PARTITION, engine_class=lambda m, c: None))  # no shared chain hook


def test_contract_violations_are_refused():
    class NotAFeature:
        name = "x"

    with pytest.raises(FeatureError, match="is a NotAFeature, not a deepspeed.protocols.DeepSpeedFeature"):
        FeatureSet.from_features(NotAFeature())

    class WrongHook(DeepSpeedFeature):
        name = "w"

        def wrap_optimizer(self, optimizer, engine):  # parameters swapped
            return None

    with pytest.raises(FeatureError, match=r"hook wrap_optimizer\(optimizer, engine\) does not match the "
                                           r"contract's wrap_optimizer\(engine, optimizer\)"):
        FeatureSet.from_features(WrongHook())

    class Named(DeepSpeedFeature):
        name = "other"

    with pytest.raises(FeatureError, match="declares name='other'; it must equal its entry-point name 'mine'"):
        _features._check_contract(Named(), "mine", "acme")


def test_checkpoint_state_of_each_feature_round_trips(tmp_path, monkeypatch):
    saved = {}
    a = _feature("a", checkpoint_state=lambda e: {"v": 1},
                 load_checkpoint_state=lambda e, s, d, t, **k: saved.setdefault("a", s))
    b = _feature("b", Order.PARTITION, checkpoint_state=lambda e: {"v": 2},
                 load_checkpoint_state=lambda e, s, d, t, **k: saved.setdefault("b", s))
    _install(monkeypatch, a, b)
    engine, *_ = deepspeed.initialize(model=model(), config=CFG)
    engine.save_checkpoint(str(tmp_path), tag="t")
    engine.load_checkpoint(str(tmp_path), tag="t")
    assert saved == {"a": {"v": 1}, "b": {"v": 2}}


def test_load_checkpoint_hook_replaces_core_loader(tmp_path, monkeypatch):
    seen = []

    def load(e, d, t, options):
        seen.append((d, t, options["load_optimizer_states"]))
        return "own-layout", {"k": 1}

    _install(monkeypatch, _feature("a", load_checkpoint=load), _feature("b"))
    engine, *_ = deepspeed.initialize(model=model(), config=CFG)
    # Note: no checkpoint exists there, so only the hook can answer.
    assert engine.load_checkpoint(str(tmp_path), tag="x", load_optimizer_states=False) == ("own-layout", {"k": 1})
    assert seen == [(str(tmp_path), "x", False)]


def test_two_features_answering_load_checkpoint_is_an_error(tmp_path, monkeypatch):
    hook = lambda e, d, t, o: ("p", {})  # noqa: E731
    _install(monkeypatch, _feature("a", load_checkpoint=hook), _feature("b", load_checkpoint=hook))
    engine, *_ = deepspeed.initialize(model=model(), config=CFG)
    with pytest.raises(FeatureError, match="two features answer load_checkpoint"):
        engine.load_checkpoint(str(tmp_path), tag="x")


# -- model_parallel_dims: a model built split across ranks sizes the config's data-parallel world --


class _SplitModel(torch.nn.Linear):
    """Stands for a model constructed already split over 2 ranks (as a pipeline's stages are)."""


def _split_dims(m):
    return {"pipe": 2} if isinstance(m, _SplitModel) else {}


def test_model_parallel_dims_merge_and_must_divide_the_world(monkeypatch):
    a = _feature("a", model_parallel_dims=_split_dims)
    b = _feature("b", model_parallel_dims=lambda m: {"pipe": 4})
    with pytest.raises(FeatureError, match=r"sets parallel dimension 'pipe' to 2 and .*'b'.* to 4"):
        FeatureSet.from_features(a, b).model_parallel_dims(_SplitModel(2, 2))
    assert FeatureSet.from_features(a).model_parallel_dims(torch.nn.Linear(2, 2)) == {}
    _install(monkeypatch, a)
    with pytest.raises(ValueError, match=r"built for parallel dimensions \{'pipe': 2\} \(product 2\), which does not "
                                         r"divide the world size 1"):
        deepspeed.initialize(model=_SplitModel(2, 2), config=CFG)


def _batch_triangle_on_two_ranks():
    _features.installed = lambda: FeatureSet.from_features(_feature("a", model_parallel_dims=_split_dims))
    cfg = {"train_batch_size": 4, "train_micro_batch_size_per_gpu": 2}
    split = deepspeed.DeepSpeedConfig  # parsed by initialize below; read back from the engine
    from deepspeed._initialize import _data_parallel_world

    assert _data_parallel_world({"pipe": 2}) == 1
    plain = split(cfg, world_size=_data_parallel_world({}))
    with_dims = split(cfg, world_size=_data_parallel_world({"pipe": 2}))
    return plain.gradient_accumulation_steps, with_dims.gradient_accumulation_steps


def test_model_parallel_dims_size_the_batch_triangle_on_two_ranks():
    from deepspeed.testing.distributed import run_distributed

    # 2 ranks, a model split in 2: one data-parallel rank, so 4 = 2 x GAS 2 x 1 (not GAS 1 x 2 ranks)
    assert run_distributed(_batch_triangle_on_two_ranks, world_size=2) == [(1, 2), (1, 2)]


# -- after_step: called once per applied optimizer step, in order, before the LR scheduler --------


def test_after_step_runs_per_applied_step_in_order_before_the_lr_scheduler(monkeypatch):
    seen = []
    late = _feature("zz_late", Order.DEFAULT, after_step=lambda e: seen.append(("late", e.global_steps)))
    early = _feature("aa_early", Order.MODEL_REWRITE,
                     after_step=lambda e: seen.append(("early", e.global_steps, e.lr_scheduler.last_batch_iteration)))
    _install(monkeypatch, late, early)
    cfg = {**CFG, "gradient_accumulation_steps": 2,
           "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 10}}}
    engine, *_ = deepspeed.initialize(model=model(), config=cfg)
    for step in range(4):  # 4 micro-steps, GAS 2: two optimizer steps
        x, y = batch(step, 0)
        engine.backward(engine(x, y))
        engine.step()
    # the LR scheduler (last_batch_iteration starts at -1) has not stepped yet for the step reported
    assert seen == [("early", 0, -1), ("late", 0), ("early", 1, 0), ("late", 1)]
