"""nox sessions for the monorepo.

Every venv gets ``torch==2.13.0`` first (the CPU build on this machine's disk), so pip never
resolves another torch. Packages are installed from their folders together with the sibling
packages they declare, and nothing else: that proves each package works à la carte.
"""

from __future__ import annotations

import pathlib
import re
import tomllib

import nox

ROOT = pathlib.Path(__file__).parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
TORCH = "torch==2.13.0"
PYTHON = "3.11"

nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = ["lint", "tests", "combined", "build"]


def _requires(package: str) -> list[str]:
    """Sibling packages ``package`` depends on, transitively, itself first."""
    out: list[str] = []
    todo = [package]
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.append(name)
        meta = tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())
        for req in meta["project"].get("dependencies", []):
            dep = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].strip()
            if dep in PACKAGES:
                todo.append(dep)
    return out


def _install(session: nox.Session, packages: list[str], editable: bool = False) -> None:
    session.install(TORCH)
    paths: list[str] = []
    for name in packages:
        meta = tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())
        # A package's optional `test` extra (e.g. tensorboard for ds-core's monitor tests) is
        # installed for its tests; it is never a runtime dependency.
        target = f"packages/{name}[test]" if "test" in meta["project"].get("optional-dependencies", {}) else f"packages/{name}"
        paths += ["-e", target] if editable else [target]
    session.install(*paths, "pytest>=8")


def _pytest(session: nox.Session, *paths: str) -> None:
    session.run("python", "-m", "pytest", "-q", "-ra", *paths, *session.posargs)


@nox.session(python=PYTHON)
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """Run one package's tests in a venv holding only it and its declared dependencies."""
    _install(session, _requires(package))
    _pytest(session, f"packages/{package}/tests")


@nox.session(python=PYTHON)
def combined(session: nox.Session) -> None:
    """All packages installed together (editable), then the cross-package tests in tests/."""
    _install(session, PACKAGES, editable=True)
    _pytest(session, "tests")


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """Build every wheel, then install each alone (with its declared deps) into a fresh venv."""
    # Note: one build environment for all wheels (--no-isolation) instead of one per wheel; the
    # tests sessions still build every package with isolation, which checks build-system.requires.
    session.install("build>=1.2", "hatchling>=1.21", "pybind11>=2.12", "ninja>=1.11")
    dist = ROOT / "dist"
    session.run("python", "-c", f"import shutil; shutil.rmtree({str(dist)!r}, ignore_errors=True)")
    for name in PACKAGES:
        # Note: sdist, then the wheel built from that sdist (outside the monorepo layout), so a
        # package whose build hook needs core's build helpers proves its sdist carries them.
        session.run("python", "-m", "build", "--no-isolation", "--outdir", str(dist), f"packages/{name}", silent=True)
    session.run("python", "tests/wheel_check.py", "--dist", str(dist), "--torch", TORCH, *PACKAGES)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over every package, the tests, bench/ and this file."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """Run the README's demo in a venv with every package installed."""
    _install(session, PACKAGES)
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_engine(session: nox.Session) -> None:
    """Engine (stage 0) vs torch DDP samples/s on 2 gloo ranks, tiny GPT; writes bench/results/engine.json."""
    _install(session, ["ds-core"])
    session.run("python", "bench/engine.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_cpu_optim(session: nox.Session) -> None:
    """CPU Adam/Adagrad/Lion at 50M and 200M params: ours (prebuilt wheel) vs torch fused/foreach
    vs deepspeed==0.19.8 (its own venv, ops JIT); writes bench/results/cpu_optim.json."""
    _install(session, _requires("ds-ops-cpu"))
    ref = session.run("python", "bench/_reference.py", "--ensure", silent=True).strip().splitlines()[-1]
    session.run("python", "bench/cpu_optim.py", "--reference-python", ref, *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_zero(session: nox.Session) -> None:
    """Tiny GPT on 2 gloo ranks at ZeRO stages 0-3 and 2/3 + CPU offload: samples/s and peak RSS per
    rank, ours vs deepspeed==0.19.8 (its own venv), alternating runs; writes bench/results/zero.json."""
    _install(session, sorted(set(_requires("ds-zero")) | set(_requires("ds-ops-cpu"))))
    ref = session.run("python", "bench/_reference.py", "--ensure", silent=True).strip().splitlines()[-1]
    session.run("python", "bench/zero.py", "--reference-python", ref, *session.posargs)
