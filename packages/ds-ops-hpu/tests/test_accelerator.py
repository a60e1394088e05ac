    """The hpu plugin registers, reports itself unavailable here, and is refused clearly."""
    import os
    import subprocess
    import sys

    import pytest

    from deepspeed import _plugins


    def test_registered_under_entry_point():
        plugin = _plugins.accelerators()["hpu"]
        assert plugin.distribution == "ds-ops-hpu"
        cls = plugin.load()
        assert cls._name == "hpu"
        assert cls().communication_backend_name() == "hccl"
        assert cls().visible_devices_envs()[0] == "HABANA_VISIBLE_MODULES"


    @pytest.mark.skipif(
        _plugins.accelerators()["hpu"].load().is_available(), reason="a hpu device is present"
    )
    def test_unavailable_without_device_and_sdk_not_imported():
        cls = _plugins.accelerators()["hpu"].load()
        assert cls.is_available() is False
        assert cls.unavailable_reason()
assert "habana_frameworks" not in sys.modules


    @pytest.mark.skipif(
        _plugins.accelerators()["hpu"].load().is_available(), reason="a hpu device is present"
    )
    def test_ds_accelerator_env_fails_clearly():
        env = dict(os.environ, DS_ACCELERATOR="hpu")
        code = "from deepspeed.accelerator import get_accelerator; get_accelerator()"
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert proc.returncode != 0
        assert "DS_ACCELERATOR=hpu: the hpu accelerator (ds-ops-hpu " in proc.stderr
        assert "installed but not available on this machine" in proc.stderr
