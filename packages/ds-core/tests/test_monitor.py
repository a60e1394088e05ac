"""Monitors: the CSV and TensorBoard files are read back; missing packages give clear errors."""

import csv
import importlib.util

import pytest
import torch

from deepspeed.monitor.config import get_monitor_config
from deepspeed.monitor.monitor import MonitorMaster

EVENTS = [
    [("Train/Samples/train_loss", 2.5, 8), ("Train/Samples/lr", 1e-3, 8), ("Train/Samples/loss_scale", 65536.0, 8)],
    [("Train/Samples/train_loss", torch.tensor(1.25), 16), ("Train/Samples/lr", 5e-4, 16),
     ("Train/Samples/loss_scale", 32768.0, 16)],
]


def _read_csv(path):
    with open(path, newline="") as fd:
        return list(csv.reader(fd))


def test_csv_monitor_files(tmp_path):
    cfg = get_monitor_config({"csv_monitor": {"enabled": True, "output_path": str(tmp_path), "job_name": "run1"}})
    master = MonitorMaster(cfg)
    assert master.enabled and master.csv_monitor is not None and master.tb_monitor is None
    for events in EVENTS:
        master.write_events(events)
    master.close()
    job = tmp_path / "run1"
    assert sorted(p.name for p in job.iterdir()) == [
        "Train_Samples_loss_scale.csv", "Train_Samples_lr.csv", "Train_Samples_train_loss.csv"]
    assert _read_csv(job / "Train_Samples_train_loss.csv") == [["step", "train_loss"], ["8", "2.5"], ["16", "1.25"]]
    assert _read_csv(job / "Train_Samples_lr.csv") == [["step", "lr"], ["8", "0.001"], ["16", "0.0005"]]
    assert _read_csv(job / "Train_Samples_loss_scale.csv")[2] == ["16", "32768.0"]


def test_csv_monitor_continues_existing_file(tmp_path):
    cfg = {"csv_monitor": {"enabled": True, "output_path": str(tmp_path), "job_name": "j"}}
    MonitorMaster(cfg).write_events(EVENTS[0][:1])
    MonitorMaster(cfg).write_events(EVENTS[1][:1])  # a resumed run appends, one header only
    assert _read_csv(tmp_path / "j" / "Train_Samples_train_loss.csv") == [
        ["step", "train_loss"], ["8", "2.5"], ["16", "1.25"]]


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    cfg = {"csv_monitor": {"enabled": True, "output_path": str(tmp_path), "job_name": "j"}}
    master = MonitorMaster(cfg)
    master.write_events(EVENTS[0])
    assert master.enabled and master.csv_monitor is None
    assert not (tmp_path / "j").exists()


def test_nothing_enabled():
    master = MonitorMaster(get_monitor_config({}))
    assert not master.enabled
    master.write_events(EVENTS[0])  # a no-op, no file anywhere


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="the tensorboard package is not installed (optional; pip install tensorboard)")
def test_tensorboard_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = {"tensorboard": {"enabled": True, "output_path": str(tmp_path), "job_name": "tb"},
           "csv_monitor": {"enabled": True, "output_path": str(tmp_path), "job_name": "csv"}}
    master = MonitorMaster(cfg)
    assert master.tb_monitor is not None and master.csv_monitor is not None
    for events in EVENTS:
        master.write_events(events)
    master.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"Train/Samples/train_loss", "Train/Samples/lr", "Train/Samples/loss_scale"}
    loss = [(e.step, e.value) for e in acc.Scalars("Train/Samples/train_loss")]
    assert loss == [(8, 2.5), (16, 1.25)]
    lr = [(e.step, e.value) for e in acc.Scalars("Train/Samples/lr")]
    assert lr == [(8, pytest.approx(1e-3)), (16, pytest.approx(5e-4))]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_wandb_missing_message():
    with pytest.raises(RuntimeError, match=r"wandb.enabled=true .* needs the wandb package.*pip install wandb"):
        MonitorMaster({"wandb": {"enabled": True}})


@pytest.mark.skipif(importlib.util.find_spec("comet_ml") is not None, reason="comet_ml is installed here")
def test_comet_missing_message():
    with pytest.raises(RuntimeError, match=r"comet.enabled=true .* needs the comet_ml package.*pip install comet_ml"):
        MonitorMaster({"comet": {"enabled": True}})


def test_tensorboard_missing_message(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(RuntimeError, match=r"needs the tensorboard package.*pip install tensorboard"):
        MonitorMaster({"tensorboard": {"enabled": True, "output_path": "/tmp/unused"}})


def test_comet_logs_once_per_interval(monkeypatch):
    import sys
    import types

    logged = []
    fake = types.SimpleNamespace(
        ExperimentConfig=lambda name: {"name": name},
        start=lambda **kw: types.SimpleNamespace(log_metric=lambda n, v, step: logged.append((n, v, step)),
                                                 end=lambda: None, kw=kw),
    )
    monkeypatch.setitem(sys.modules, "comet_ml", fake)
    master = MonitorMaster({"comet": {"enabled": True, "samples_log_interval": 10, "experiment_name": "x"}})
    assert master.comet_monitor.experiment.kw["experiment_config"] == {"name": "x"}
    for step in (4, 8, 12, 19, 20):
        master.write_events([("Train/Samples/train_loss", float(step), step)])
    assert [s for _, _, s in logged] == [4, 12, 20]


def test_engine_refuses_an_enabled_monitor_that_cannot_start(monkeypatch):
    """``tensorboard.enabled: true`` without tensorboard stops ``initialize`` with the fix, instead of
    training silently without logs."""
    import sys

    import deepspeed

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(RuntimeError, match=r"needs the tensorboard package.*pip install tensorboard"):
        deepspeed.initialize(model=torch.nn.Linear(2, 2), config={
            "train_micro_batch_size_per_gpu": 1, "tensorboard": {"enabled": True, "output_path": "/tmp/unused"}})
