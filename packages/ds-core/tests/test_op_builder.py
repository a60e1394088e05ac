"""OpBuilder's JIT path with a tiny C extension: cache keyed by sources, one build across
concurrent processes (file lock), clear errors naming the op, the compiler error and the fix; and
the build knobs of ``_knobs``."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

from deepspeed.ops.op_builder import _knobs
from deepspeed.ops.op_builder.builder import OpBuilder, _clear_loaded

needs_cxx = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler on PATH")

TINY = textwrap.dedent(
    """
    #include <Python.h>
    static PyObject* answer(PyObject*, PyObject*) { return PyLong_FromLong(ANSWER); }
    static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, "42"}, {nullptr, nullptr, 0, nullptr}};
    static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "tiny_op", nullptr, -1, methods};
    PyMODINIT_FUNC PyInit_tiny_op(void) { return PyModule_Create(&mod); }
    """
)

BUILDER = textwrap.dedent(
    """
    from deepspeed.ops.op_builder import OpBuilder

    class TinyBuilder(OpBuilder):
        NAME = "tiny"

        def __init__(self, source):
            super().__init__()
            self.source = source

        def absolute_name(self):
            return "no_such_ops_package._prebuilt.tiny_op"

        def sources(self):
            return [self.source]

        def cxx_args(self):
            return super().cxx_args() + ["-DANSWER=42"]
    """
)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    src = tmp_path / "tiny.cpp"
    src.write_text(TINY)
    (tmp_path / "tiny_builder.py").write_text(BUILDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DS_OPS_CACHE_DIR", str(tmp_path / "cache"))
    _clear_loaded()
    import importlib

    module = importlib.import_module("tiny_builder")
    yield module.TinyBuilder, src
    _clear_loaded()
    sys.modules.pop("tiny_builder", None)


@needs_cxx
def test_jit_builds_into_cache_once_and_reuses_it(tiny):
    Builder, src = tiny
    b = Builder(str(src))
    assert not b.is_built()  # no prebuilt module is installed
    assert b.load().answer() == 42
    log = b.build_dir() / "build.log"
    assert log.read_text().count("built by") == 1
    _clear_loaded()
    assert Builder(str(src)).load().answer() == 42
    assert log.read_text().count("built by") == 1  # second load came from the cache


@needs_cxx
def test_source_change_gives_a_new_cache_entry(tiny):
    Builder, src = tiny
    first = Builder(str(src)).build_dir()
    src.write_text(TINY + "\n// changed\n")
    assert Builder(str(src)).build_dir() != first


@needs_cxx
def test_two_processes_build_once(tiny, tmp_path):
    Builder, src = tiny
    script = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from tiny_builder import TinyBuilder; print(TinyBuilder({str(src)!r}).load().answer())"
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip().splitlines()[-1] for o in outs] == ["42", "42"]
    assert (Builder(str(src)).build_dir() / "build.log").read_text().count("built by") == 1


@needs_cxx
def test_compiler_error_names_op_error_and_fix(tiny):
    Builder, src = tiny
    src.write_text(TINY.replace("ANSWER", "UNDEFINED_NAME"))
    with pytest.raises(RuntimeError, match=r"(?s)op 'tiny' could not be built: the compiler failed.*UNDEFINED_NAME.*Fix: "):
        Builder(str(src)).load()


def test_missing_compiler_is_a_runtime_error(tiny, monkeypatch, tmp_path):
    Builder, src = tiny
    monkeypatch.setenv("CXX", str(tmp_path / "no-cxx"))
    with pytest.raises(RuntimeError, match=r"(?s)op 'tiny' could not be built: no C\+\+ compiler found .*Fix: install one"):
        Builder(str(src)).load()


def test_knobs_defaults_and_errors(monkeypatch):
    for name in ("DS_BUILD_OPS", "DS_BUILD_CPU_ADAM", "MAX_JOBS", "DS_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    assert _knobs.build_op("DS_BUILD_CPU_ADAM") is True
    monkeypatch.setenv("DS_BUILD_OPS", "0")
    assert _knobs.build_op("DS_BUILD_CPU_ADAM") is False
    monkeypatch.setenv("DS_BUILD_CPU_ADAM", "1")
    assert _knobs.build_op("DS_BUILD_CPU_ADAM") is True and _knobs.build_explicitly_requested("DS_BUILD_CPU_ADAM")
    assert _knobs.max_jobs() >= 1
    monkeypatch.setenv("MAX_JOBS", "many")
    with pytest.raises(ValueError, match=r"MAX_JOBS='many' is not a positive integer"):
        _knobs.max_jobs()
    monkeypatch.setenv("DS_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match=r"DS_CPU_ISA='sse9' is not one of auto, avx512, avx2, scalar"):
        _knobs.cpu_isa()
    monkeypatch.setenv("DS_BUILD_OPS", "maybe")
    monkeypatch.delenv("DS_BUILD_CPU_ADAM")
    with pytest.raises(ValueError, match=r"DS_BUILD_OPS='maybe' is not a boolean"):
        _knobs.build_op("DS_BUILD_CPU_ADAM")


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("DS_OPS_CACHE_DIR", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "te"))
    assert _knobs.cache_dir() == pathlib.Path(tmp_path / "te")
    monkeypatch.setenv("DS_OPS_CACHE_DIR", str(tmp_path / "ds"))
    assert _knobs.cache_dir() == pathlib.Path(tmp_path / "ds")


def test_base_builder_requires_a_name():
    with pytest.raises(NotImplementedError, match="must implement absolute_name"):
        OpBuilder().absolute_name()
