"""nox sessions for the monorepo.

torch is installed once, into a base venv (``.nox/_base-torch-<version>-py<python>``) that every
session venv sees through a ``.pth`` file; the base holds torch and torch's own requirements and
nothing of this project. Packages are then installed into each session's own venv from their
folders together with the sibling packages they declare, and nothing else: that proves each
package works à la carte, without paying a torch install (hundreds of MB, most of a session's
time) per session. A constraints file pins ``torch==2.13.0``, so pip never resolves another torch.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import tomllib

import nox

ROOT = pathlib.Path(__file__).parent
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
TORCH = "torch==2.13.0"
PYTHON = "3.11"
BASE = ROOT / ".nox" / f"_base-{TORCH.replace('==', '-')}-py{PYTHON}"
CONSTRAINTS = ROOT / ".nox" / "_constraints.txt"

nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = ["lint", "tests", "combined", "build"]


def _requires(package: str, test: bool = False) -> list[str]:
    """Sibling packages ``package`` depends on, transitively, itself first (``test``: also the
    siblings its own ``test`` extra names, e.g. ds-zero for ds-checkpoint's ZeRO resume tests)."""
    out: list[str] = []
    todo = [package]
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.append(name)
        meta = tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())
        reqs = list(meta["project"].get("dependencies", []))
        if test and name == package:
            reqs += meta["project"].get("optional-dependencies", {}).get("test", [])
        for req in reqs:
            dep = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].strip()
            if dep in PACKAGES:
                todo.append(dep)
    return out


def _purelib(session: nox.Session, python: str = "python") -> str:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return session.run(python, "-c", code, silent=True, external=True).strip().splitlines()[-1]


def _base_site(session: nox.Session) -> str:
    """site-packages of the shared torch venv, made on first use (then reused by every session and
    every later run until ``.nox`` is removed)."""
    py = BASE / "bin" / "python"
    if not (BASE / "ready").exists():
        # Note: built under a temporary name and renamed when complete, so an interrupted run
        # never leaves a half-installed base that later sessions would trust. The base has no pip
        # of its own: the session's pip installs into it (--python).
        tmp = BASE.with_name(f"{BASE.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(BASE, ignore_errors=True)
        session.run("python", "-m", "venv", "--without-pip", str(tmp))
        session.run("python", "-m", "pip", "--python", str(tmp / "bin" / "python"), "install", "-q", TORCH)
        (tmp / "ready").write_text(TORCH + "\n")
        tmp.rename(BASE)
    return _purelib(session, str(py))


def _use_base(session: nox.Session) -> None:
    """Make this session's venv see the shared torch (a .pth line), and pin torch for pip."""
    pathlib.Path(_purelib(session), "_ds_torch_base.pth").write_text(_base_site(session) + "\n")
    CONSTRAINTS.write_text(TORCH + "\n")


def _install(session: nox.Session, packages: list[str], editable: bool = False,
             tested: list[str] | None = None) -> None:
    """Install ``packages`` (from their folders) over the shared torch; those in ``tested``
    (default: all) with their ``test`` extra."""
    _use_base(session)
    tested = packages if tested is None else tested
    paths: list[str] = []
    for name in packages:
        meta = tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())
        # A package's optional `test` extra (e.g. tensorboard for ds-core's monitor tests) is
        # installed for its own tests only; it is never a runtime dependency.
        has_extra = "test" in meta["project"].get("optional-dependencies", {})
        target = f"packages/{name}[test]" if has_extra and name in tested else f"packages/{name}"
        paths += ["-e", target] if editable else [target]
    session.install("-c", str(CONSTRAINTS), *paths, "pytest>=8")


def _pytest(session: nox.Session, *paths: str) -> None:
    session.run("python", "-m", "pytest", "-q", "-ra", *paths, *session.posargs)


@nox.session(python=PYTHON)
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """Run one package's tests in a venv holding only it and its declared dependencies."""
    _install(session, _requires(package, test=True), tested=[package])
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
    session.run("python", "tests/wheel_check.py", "--dist", str(dist), "--torch", TORCH,
                "--base-site", _base_site(session), *PACKAGES)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over every package, the tests, bench/ and this file."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


