"""The cuda plugin registers, reports itself unavailable here, and is refused clearly."""
import os
import subprocess
import sys

import pytest

from deepspeed import _plugins


def test_registered_under_entry_point():
    plugin = _plugins.accelerators()["cuda"]
    assert plugin.distribution == "ds-ops-cuda"
    cls = plugin.load()
    assert cls._name == "cuda"
    assert cls().communication_backend_name() == "nccl"
    assert cls().visible_devices_envs()[0] == "CUDA_VISIBLE_DEVICES"


@pytest.mark.skipif(
    _plugins.accelerators()["cuda"].load().is_available(), reason="a cuda device is present"
)
def test_unavailable_without_device_and_sdk_not_imported():
    cls = _plugins.accelerators()["cuda"].load()
    assert cls.is_available() is False
    assert cls.unavailable_reason()

@pytest.mark.skipif(
    _plugins.accelerators()["cuda"].load().is_available(), reason="a cuda device is present"
)
def test_ds_accelerator_env_fails_clearly():
    env = dict(os.environ, DS_ACCELERATOR="cuda")
    code = "from deepspeed.accelerator import get_accelerator; get_accelerator()"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "DS_ACCELERATOR=cuda: the cuda accelerator (ds-ops-cuda " in proc.stderr
    assert "installed but not available on this machine" in proc.stderr
