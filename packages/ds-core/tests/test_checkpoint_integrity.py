"""Checkpoints as an unlucky or hostile user meets them: poisoned pickles, flipped bytes, deleted
and truncated files, ``latest`` pointing outside the folder, a full disk, one rank failing its
save, stale temporaries of a crashed save. Each test names the failure it reproduces."""

import errno
import os
import subprocess
import sys
import time

import pytest
import torch

import deepspeed
from deepspeed.runtime.checkpoint_engine import _manifest, torch_checkpoint_engine
from deepspeed.runtime.checkpoint_engine._safe_load import CheckpointError, safe_load
from deepspeed.testing.distributed import run_distributed

sys.path.insert(0, os.path.dirname(__file__))
from _engine_models import batch, flat_params, model  # noqa: E402


class Payload:
    """Unpickling this creates the file ``marker`` (a stand-in for any code a checkpoint carries)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _engine(extra=None, seed=0):
    cfg = {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "Adam", "params": {"lr": 1e-2}}}
    cfg.update(extra or {})
    engine, *_ = deepspeed.initialize(model=model(seed=seed), config=cfg)
    return engine


def _trained(steps=2, extra=None):
    engine = _engine(extra)
    dtype = next(engine.module.parameters()).dtype
    for step in range(steps):
        x, y = batch(step, 0)
        engine.backward(engine(x.to(dtype), y))
        engine.step()
    return engine


# -- code execution --------------------------------------------------------------------------


def test_poisoned_checkpoint_never_runs_code_unless_unsafe_load(tmp_path):
    """A model-states file carrying a pickled callable: refused by name, the payload never runs;
    checkpoint.unsafe_load=true (documented, with a warning) is the only way to unpickle it."""
    marker = tmp_path / "payload_ran"
    _trained().save_checkpoint(str(tmp_path), tag="t", client_state={"evil": Payload(marker)})
    with pytest.raises(CheckpointError, match=r"refused to load .*t/mp_rank_00_model_states.pt: it holds objects "
                       r"other than tensors.*could run code"):
        _engine().load_checkpoint(str(tmp_path), tag="t")
    with pytest.raises(CheckpointError, match="refused to load"):
        safe_load(str(tmp_path / "t" / "mp_rank_00_model_states.pt"))
    assert not marker.exists()
    # opting in runs it: the flag is real
    _engine({"checkpoint": {"unsafe_load": True}}).load_checkpoint(str(tmp_path), tag="t")
    assert marker.exists()


# -- integrity: manifest, checksums, missing files, tags ---------------------------------------


def test_manifest_lists_every_file_with_size_and_crc(tmp_path):
    engine = _trained(extra={"bf16": {"enabled": True}})
    engine.save_checkpoint(str(tmp_path))
    m = _manifest.Manifest.read(str(tmp_path / "global_step2"))
    assert (m.tag, m.world_size, m.dp_world_size, m.zero_stage) == ("global_step2", 1, 1, 0)
    assert sorted(m.files) == ["bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", "mp_rank_00_model_states.pt"]
    for name, rec in m.files.items():
        assert rec == _manifest.file_record(str(tmp_path / "global_step2" / name))


def test_flipped_byte_is_refused_by_name(tmp_path):
    """Before: one flipped byte in a tensor loaded silently. Now the CRC-32 refuses it."""
    engine = _trained()
    engine.save_checkpoint(str(tmp_path))
    path = tmp_path / "global_step2" / "mp_rank_00_model_states.pt"
    data = bytearray(path.read_bytes())
    weight = engine.module.layers[0].weight.detach().reshape(-1)[3].numpy().tobytes()
    at = bytes(data).find(weight)
    assert at > 0
    data[at] ^= 0x01  # one bit of a weight: the file still unpickles, to a wrong value
    path.write_bytes(bytes(data))
    fresh = _engine(seed=5)
    with pytest.raises(CheckpointError, match=r"checkpoint file .*global_step2/mp_rank_00_model_states.pt is "
                       r"corrupt: its CRC-32 is [0-9a-f]{8}, its manifest says [0-9a-f]{8}"):
        fresh.load_checkpoint(str(tmp_path))
    assert not torch.equal(flat_params(fresh.module), flat_params(engine.module))


def test_truncated_and_missing_files_are_refused_by_name(tmp_path):
    engine = _trained(extra={"bf16": {"enabled": True}})
    engine.save_checkpoint(str(tmp_path))
    tag = tmp_path / "global_step2"
    rank_file = tag / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    rank_file.write_bytes(rank_file.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"is incomplete: .*bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt has "
                       r"100 bytes, the manifest says \d+ \(truncated\)"):
        _engine({"bf16": {"enabled": True}}).load_checkpoint(str(tmp_path))
    rank_file.unlink()
    with pytest.raises(CheckpointError, match=r"bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt is missing"):
        _engine({"bf16": {"enabled": True}}).load_checkpoint(str(tmp_path))


def test_read_errors_name_the_file_without_a_manifest(tmp_path):
    """A checkpoint without a manifest (DeepSpeed's): torch alone says EOFError with no message or
    "failed finding central directory"; ours names the file."""
    _trained().save_checkpoint(str(tmp_path))
    (tmp_path / "global_step2" / "ds_manifest.json").unlink()
    path = tmp_path / "global_step2" / "mp_rank_00_model_states.pt"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint file .*global_step2/mp_rank_00_model_states.pt:"
                       r" it is truncated or corrupt \(.+\)"):
        _engine().load_checkpoint(str(tmp_path))
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint file .*mp_rank_00_model_states.pt"):
        _engine().load_checkpoint(str(tmp_path))


@pytest.mark.parametrize("latest, error", [
    ("../outside", r"checkpoint tag in .*latest '../outside' is a path, not a folder name"),
    ("/etc", r"checkpoint tag in .*latest '/etc' is a path"),
    ("..", r"names the checkpoint folder or its parent"),
    ("", r"latest is empty: it should name the tag to resume from"),
])
def test_latest_must_name_a_plain_tag(tmp_path, latest, error):
    """Before: `latest` naming ../x or an absolute path loaded from outside the folder; an empty one
    warned and trained on from fresh weights."""
    outside = tmp_path / "outside"
    _trained().save_checkpoint(str(outside.parent), tag="outside")  # a loadable checkpoint outside `ckpt`
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "latest").write_text(latest)
    with pytest.raises(ValueError, match=error):
        _engine().load_checkpoint(str(ckpt))


def test_bad_tags_are_refused_on_save_and_load(tmp_path):
    engine = _trained()
    for tag in ("../x", "/tmp/x", "a/b", "", " x"):
        with pytest.raises(ValueError, match="a tag must be a plain folder name"):
            engine.save_checkpoint(str(tmp_path), tag=tag)
        with pytest.raises(ValueError, match="a tag must be a plain folder name"):
            engine.load_checkpoint(str(tmp_path), tag=tag)
    assert os.listdir(tmp_path) == []


def test_latest_naming_a_missing_tag_raises_unless_start_fresh(tmp_path):
    """Before: a resume that found nothing warned and trained from fresh weights."""
    (tmp_path / "latest").write_text("global_step9")
    with pytest.raises(FileNotFoundError, match=r"global_step9 does not exist \(tag 'global_step9' from .*latest\)"):
        _engine().load_checkpoint(str(tmp_path))
    assert _engine({"checkpoint": {"start_fresh_if_missing": True}}).load_checkpoint(str(tmp_path)) == (None, None)


# -- failures while saving ---------------------------------------------------------------------


def test_disk_full_is_reported_with_path_and_bytes_and_leaves_nothing(tmp_path):
    """Before: `RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos` and a
    partial temporary left behind. The writes go to /dev/full (a real ENOSPC from the kernel)."""
    engine = _trained()
    engine.save_checkpoint(str(tmp_path), tag="good")
    bad = tmp_path / "bad"
    bad.mkdir()
    target = bad / "mp_rank_00_model_states.pt"
    tmp = torch_checkpoint_engine._tmp_path(str(target))
    os.symlink("/dev/full", tmp)
    with pytest.raises(OSError, match=r"No space left on device while saving checkpoint file .*bad/"
                       r"mp_rank_00_model_states.pt: it needs about \d+ bytes, \d+ were written") as info:
        engine.save_checkpoint(str(tmp_path), tag="bad")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert os.listdir(bad) == []  # no temporary, no partial file
    assert (tmp_path / "latest").read_text() == "good"
    assert _engine(seed=3).load_checkpoint(str(tmp_path))[0].endswith("good/mp_rank_00_model_states.pt")


def test_failed_write_removes_its_temporary(tmp_path, monkeypatch):
    engine = _trained()

    def boom(obj, f, *a, **k):
        f.write(b"x" * 1000)
        raise RuntimeError("serializer exploded")

    monkeypatch.setattr(torch_checkpoint_engine.torch, "save", boom)
    with pytest.raises(RuntimeError, match="serializer exploded"):
        engine.save_checkpoint(str(tmp_path), tag="t")
    assert os.listdir(tmp_path / "t") == []


def test_next_save_removes_temporaries_of_dead_processes(tmp_path):
    """Before: partial *.tmp-<pid> files (42-908 MB) stayed after a crash, so a full disk stayed full."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "global_step1").mkdir()
    stale = [tmp_path / "global_step1" / f"mp_rank_00_model_states.pt.tmp-{dead.pid}",
             tmp_path / f"latest.tmp-{dead.pid}"]
    for p in stale:
        p.write_bytes(b"partial")
    live = tmp_path / "global_step1" / f"other.pt.tmp-{os.getppid()}"  # a live process's file stays
    live.write_bytes(b"in progress")
    _trained().save_checkpoint(str(tmp_path))
    assert not any(p.exists() for p in stale) and live.exists()


def _one_rank_fails(save_dir):
    import torch.distributed as dist

    engine = _trained(extra={"bf16": {"enabled": True}})  # bf16: every rank writes a file
    engine.save_checkpoint(save_dir, tag="good")
    if dist.get_rank() == 1:
        ce = engine.checkpoint_engine

        def failing(state, path):
            raise OSError(errno.EIO, "Input/output error (injected)", path)

        ce.save = failing
    start = time.monotonic()
    try:
        engine.save_checkpoint(save_dir, tag="bad")
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return type(exc).__name__, str(exc), time.monotonic() - start
    return None, None, time.monotonic() - start


def test_one_rank_failing_its_save_raises_on_every_rank_promptly(tmp_path):
    """Before: the other ranks waited the whole collective timeout."""
    results = run_distributed(_one_rank_fails, args=(str(tmp_path),))
    (t0, m0, s0), (t1, m1, s1) = results
    assert t1 == "OSError" and "Input/output error (injected)" in m1
    assert t0 == "RuntimeError" and "failed on rank 1 (OSError:" in m0 and "'latest' is unchanged" in m0
    assert s0 < 20 and s1 < 20, (s0, s1)
    assert (tmp_path / "latest").read_text() == "good"
    assert not (tmp_path / "bad" / "ds_manifest.json").exists()
    assert not [n for n in os.listdir(tmp_path / "bad") if ".tmp-" in n]


def test_checksum_costs_little_on_save(tmp_path):
    """The CRC is computed while torch.save writes: the same bytes land on disk as a plain save."""
    state = {"w": torch.randn(1_000_000)}
    ce = torch_checkpoint_engine.TorchCheckpointEngine()
    path = str(tmp_path / "a.pt")
    ce.save(state, path)
    rec = ce.records()[os.path.abspath(path)]
    assert rec == _manifest.file_record(path)
    assert torch.equal(safe_load(path, expected=rec)["w"], state["w"])


def test_every_loader_goes_through_the_safe_loader():
    """No package of this repo calls torch.load itself: every checkpoint file is read by
    safe_load (zero_to_fp32's standalone copy has a weights_only-only fallback for when deepspeed
    is not importable). A new loader that calls torch.load directly fails here."""
    import ast

    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    allowed = {os.path.join("ds-core", "src", "deepspeed", "runtime", "checkpoint_engine", "_safe_load.py"),
               os.path.join("ds-zero", "src", "deepspeed", "utils", "zero_to_fp32.py")}
    offenders = []
    for dirpath, _, files in os.walk(root):
        if f"{os.sep}src{os.sep}" not in dirpath + os.sep:
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                         and n.func.attr == "load" and isinstance(n.func.value, ast.Name) and n.func.value.id == "torch"]
                if calls and rel not in allowed:
                    offenders.append(f"{rel}:{calls[0].lineno}")
    assert not offenders, f"torch.load outside the safe loader: {offenders}"
    zero_to_fp32 = open(os.path.join(root, "ds-zero", "src", "deepspeed", "utils", "zero_to_fp32.py")).read()
    # its fallback loads with weights_only unless the caller opted in (no retry with weights_only=False)
    assert "weights_only=False)" not in zero_to_fp32 and "weights_only=not unsafe_load" in zero_to_fp32
