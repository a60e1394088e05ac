"""ds-pipe installs into the `deepspeed` namespace and registers its feature."""
import importlib.metadata

from deepspeed import _plugins


def test_namespace_import():
    import deepspeed
    import deepspeed.pipe

    # Note: the feature module lives in this package, the namespace root in ds-core.
    assert deepspeed.pipe.__version__ == importlib.metadata.version("ds-pipe")
    assert deepspeed.__file__ != deepspeed.pipe.__file__


def test_feature_registered():
    feats = _plugins.features()
    assert "pipe" in feats
    assert feats["pipe"].distribution == "ds-pipe"
