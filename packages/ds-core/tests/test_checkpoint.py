"""Engine checkpoints: DeepSpeed's layout, bit-identical resume in a fresh process, atomicity
when the saving process is killed, client state, weights_only loading, feature hooks."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import deepspeed
from deepspeed.runtime.checkpoint_engine import CheckpointEngine, TorchCheckpointEngine
from deepspeed.runtime.engine import DeepSpeedEngine
from deepspeed.runtime.feature import DeepSpeedFeature
from deepspeed.testing.distributed import run_distributed

sys.path.insert(0, os.path.dirname(__file__))
from _engine_models import batch, flat_params, model  # noqa: E402


def _config(precision):
    cfg = {"train_micro_batch_size_per_gpu": 4,
           "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.01}},
           "scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 40, "warmup_num_steps": 5,
                                                             "warmup_max_lr": 1e-2}},
           "gradient_clipping": 1.0}
    if precision:
        cfg[precision] = {"enabled": True}
    return cfg


def _train(engine, rank, start, n):
    losses = []
    dtype = next(engine.module.parameters()).dtype
    for step in range(start, start + n):
        x, y = batch(step, rank)
        loss = engine(x.to(dtype), y)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    return losses


def _first_run(save_dir, precision):
    import torch.distributed as dist

    rank = dist.get_rank()
    engine, *_ = deepspeed.initialize(model=model(), config=_config(precision))
    _train(engine, rank, 0, 10)
    engine.save_checkpoint(save_dir, client_state={"epoch": 3, "note": "hi"})
    losses = _train(engine, rank, 10, 10)
    return losses, flat_params(engine.module).tolist(), engine.get_lr()


def _resumed_run(save_dir, precision):
    import torch.distributed as dist

    rank = dist.get_rank()
    engine, *_ = deepspeed.initialize(model=model(seed=123), config=_config(precision))
    path, client = engine.load_checkpoint(save_dir)
    assert engine.global_steps == 10 and client == {"epoch": 3, "note": "hi"}, (engine.global_steps, client)
    losses = _train(engine, rank, 10, 10)
    return losses, flat_params(engine.module).tolist(), engine.get_lr(), path


@pytest.mark.parametrize("precision", [None, "bf16", "fp16"])
def test_resume_is_bit_identical_in_a_fresh_process(tmp_path, precision):
    """Train 10, save, train 10; fresh ranks load step 10 and train 10: identical bits."""
    first = run_distributed(_first_run, args=(str(tmp_path), precision))
    resumed = run_distributed(_resumed_run, args=(str(tmp_path), precision))
    for (l1, p1, lr1), (l2, p2, lr2, path) in zip(first, resumed):
        assert l1 == l2
        assert p1 == p2
        assert lr1 == lr2
        assert path == str(tmp_path / "global_step10" / "mp_rank_00_model_states.pt")
    assert (tmp_path / "latest").read_text() == "global_step10"
    optim_file = tmp_path / "global_step10" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt"
    assert optim_file.exists() == (precision == "bf16")


def _engine(**kw):
    return _engine_with({}, **kw)


def _engine_with(extra: dict, **kw):
    engine, *_ = deepspeed.initialize(model=model(), config={
        "train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "SGD", "params": {"lr": 0.1, "momentum": 0.9}},
        **extra}, **kw)
    return engine


def test_layout_and_contents(tmp_path):
    engine = _engine()
    for step in range(2):
        engine.backward(engine(*batch(step, 0)))
        engine.step()
    engine.save_checkpoint(str(tmp_path), client_state={"custom": torch.arange(3)})
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert files == ["global_step2", "global_step2/ds_manifest.json", "global_step2/mp_rank_00_model_states.pt",
                     "latest"]
    sd = torch.load(tmp_path / "global_step2" / "mp_rank_00_model_states.pt", weights_only=True)
    assert sd["global_steps"] == 2 and sd["global_samples"] == 8 and sd["skipped_steps"] == 0
    assert sd["dp_world_size"] == 1 and sd["mp_world_size"] == 1
    assert sd["ds_config"]["train_micro_batch_size_per_gpu"] == 4
    assert set(sd["module"]) == set(engine.module.state_dict())
    assert sd["optimizer"]["state"][0]["momentum_buffer"].shape == engine.module.layers[0].weight.shape
    assert torch.equal(sd["custom"], torch.arange(3))

    fresh = _engine()
    path, client = fresh.load_checkpoint(str(tmp_path), load_optimizer_states=False)
    assert list(client) == ["custom"]
    assert torch.equal(flat_params(fresh.module), flat_params(engine.module))
    assert fresh.optimizer.state_dict()["state"] == {}


def test_nothing_to_load_returns_none(tmp_path):
    """No ``latest``: nothing to resume (DeepSpeed's (None, None)). An explicit tag that does not
    exist is an error unless checkpoint.start_fresh_if_missing opts into starting fresh."""
    engine = _engine()
    assert engine.load_checkpoint(str(tmp_path)) == (None, None)
    with pytest.raises(FileNotFoundError, match=r"global_step7 does not exist \(tag 'global_step7' from the tag "
                       r"argument\); .*checkpoint.start_fresh_if_missing=true"):
        engine.load_checkpoint(str(tmp_path), tag="global_step7")
    fresh_ok = _engine_with({"checkpoint": {"start_fresh_if_missing": True}})
    assert fresh_ok.load_checkpoint(str(tmp_path), tag="global_step7") == (None, None)


def test_explicit_tag_and_load_module_only(tmp_path):
    engine = _engine()
    engine.backward(engine(*batch(0, 0)))
    engine.step()
    engine.save_checkpoint(str(tmp_path), tag="mytag", save_latest=False)
    assert not (tmp_path / "latest").exists()
    fresh = _engine()
    path, _ = fresh.load_checkpoint(str(tmp_path), tag="mytag", load_module_only=True)
    assert path.endswith("mytag/mp_rank_00_model_states.pt") and fresh.global_steps == 0
    assert torch.equal(flat_params(fresh.module), flat_params(engine.module))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loading_uses_weights_only(tmp_path):
    engine = _engine()
    engine.save_checkpoint(str(tmp_path), tag="t", client_state={"evil": _Evil()})
    with pytest.raises(ValueError, match=r"refused to load .*t/mp_rank_00_model_states.pt: it holds objects other "
                       r"than tensors.*checkpoint.unsafe_load=true"):
        _engine().load_checkpoint(str(tmp_path), tag="t")


_KILL_SCRIPT = textwrap.dedent("""
    import io, os, sys, time
    import torch
    sys.path.insert(0, {tests!r})
    import deepspeed
    from _engine_models import batch, model
    engine, *_ = deepspeed.initialize(model=model(), config={{
        "train_micro_batch_size_per_gpu": 4, "optimizer": {{"type": "SGD", "params": {{"lr": 0.1}}}}}})
    engine.backward(engine(*batch(0, 0))); engine.step()
    engine.save_checkpoint({ckpt!r}, tag="good")
    torch.save({{"module": engine.module.state_dict()}}, {ref!r})
    engine.backward(engine(*batch(1, 0))); engine.step()
    real_save = torch.save
    def stalled_save(obj, f, *a, **k):
        buf = io.BytesIO(); real_save(obj, buf, *a, **k); data = buf.getvalue()
        f.write(data[: len(data) // 2]); f.flush()
        open({marker!r}, "w").close()
        time.sleep(120)
    torch.save = stalled_save
    engine.save_checkpoint({ckpt!r}, tag="bad")
""")


def test_save_killed_mid_write_keeps_previous_tag(tmp_path):
    ckpt, marker, ref = tmp_path / "ckpt", tmp_path / "writing", tmp_path / "ref.pt"
    script = _KILL_SCRIPT.format(tests=os.path.dirname(__file__), ckpt=str(ckpt), marker=str(marker), ref=str(ref))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the saving process never started writing"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (ckpt / "latest").read_text() == "good"
    assert not (ckpt / "bad" / "mp_rank_00_model_states.pt").exists()
    assert any(p.name.startswith("mp_rank_00_model_states.pt.tmp-") for p in (ckpt / "bad").iterdir())
    engine = _engine()
    path, _ = engine.load_checkpoint(str(ckpt))
    assert path == str(ckpt / "good" / "mp_rank_00_model_states.pt") and engine.global_steps == 1
    expected = torch.load(ref, weights_only=True)["module"]
    for k, v in engine.module.state_dict().items():
        assert torch.equal(v, expected[k]), k


class _RecordingEngine(TorchCheckpointEngine):
    def __init__(self):
        super().__init__()
        self.saved, self.committed = [], []

    def save(self, state_dict, path):
        self.saved.append(os.path.basename(path))
        super().save(state_dict, path)

    def commit(self, tag):
        self.committed.append(tag)
        return True


class _Feature(DeepSpeedFeature):
    name = "probe"

    def __init__(self):
        self.ckpt = _RecordingEngine()
        self.loaded = None

    def transform_model(self, model, config):
        model.probe_seen = True
        return model

    def checkpoint_engine(self, config):
        return self.ckpt

    def checkpoint_state(self, engine):
        return {"counter": torch.tensor([engine.global_steps])}

    def save_checkpoint_files(self, engine, save_dir, tag):
        self.ckpt.save({"extra": 1}, os.path.join(save_dir, tag, "probe_states.pt"))

    def load_checkpoint_state(self, engine, state, load_dir, tag, load_optimizer_states=True, load_module_only=False):
        self.loaded = (state, self.ckpt.load(os.path.join(load_dir, tag, "probe_states.pt")), load_optimizer_states)


def test_feature_hooks_and_custom_checkpoint_engine(tmp_path):
    feature = _Feature()
    engine = DeepSpeedEngine(model=model(), config={"train_micro_batch_size_per_gpu": 4,
                                                    "optimizer": {"type": "SGD", "params": {"lr": 0.1}}},
                             features=[feature])
    assert engine.module.probe_seen and isinstance(engine.checkpoint_engine, CheckpointEngine)
    engine.backward(engine(*batch(0, 0)))
    engine.step()
    engine.save_checkpoint(str(tmp_path), tag="t")
    assert feature.ckpt.saved == ["mp_rank_00_model_states.pt", "probe_states.pt"] and feature.ckpt.committed == ["t"]
    _, client = engine.load_checkpoint(str(tmp_path), tag="t", load_optimizer_states=False)
    assert client == {}
    assert torch.equal(feature.loaded[0]["counter"], torch.tensor([1])) and feature.loaded[1] == {"extra": 1}
    assert feature.loaded[2] is False


def test_save_16bit_model_writes_the_module_weights(tmp_path):
    engine, *_ = deepspeed.initialize(model=model(), config={"train_micro_batch_size_per_gpu": 4, "bf16": {"enabled": True},
                                                             "optimizer": {"type": "SGD", "params": {"lr": 0.1}}})
    assert engine.zero_gather_16bit_weights_on_model_save() is False
    engine.save_16bit_model(str(tmp_path))
    sd = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    assert sd.keys() == engine.module.state_dict().keys()
    assert all(v.dtype == torch.bfloat16 and torch.equal(v, engine.module.state_dict()[k]) for k, v in sd.items())
