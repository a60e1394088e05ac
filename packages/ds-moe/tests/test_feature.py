"""ds-moe installs into the `deepspeed` namespace and registers its feature."""
import importlib.metadata

from deepspeed import _plugins


def test_namespace_import():
    import deepspeed
    import deepspeed.moe

    # Note: the feature module lives in this package, the namespace root in ds-core.
    assert deepspeed.moe.__version__ == importlib.metadata.version("ds-moe")
    assert deepspeed.__file__ != deepspeed.moe.__file__


def test_feature_registered():
    feats = _plugins.features()
    assert "moe" in feats
    assert feats["moe"].distribution == "ds-moe"
