"""ds-checkpoint installs into the `deepspeed` namespace and registers its feature."""
import importlib.metadata

from deepspeed import _plugins


def test_namespace_import():
    import deepspeed
    import deepspeed.checkpoint

    # Note: the feature module lives in this package, the namespace root in ds-core.
    assert deepspeed.checkpoint.__version__ == importlib.metadata.version("ds-checkpoint")
    assert deepspeed.__file__ != deepspeed.checkpoint.__file__


def test_feature_registered():
    feats = _plugins.features()
    assert "checkpoint" in feats
    assert feats["checkpoint"].distribution == "ds-checkpoint"