def _changed_test_paths() -> list[str]:
    """Test folders of the packages touched by uncommitted files or commits not yet on the
    upstream branch (tests/ for changes outside packages/)."""
    def git(*args: str) -> list[str]:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.splitlines() if proc.returncode == 0 else []

    files = git("diff", "--name-only", "HEAD") + git("ls-files", "--others", "--exclude-standard")
    files += git("diff", "--name-only", "@{upstream}...HEAD")
    paths: set[str] = set()
    for f in files:
        parts = f.split("/")
        if parts[0] == "packages" and len(parts) > 2 and parts[1] in PACKAGES:
            paths.add(f"packages/{parts[1]}/tests")
        elif parts[0] in ("tests", "tools", "noxfile.py", "pytest.ini") or f.endswith(".md"):
            paths.add("tests")
    return sorted(paths)


@nox.session(python=PYTHON, default=False, reuse_venv=True)
def quick(session: nox.Session) -> None:
    """Before pushing: ruff, then the tests of the packages you changed (or the paths after --),
    in one venv kept between runs with every package installed editable."""
    # Note: editable installs follow source edits, so the venv is reinstalled only when a
    # pyproject.toml changes (its hash is kept in the venv).
    stamp = pathlib.Path(session.virtualenv.location, ".ds-quick-stamp")
    digest = hashlib.sha256(b"".join((ROOT / "packages" / n / "pyproject.toml").read_bytes() for n in PACKAGES)).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        _install(session, PACKAGES, editable=True)
        session.install("ruff>=0.6")
        stamp.write_text(digest)
    session.run("ruff", "check", ".")
    paths = list(session.posargs) or _changed_test_paths()
    if not paths:
        session.log("nothing changed against HEAD or the upstream branch; running ds-core's tests")
        paths = ["packages/ds-core/tests"]
    session.run("python", "-m", "pytest", "-q", "-x", *paths)


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """Run the README's demo in a venv with every package installed."""
    _install(session, PACKAGES, tested=[])
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_engine(session: nox.Session) -> None:
    """Engine (stage 0) vs torch DDP samples/s on 2 gloo ranks, tiny GPT; writes bench/results/engine.json."""
    _install(session, ["ds-core"])
    session.run("python", "bench/engine.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_aio(session: nox.Session) -> None:
    """1 GiB read/write GB/s of our aio handle vs dd (and fio) with direct I/O, alternated; ZeRO-3 on 2
    gloo ranks with optimizer state on NVMe vs CPU offload (samples/s, peak RSS); bench/results/aio.json."""
    _install(session, sorted(set(_requires("ds-aio")) | set(_requires("ds-zero")) | set(_requires("ds-ops-cpu"))))
    session.run("python", "bench/aio.py", *session.posargs)


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


@nox.session(python=PYTHON, default=False)
def bench_comm_efficient(session: nox.Session) -> None:
    """Bytes on the wire per step and samples/s: Adam, 1-bit Adam, 0/1 Adam, 1-bit LAMB (2 ranks),
    ZeRO-3 and MiCS (4 ranks), ours vs deepspeed==0.19.8 (its own venv); writes
    bench/results/comm_efficient.json."""
    _install(session, sorted(set(_requires("ds-zero")) | set(_requires("ds-ops-cpu"))))
    ref = session.run("python", "bench/_reference.py", "--ensure", silent=True).strip().splitlines()[-1]
    session.run("python", "bench/comm_efficient.py", "--reference-python", ref, *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_moe(session: nox.Session) -> None:
    """MoE layer forward+backward tokens/s and activation memory, capacity and dropless (skewed)
    routing, ours vs deepspeed==0.19.8 (its own venv), alternating runs; writes bench/results/moe.json."""
    _install(session, _requires("ds-moe"))
    ref = session.run("python", "bench/_reference.py", "--ensure", silent=True).strip().splitlines()[-1]
    session.run("python", "bench/moe.py", "--reference-python", ref, *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_sequence(session: nox.Session) -> None:
    """Llama-like model, sequence 2k/4k/8k on gloo CPU ranks: activation memory per rank and tokens/s,
    SP=1 vs SP=2 vs SP=2 with TiledMLP/TiledFusedLogitsLoss, alternating runs; writes bench/results/sequence.json."""
    _install(session, _requires("ds-sequence"))
    session.run("python", "bench/sequence.py", *session.posargs)


# Pinned integrations for the `integrations` session (torch stays 2.13.0: the constraints file and
# TORCH go with every pip command).
INTEGRATIONS = ["transformers==5.23.0", "accelerate==1.15.0", "trl==1.16.0", "datasets==5.2.0",
                "lightning==2.6.6"]


@nox.session(python=PYTHON, default=False)
def integrations(session: nox.Session) -> None:
    """Hugging Face Trainer (torchrun and the deepspeed launcher, ZeRO 2/3, fp32/bf16, zero_to_fp32
    consolidation), `accelerate launch --use_deepspeed` and TRL SFT on 2 CPU ranks, with the
    `deepspeed` drop-in distribution and the pinned INTEGRATIONS installed next to it (tests/integrations).
    Default off (about 10 minutes on 2 cores); .ci/run runs it after the default sessions."""
    _install(session, _requires("deepspeed"))
    session.install("-c", str(CONSTRAINTS), TORCH, *INTEGRATIONS)
    results = pathlib.Path(session.virtualenv.location, "integrations-results.json")
    session.env.update(DS_INTEGRATIONS="1", DS_INTEGRATIONS_RESULTS=str(results))
    session.run("ds_report", "--hide_operator_status")
    _pytest(session, "tests/integrations")
    session.log("samples/s per job: " + results.read_text())


@nox.session(python=PYTHON, default=False)
def bench_pipe(session: nox.Session) -> None:
    """Pipeline (2 stages, 2 gloo ranks): measured bubble per schedule vs theory, and 1F1B samples/s,
    peak RSS and CPU time per rank, ours vs deepspeed==0.19.8 (its own venv), alternating runs;
    writes bench/results/pipe.json."""
    _install(session, _requires("ds-pipe"))
    ref = session.run("python", "bench/_reference.py", "--ensure", silent=True).strip().splitlines()[-1]
    session.run("python", "bench/pipe.py", "--reference-python", ref, *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench_compression(session: nox.Session) -> None:
    """ZeroQuant PTQ on the demo's Shakespeare GPT (int8 / int4 weight-only, W8A8): perplexity
    change, model bytes and CPU tokens/s, ours vs torchao==0.18.0 (installed in this venv only,
    torch pinned on the same pip command) vs fp32, alternating rounds; writes
    bench/results/compression.json."""
    _install(session, sorted(set(_requires("ds-compression")) | set(_requires("ds-ops-cpu"))), tested=[])
    session.install("-c", str(CONSTRAINTS), TORCH, "torchao==0.18.0")
    session.run("python", "bench/compression.py", *session.posargs)


@nox.session(python=PYTHON, default=False)
def integrations_deepspeed(session: nox.Session) -> None:
    """The `integrations` jobs on deepspeed==0.19.8 from PyPI (this venv holds it instead of this
    repo's packages; ops JIT), then samples/s side by side with the last `nox -s integrations` run
    (bench/integrations.py, writes bench/results/integrations.json). A job failing on DeepSpeed
    shows as "-" there; the session still reports."""
    _use_base(session)
    session.env["DS_BUILD_OPS"] = "0"
    session.install("-c", str(CONSTRAINTS), TORCH, "deepspeed==0.19.8", *INTEGRATIONS, "pytest>=8")
    results = pathlib.Path(session.virtualenv.location, "integrations-results.json")
    session.env.update(DS_INTEGRATIONS="1", DS_INTEGRATIONS_RESULTS=str(results))
    session.run("python", "-m", "pytest", "-q", "-ra", "tests/integrations", *session.posargs, success_codes=[0, 1])
    ours = ROOT / ".nox" / "integrations" / "integrations-results.json"
    session.run("python", "bench/integrations.py", "--ours", str(ours), "--deepspeed", str(results))
