"""The ``model_states_entries`` hook with fake features: top-level entries in the model-states
file (for other tools' loaders), kept out of the client state on load, clashes refused."""

import os

import pytest
import torch

import deepspeed
from deepspeed import _features
from deepspeed._features import FeatureError, FeatureSet
from deepspeed.protocols import DeepSpeedFeature

CFG = {"train_micro_batch_size_per_gpu": 2, "optimizer": {"type": "SGD", "params": {"lr": 0.1}}}


def _feature(name, entries):
    return type(f"F_{name}", (DeepSpeedFeature,), {"name": name, "DS_PLUGIN_API": "2.0",
                                                   "model_states_entries": lambda self, engine: entries})()


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)


def test_entries_are_written_at_top_level_and_not_returned_as_client_state(monkeypatch, tmp_path):
    monkeypatch.setattr(_features, "installed", lambda: FeatureSet.from_features(_feature("widgets", {"num_widgets": [3, 1]})))
    engine, *_ = deepspeed.initialize(model=_model(), config=CFG)
    engine.save_checkpoint(str(tmp_path), tag="t", client_state={"epoch": 7})
    sd = torch.load(os.path.join(tmp_path, "t", "mp_rank_00_model_states.pt"), weights_only=True)
    assert sd["num_widgets"] == [3, 1] and sd["epoch"] == 7
    _, client = engine.load_checkpoint(str(tmp_path), tag="t")
    assert client == {"epoch": 7}


@pytest.mark.parametrize("entries, message", [
    ({"module": 1}, r"adds model-states entry 'module', a name ds-core writes itself"),
    ({"ds_feature_x": 1}, r"adds model-states entry 'ds_feature_x', a name ds-core writes itself"),
])
def test_core_names_are_refused(monkeypatch, tmp_path, entries, message):
    monkeypatch.setattr(_features, "installed", lambda: FeatureSet.from_features(_feature("bad", entries)))
    engine, *_ = deepspeed.initialize(model=_model(), config=CFG)
    with pytest.raises(FeatureError, match=message):
        engine.save_checkpoint(str(tmp_path), tag="t")


def test_two_features_with_one_name_are_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(_features, "installed", lambda: FeatureSet.from_features(
        _feature("one", {"num_widgets": 1}), _feature("two", {"num_widgets": 2})))
    engine, *_ = deepspeed.initialize(model=_model(), config=CFG)
    with pytest.raises(FeatureError, match=r"both add model-states entry 'num_widgets'; only one may"):
        engine.save_checkpoint(str(tmp_path), tag="t")
