"""The xpu plugin registers, reports itself unavailable here, and is refused clearly."""
import os
import subprocess
import sys

import pytest

from deepspeed import _plugins


def test_registered_under_entry_point():
    plugin = _plugins.accelerators()["xpu"]
    assert plugin.distribution == "ds-ops-xpu"
    cls = plugin.load()
    assert cls._name == "xpu"
    assert cls().communication_backend_name() == "xccl"
    assert cls().visible_devices_envs()[0] == "ZE_AFFINITY_MASK"


@pytest.mark.skipif(
    _plugins.accelerators()["xpu"].load().is_available(), reason="a xpu device is present"
)
def test_unavailable_without_device_and_sdk_not_imported():
    cls = _plugins.accelerators()["xpu"].load()
    assert cls.is_available() is False
    assert cls.unavailable_reason()

@pytest.mark.skipif(
    _plugins.accelerators()["xpu"].load().is_available(), reason="a xpu device is present"
)
def test_ds_accelerator_env_fails_clearly():
    env = dict(os.environ, DS_ACCELERATOR="xpu")
    code = "from deepspeed.accelerator import get_accelerator; get_accelerator()"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "DS_ACCELERATOR=xpu: the xpu accelerator (ds-ops-xpu " in proc.stderr
    assert "installed but not available on this machine" in proc.stderr
