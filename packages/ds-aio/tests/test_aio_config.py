"""The aio section (deepspeed/io/config.py) through DeepSpeedConfig."""

import re

import pytest

from deepspeed.runtime.config import DeepSpeedConfig


def aio(section):
    return DeepSpeedConfig({"train_batch_size": 4, "aio": section}, world_size=1)


def test_defaults_and_lightning_thread_count():
    assert aio({}).aio_config == {"block_size": 1048576, "queue_depth": 8, "intra_op_parallelism": 1,
                                  "single_submit": False, "overlap_events": True, "use_gds": False,
                                  "thread_count": None}
    # Lightning writes the legacy `thread_count`; it sets intra_op_parallelism
    c = aio({"block_size": 262144, "queue_depth": 32, "thread_count": 4, "single_submit": False, "overlap_events": True})
    assert (c.aio_config["block_size"], c.aio_config["queue_depth"], c.aio_config["intra_op_parallelism"]) == (262144, 32, 4)


def test_typo_and_bad_value():
    msg = "ds_config: unknown key 'aio.queue_dept'; did you mean 'aio.queue_depth'?"
    with pytest.raises(ValueError, match=re.escape(msg)):
        aio({"queue_dept": 4})
    with pytest.raises(ValueError, match=r"ds_config\.aio\.block_size: .*greater than 0 \(got 0\)"):
        aio({"block_size": 0})
