"""The pipeline section (deepspeed/pipe/config.py) through DeepSpeedConfig."""

import re

import pytest

from deepspeed.runtime.config import DeepSpeedConfig


def pipe(section):
    return DeepSpeedConfig({"train_batch_size": 4, "pipeline": section}, world_size=1)


def test_defaults_and_values():
    assert pipe({}).pipeline == {"stages": "auto", "partition": "best", "seed_layers": False,
                                 "activation_checkpoint_interval": 0, "pipe_partitioned": True,
                                 "grad_partitioned": True, "schedule": "1f1b"}
    c = pipe({"stages": 4, "partition": "type:Linear", "activation_checkpoint_interval": 1})
    assert (c.pipeline["stages"], c.pipeline["partition"], c.pipeline["activation_checkpoint_interval"]) == (4, "type:Linear", 1)
    assert pipe({"stages": "auto"}).pipeline["stages"] == "auto"
    assert pipe({"schedule": "zero_bubble"}).pipeline["schedule"] == "zero_bubble"


def test_typo_and_bad_stage_count():
    msg = "ds_config: unknown key 'pipeline.seed_layer'; did you mean 'pipeline.seed_layers'?"
    with pytest.raises(ValueError, match=re.escape(msg)):
        pipe({"seed_layer": True})
    with pytest.raises(ValueError, match=r"ds_config\.pipeline\.stages: .*positive integer or \"auto\" \(got 0\)"):
        pipe({"stages": 0})
