"""ds-zero installs into the `deepspeed` namespace and registers its feature."""
import importlib.metadata

from deepspeed import _plugins


def test_namespace_import():
    import deepspeed
    import deepspeed.zero

    # Note: the feature module lives in this package, the namespace root in ds-core.
    assert deepspeed.zero.__version__ == importlib.metadata.version("ds-zero")
    assert deepspeed.__file__ != deepspeed.zero.__file__


def test_feature_registered():
    feats = _plugins.features()
    assert "zero" in feats
    assert feats["zero"].distribution == "ds-zero"
