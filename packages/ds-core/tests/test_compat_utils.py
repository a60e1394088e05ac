"""DeepSpeed helpers at DeepSpeed's import paths, used as callers use them: layer partitioning
(``deepspeed.runtime.utils``), NUMA binding (``deepspeed.utils.numa``), ``trim_mean``, the comms
logger's ``get_operation_summary``, the CSV monitor under DeepSpeed's class name and the monitor
package checks."""

import csv
import pathlib
from types import SimpleNamespace

import pytest
import torch

import deepspeed.comm as dist
from deepspeed.testing.distributed import run_distributed


# ---------------------------------------------------------------- partition_uniform / _balanced
def _sums(weights, parts):
    return [sum(weights[b:e]) for b, e in zip(parts[:-1], parts[1:])]


def test_partition_uniform():
    from deepspeed.runtime.utils import partition_uniform

    assert partition_uniform(10, 4) == [0, 3, 6, 8, 10]  # the first 10 % 4 parts take one more
    assert partition_uniform(8, 4) == [0, 2, 4, 6, 8]
    assert partition_uniform(2, 4) == [0, 1, 2, 2, 2]  # fewer items than parts
    assert partition_uniform(0, 2) == [0, 0, 0]


@pytest.mark.parametrize("weights, num_parts, expected", [
    # the expected boundaries are those of DeepSpeed's own unit tests (runtime/utils/test_partition.py)
    ([0, 1, 2, 3, 3, 3], 4, [0, 3, 4, 5, 6]),
    ([0., 1.1, 1.9, 3., 3., 3.], 4, [0, 3, 4, 5, 6]),
    ([1] * 8, 4, [0, 2, 4, 6, 8]),
    ([1, 1], 4, [0, 1, 2, 2, 2]),
])
def test_partition_balanced_matches_deepspeeds_boundaries(weights, num_parts, expected):
    from deepspeed.runtime.utils import partition_balanced

    assert partition_balanced(weights, num_parts) == expected


@pytest.mark.parametrize("weights, num_parts, spread", [
    # DeepSpeed's utils/test_partition_balanced.py: max part sum - min part sum
    ([1, 2, 1], 4, 2), ([1, 1, 1, 1], 4, 0), ([1, 1, 1, 1, 1], 4, 1), ([1, 1, 1, 1, 0, 1], 4, 1),
])
def test_partition_balanced_spread(weights, num_parts, spread):
    from deepspeed.runtime.utils import partition_balanced

    parts = partition_balanced(weights, num_parts)
    assert len(parts) == num_parts + 1 and parts[0] == 0 and parts[-1] == len(weights)
    assert parts == sorted(parts)
    assert max(_sums(weights, parts)) - min(_sums(weights, parts)) == spread


def test_partition_balanced_heavy_layer_gets_its_own_part():
    from deepspeed.runtime.utils import partition_balanced

    weights = [1, 1, 1, 30, 1, 1]
    parts = partition_balanced(weights, 3)
    assert 30 in _sums(weights, parts) and sum(_sums(weights, parts)) == 35


# ---------------------------------------------------------------- numa
def test_parse_range_list():
    from deepspeed.utils.numa import parse_range_list

    assert parse_range_list("0,2-4,6") == [0, 2, 3, 4, 6]
    assert parse_range_list("7") == [7]
    with pytest.raises(ValueError, match="Bad range: '0-3,2-5', sub ranges must not overlap"):
        parse_range_list("0-3,2-5")
    with pytest.raises(ValueError, match="Bad range: '5-2', range end must be larger than or equal to start"):
        parse_range_list("5-2")
    with pytest.raises(ValueError, match="Bad range: 'a-b'"):
        parse_range_list("a-b")


def _fake_nodes(tmp_path, cpulists):
    for i, text in enumerate(cpulists):
        node = tmp_path / f"node{i}"
        node.mkdir()
        (node / "cpulist").write_text(text + "\n")
    return tmp_path


def test_get_numa_cores_reads_sysfs(tmp_path, monkeypatch):
    from deepspeed.utils import numa

    monkeypatch.setattr(numa, "_NODES", _fake_nodes(tmp_path, ["0-3,8", "4-7", ""]))
    assert numa.get_numa_cores() == [[0, 1, 2, 3, 8], [4, 5, 6, 7], []]


def test_get_numa_cores_of_this_machine_covers_its_cores():
    from deepspeed.utils.numa import get_numa_cores

    nodes = get_numa_cores()
    if not nodes:
        pytest.skip("this machine exposes no NUMA topology (no /sys/devices/system/node, no numactl)")
    import os

    assert set(os.sched_getaffinity(0)) <= set(sum(nodes, []))


@pytest.mark.parametrize("cpulists, rank, binding", [
    (["0-3", "4-7"], 0, ["-m", "0", "-C", "0-1"]),         # normal: memory of the rank's node
    (["0-3", "4-7"], 3, ["-m", "1", "-C", "6-7"]),
    (["0-3", "4-7", "", ""], 2, ["-p", "3", "-C", "4-5"]),  # flat HBM: node 1 pairs with HBM node 3
    (["0-3", "0-3", "4-7", "4-7"], 1, ["-m", "0,1", "-C", "2-3"]),  # fake NUMA: nodes 0 and 1
])
def test_get_numactl_cmd(tmp_path, monkeypatch, cpulists, rank, binding):
    from deepspeed.utils import numa

    monkeypatch.setattr(numa, "_NODES", _fake_nodes(tmp_path, cpulists))
    monkeypatch.delenv("KMP_AFFINITY", raising=False)
    assert numa.get_numactl_cmd("0-7", 4, rank) == (2, ["numactl", *binding])


