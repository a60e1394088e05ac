"""The integration tests need transformers / accelerate / trl / datasets next to the packages; the
nox ``integrations`` session installs pinned versions and sets DS_INTEGRATIONS=1, so that a missing
one is an import error there. Elsewhere (the combined session) this folder is skipped."""

import importlib.util
import os

MISSING = [m for m in ("transformers", "accelerate", "trl", "datasets", "lightning") if importlib.util.find_spec(m) is None]
if MISSING and os.environ.get("DS_INTEGRATIONS") != "1":
    collect_ignore_glob = ["test_*.py"]
