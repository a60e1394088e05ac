"""The comms logger: counts, message sizes, latency and the nccl-tests bandwidth formulas."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import deepspeed.comm as dist
from deepspeed.testing.distributed import run_distributed
from deepspeed.utils.comms_logging import CommsLogger, calc_bw_log, convert_size


# ------------------------------------------------------------------ formulas (no processes)
@pytest.mark.parametrize("op, n, factor", [
    ("all_reduce", 4, 2 * 3 / 4), ("all_reduce_coalesced", 2, 1.0), ("inference_all_reduce", 8, 2 * 7 / 8),
    ("all_gather_into_tensor", 4, 3 / 4), ("reduce_scatter_tensor", 4, 3 / 4), ("all_to_all_single", 2, 1 / 2),
    ("broadcast", 4, 1.0), ("send", 2, 1.0), ("gather", 4, 1.0),
])
def test_bandwidth_formulas(op, n, factor):
    # 1 MB in 2 ms = 5e8 B/s = 4 Gbit/s of algorithmic bandwidth.
    algbw, busbw = calc_bw_log(op, 1_000_000, 2.0, n)
    assert algbw == pytest.approx(1_000_000 * 8 / 2e-3 / 1e9)
    assert busbw == pytest.approx(algbw * factor)


def test_convert_size():
    assert [convert_size(b) for b in (0, 512, 1536, 3 * 1024 ** 3)] == ["0B", "512.0 B", "1.5 KB", "3.0 GB"]


def test_configure_reads_a_config_model_or_explicit_values():
    log = CommsLogger()
    assert (log.enabled, log.verbose, log.prof_all, log.debug, log.prof_ops) == (False, False, True, False, [])
    section = SimpleNamespace(enabled=True, verbose=False, prof_all=False, debug=True, prof_ops=["all_reduce"])
    log.configure(section)
    assert (log.enabled, log.prof_all, log.debug, log.prof_ops) == (True, False, True, ["all_reduce"])
    log.configure(section, prof_all=True, prof_ops=[])  # explicit values win
    assert (log.prof_all, log.prof_ops) == (True, [])


def test_module_configure_duck_types_deepspeed_config(monkeypatch):
    monkeypatch.setattr(dist.comms_logger, "enabled", False)
    monkeypatch.setattr(dist.comms_logger, "prof_ops", [])
    ds_config = SimpleNamespace(comms_config=SimpleNamespace(comms_logger=SimpleNamespace(enabled=True, prof_ops=["broadcast"])))
    dist.configure(ds_config)
    assert dist.comms_logger.enabled and dist.comms_logger.prof_ops == ["broadcast"]
    dist.configure({"comms_logger": {"enabled": False}})
    assert not dist.comms_logger.enabled
    with pytest.raises(ValueError, match=r"comms_logger: unknown key\(s\) \['enabeld'\]"):
        dist.configure({"comms_logger": {"enabeld": True}})


def test_configure_accepts_deepspeed_config(monkeypatch):
    from deepspeed.runtime.config import DeepSpeedConfig

    for name, value in (("enabled", False), ("prof_all", True), ("prof_ops", [])):
        monkeypatch.setattr(dist.comms_logger, name, value)
    cfg = DeepSpeedConfig({"train_batch_size": 2, "comms_logger": {"enabled": True, "prof_all": False,
                                                                   "prof_ops": ["all_reduce"]}}, world_size=1)
    dist.configure(cfg)
    assert (dist.comms_logger.enabled, dist.comms_logger.prof_all, dist.comms_logger.prof_ops) == (True, False, ["all_reduce"])
    dist.configure(cfg.comms_config.comms_logger, enabled=False)
    assert dist.comms_logger.enabled is False


def test_verbose_prints_each_op_and_log_all_prints_the_table(capsys, caplog):
    log = CommsLogger()
    log.configure(enabled=True, verbose=True)
    log.append("all_reduce", "all_reduce", 2.0, 2048, world_size=2, rank=0)
    log.append("all_reduce", "all_reduce", 4.0, 2048, world_size=2, rank=0)
    out = caplog.text
    assert "rank=0 | comm op: all_reduce | time (ms): 2.00 | msg size: 2.0 KB | algbw (Gbps): 0.01" in out
    capsys.readouterr()
    table = log.log_all(return_dict=True)
    printed = capsys.readouterr().out
    assert "Comm. Op" in printed and "busbw_avg (Gbps)" in printed and "2.0 KB" in printed
    row = table["all_reduce"][2048]
    assert row["count"] == 2 and row["total_latency_ms"] == 6.0 and row["avg_latency_ms"] == 3.0
    assert row["algbw_gbps"] == pytest.approx((2048 * 8 / 2e-3 + 2048 * 8 / 4e-3) / 2 / 1e9)
    assert row["busbw_gbps"] == pytest.approx(row["algbw_gbps"])  # 2(n-1)/n = 1 for n = 2


# ------------------------------------------------------------------ on real ranks
def _ar_from_named_caller():
    dist.all_reduce(torch.ones(4))


def _logged_body():
    n = dist.get_world_size()
    dist.configure(enabled=True, prof_all=True, prof_ops=[], debug=False)
    for _ in range(3):
        dist.all_reduce(torch.ones(256))  # 1 KiB
    for _ in range(2):
        dist.all_gather_into_tensor(torch.zeros(64 * n), torch.ones(64))
    dist.broadcast(torch.ones(32, dtype=torch.float64), src=0)
    dist.reduce_scatter_tensor(torch.zeros(16), torch.ones(16 * n))
    dist.all_to_all_single(torch.zeros(8 * n), torch.ones(8 * n))
    dist.all_reduce(torch.ones(256), async_op=True).wait()
    out = {
        "count": dist.get_comm_operation_count(), "ops": dist.get_logged_comm_ops(),
        "raw": {name: {size: list(v) for size, v in sizes.items()} for name, sizes in dist.comms_logger.comms_dict.items()},
        "summary": dist.log_summary(show_straggler=True, return_dict=True),
    }
    dist.reset_log()
    out["after_reset"] = (dist.has_comm_data(), dist.get_comm_operation_count())

    dist.configure(prof_all=False, prof_ops=["broadcast"])
    dist.all_reduce(torch.ones(2))  # not profiled
    dist.broadcast(torch.ones(2), src=0)  # profiled by op name
    dist.all_reduce(torch.ones(2), prof=True, log_name="grad_sync")  # profiled by this call's flag
    out["filtered"] = {name: sum(v[0] for v in sizes.values()) for name, sizes in dist.comms_logger.comms_dict.items()}

    dist.reset_log()
    dist.configure(prof_all=True, prof_ops=[], debug=True)
    _ar_from_named_caller()
    out["debug_names"] = dist.get_logged_comm_ops()

    dist.reset_log()
    dist.configure(enabled=False, debug=False)
    dist.all_reduce(torch.ones(2))
    out["disabled_count"] = dist.get_comm_operation_count()
    return out


def _factor(op, n):
    return {"all_reduce": 2 * (n - 1) / n, "all_gather_into_tensor": (n - 1) / n,
            "reduce_scatter_tensor": (n - 1) / n, "all_to_all_single": (n - 1) / n, "broadcast": 1.0}[op]


@pytest.mark.parametrize("world_size", [2, 4])
def test_logger_counts_sizes_and_bandwidths(world_size):
    n = world_size
    for rank, got in enumerate(run_distributed(_logged_body, world_size=n)):
        assert got["count"] == 9
        assert got["ops"] == ["all_reduce", "all_gather_into_tensor", "broadcast", "reduce_scatter_tensor",
                              "all_to_all_single"]
        # Message size = the collective's whole buffer (nccl-tests' S), in bytes.
        expected_sizes = {"all_reduce": {1024: 4}, "all_gather_into_tensor": {256 * n: 2}, "broadcast": {256: 1},
                          "reduce_scatter_tensor": {64 * n: 1}, "all_to_all_single": {32 * n: 1}}
        assert {op: {size: v[0] for size, v in sizes.items()} for op, sizes in got["raw"].items()} == expected_sizes
        for op, sizes in got["raw"].items():
            for size, (count, lats, algbws, busbws) in sizes.items():
                assert len(lats) == len(algbws) == len(busbws) == count
                for lat, algbw, busbw in zip(lats, algbws, busbws):
                    assert lat > 0
                    assert algbw == pytest.approx(size * 8 / (lat * 1e-3) / 1e9, rel=1e-9)
                    assert busbw == pytest.approx(algbw * _factor(op, n), rel=1e-9)
                row = got["summary"][op][size]
                assert row["count"] == count
                assert row["total_latency_ms"] == pytest.approx(sum(lats))
                assert row["busbw_gbps"] == pytest.approx(sum(busbws) / count)
                assert row["straggler_ms"] >= 0
        assert got["after_reset"] == (False, 0)
        assert got["filtered"] == {"broadcast": 1, "grad_sync": 1}
        assert got["debug_names"] == ["all_reduce | [Caller Func: _ar_from_named_caller]"]
        assert got["disabled_count"] == 0