def test_get_numactl_cmd_refusals(monkeypatch):
    from deepspeed.utils.numa import get_numactl_cmd

    monkeypatch.delenv("KMP_AFFINITY", raising=False)
    with pytest.raises(ValueError, match="At least one core needs to be assigned to each rank: 2 core"):
        get_numactl_cmd("0-1", 4, 0)
    monkeypatch.setenv("KMP_AFFINITY", "compact")
    with pytest.raises(ValueError, match="KMP_AFFINITY conflicts with numactl.*unset KMP_AFFINITY"):
        get_numactl_cmd("0-1", 1, 0)


def test_check_for_numactl_pkg(monkeypatch, capsys):
    from deepspeed.utils import numa

    monkeypatch.setattr(numa.shutil, "which", lambda name: "/usr/bin/" + name if name in ("numactl",) else None)
    assert numa.check_for_numactl_pkg() is True
    monkeypatch.setattr(numa.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    assert numa.check_for_numactl_pkg() is False
    assert "please install the numactl package with apt" in capsys.readouterr().out


# ---------------------------------------------------------------- trim_mean
def test_trim_mean():
    from deepspeed.utils.timer import trim_mean

    data = [100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, -50.0]
    assert trim_mean(data, 0.1) == pytest.approx(4.5)  # drops -50 and 100
    assert data[0] == 100.0  # not reordered
    assert trim_mean(data, 0.0) == pytest.approx(8.6)
    assert trim_mean([], 0.1) == 0
    with pytest.raises(ValueError, match="trim_percent must be between 0 and 1"):
        trim_mean(data, 1.5)
    with pytest.raises(ValueError, match="trimming 2 values from each end of 4 leaves none"):
        trim_mean([1, 2, 3, 4], 0.5)


# ---------------------------------------------------------------- CommsLogger.get_operation_summary
def _summary_body():
    dist.configure(enabled=True, prof_all=True, prof_ops=[], debug=False)
    dist.comms_logger.reset_data()
    for _ in range(10):
        dist.all_reduce(torch.ones(256))  # 1 KiB
    dist.all_reduce(torch.ones(512))  # 2 KiB
    raw = {size: list(v) for size, v in dist.comms_logger.comms_dict["all_reduce"].items()}
    out = dist.comms_logger.get_operation_summary("all_reduce"), dist.comms_logger.get_operation_summary("send"), raw
    dist.configure(enabled=False)
    return out


def test_get_operation_summary_on_real_ranks():
    from deepspeed.utils.comms_logging import CommsLogger
    from deepspeed.utils.timer import trim_mean

    assert isinstance(dist.comms_logger, CommsLogger) and callable(CommsLogger.get_operation_summary)

    for summary, missing, raw in run_distributed(_summary_body, world_size=2):
        assert missing is None
        assert sorted(summary) == [1024, 2048]
        row = summary[1024]
        count, lats, algbws, busbws = raw[1024]
        assert row["count"] == count == 10 and row["msg_size_bytes"] == 1024 and row["msg_size_str"] == "1.0 KB"
        assert row["total_latency_ms"] == pytest.approx(sum(lats))
        # trimmed by one call at each end (10% of 10)
        assert row["avg_latency_ms"] == pytest.approx(sum(sorted(lats)[1:-1]) / 8)
        assert row["tput_avg_gbps"] == pytest.approx(trim_mean(algbws, 0.1))
        assert row["busbw_avg_gbps"] == pytest.approx(trim_mean(busbws, 0.1))
        assert summary[2048]["count"] == 1


# ---------------------------------------------------------------- monitors
def test_csvmonitor_under_deepspeeds_class_name(tmp_path, monkeypatch):
    from deepspeed.monitor.csv_monitor import csvMonitor
    from deepspeed.monitor.monitor import Monitor

    monkeypatch.setattr("deepspeed.monitor.base._rank", lambda: 0)
    mon = csvMonitor(SimpleNamespace(enabled=True, output_path=str(tmp_path), job_name="job"))
    assert isinstance(mon, Monitor)
    mon.write_events([("Train/Samples/train_loss", 0.5, 1), ("Train/Samples/train_loss", 0.25, 2)])
    mon.close()
    with open(pathlib.Path(tmp_path, "job", "Train_Samples_train_loss.csv")) as f:
        assert list(csv.reader(f)) == [["step", "train_loss"], ["1", "0.5"], ["2", "0.25"]]


def test_monitor_package_checks(monkeypatch):
    import builtins

    from deepspeed.monitor import utils

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name.split(".")[0] in ("wandb", "comet_ml"):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    for name in ("wandb", "comet_ml"):
        monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    with pytest.raises(ImportError, match="wandb logging needs the wandb package .*pip install 'wandb'"):
        utils.check_wandb_availability()
    with pytest.raises(ImportError, match=r"pip install 'comet_ml>=3.41.0'"):
        utils.check_comet_availability()
    pytest.importorskip("tensorboard")
    assert utils.check_tb_availability() is None
