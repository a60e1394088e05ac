"""The `deepspeed` distribution is what the integrations detect, with a version their gates parse."""

import importlib.metadata as md
import importlib.util
import pathlib
import re
import tomllib

from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parents[1]
META = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_integrations_detection_finds_it():
    # Transformers' and Accelerate's check: the import package and the distribution's metadata.
    assert importlib.util.find_spec("deepspeed") is not None
    assert md.metadata("deepspeed")["Name"] == "deepspeed"
    assert md.version("deepspeed") == META["version"]


def test_version_is_the_api_level_and_answers_the_gates():
    version = Version(md.version("deepspeed"))
    assert len(version.release) == 4, "MAJOR.MINOR.PATCH.N (README: version scheme)"
    assert version == Version("0.19.8"), "the first release at an API level compares equal to it"
    for gate in ("0.9.3", "0.14.4", "0.16.0"):  # Transformers / Accelerate / Lightning minimums
        assert version >= Version(gate)
    assert not version < Version("0.6.6")  # Lightning's old-summary branch is not taken


def test_depends_on_the_core_trio_and_checkpoint_and_has_extras():
    requires = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0] for r in md.requires("deepspeed") if "extra ==" not in r}
    assert requires == {"ds-core", "ds-zero", "ds-ops-cpu", "ds-checkpoint"}
    for dist in requires:  # installed with it
        md.version(dist)
    extras = set(md.metadata("deepspeed").get_all("Provides-Extra"))
    assert {"pipe", "moe", "inference", "compression", "aio", "cuda", "rocm", "xpu", "hpu", "npu", "all"} <= extras
    siblings = {p.parent.name for p in ROOT.parent.glob("*/pyproject.toml")} - {"deepspeed"}
    in_all = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0] for r in META["optional-dependencies"]["all"]}
    assert in_all | requires == siblings, "[all] is every package of the repository"


def test_no_module_of_its_own():
    # The wheel ships metadata only; `deepspeed` is ds-core's package.
    files = [str(f) for f in md.files("deepspeed") or []]
    assert not [f for f in files if f.endswith(".py") and not f.startswith("__editable__")], files
    assert pathlib.Path(importlib.util.find_spec("deepspeed").origin).parts[-2:] == ("deepspeed", "__init__.py")
