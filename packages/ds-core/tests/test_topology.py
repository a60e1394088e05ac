"""The topology object (``deepspeed.comm.topology``) and DeepSpeed's ``deepspeed.utils.groups`` names.

Rank layouts are checked against the examples in DeepSpeed's documentation of its group helpers;
the process groups against real collectives on 4 gloo ranks.
"""

import pytest

from deepspeed.comm.topology import ParallelTopology, expert_parallel_ranks
from deepspeed.testing.distributed import run_distributed


def test_expert_ranks_e_plus_d_layout():
    # DeepSpeed's E + D example: 16 ranks, expert parallel size 2
    ep, edp = expert_parallel_ranks(16, 1, 2)
    assert ep == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15]]
    assert edp == [[0, 2, 4, 6, 8, 10, 12, 14], [1, 3, 5, 7, 9, 11, 13, 15]]


def test_expert_ranks_with_tensor_parallel():
    # DeepSpeed's E + M + D example: 16 ranks, model (tensor) parallel 2, expert parallel 4
    ep, edp = expert_parallel_ranks(16, 2, 4)
    assert ep == [[0, 2, 4, 6], [8, 10, 12, 14], [1, 3, 5, 7], [9, 11, 13, 15]]
    assert edp == [[0, 8], [2, 10], [4, 12], [6, 14], [1, 9], [3, 11], [5, 13], [7, 15]]


def test_expert_ranks_d_plus_e_layout():
    ep, edp = expert_parallel_ranks(8, 1, 2, use_data_before_expert_parallel=True)
    assert ep == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert edp == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_expert_ranks_refuse_sizes_that_do_not_divide():
    with pytest.raises(ValueError, match="data parallel size 6 is not divisible by the expert parallel size 4"):
        expert_parallel_ranks(12, 2, 4)


def test_grid_layout_without_a_process_group():
    topo = ParallelTopology({"pipe": 2, "tensor": 2}, world_size=8, rank=5)
    assert topo.sizes == {"pipe": 2, "data": 2, "sequence": 1, "tensor": 2}
    assert topo.coords == {"pipe": 1, "data": 0, "sequence": 0, "tensor": 1}
    assert topo.ranks_along("tensor") == [4, 5]
    assert topo.ranks_along("data") == [5, 7]
    assert topo.ranks_along("pipe") == [1, 5]
    assert topo.rank_of(pipe=0, data=1, tensor=0) == 2


def test_sizes_that_do_not_tile_the_world_are_refused():
    with pytest.raises(ValueError, match=r"world size 6 is not divisible by pipe x sequence x tensor = 1 x 1 x 4 = 4"):
        ParallelTopology({"tensor": 4}, world_size=6, rank=0)
    with pytest.raises(ValueError, match="unknown parallel dimension"):
        ParallelTopology({"model": 2}, world_size=2, rank=0)
    with pytest.raises(ValueError, match=r"data_parallel_size=3 does not match the world: 4 ranks"):
        ParallelTopology({"data": 3}, world_size=4, rank=0)


def _groups_body():
    import torch

    import deepspeed
    import deepspeed.comm as dist
    from deepspeed.utils import groups

    rank = dist.get_rank()
    model = torch.nn.Linear(2, 2)
    engine, *_ = deepspeed.initialize(model=model, config={"train_micro_batch_size_per_gpu": 1,
                                                           "sequence_parallel_size": 2})
    topo = engine.topology
    out = {"sp_ranks": topo.group_ranks("sequence"), "dp_ranks": topo.group_ranks("data"),
           "sizes": (groups._get_sequence_parallel_world_size(), groups._get_data_parallel_world_size(),
                     groups._get_sequence_data_parallel_world_size()),
           "ranks": (groups._get_sequence_parallel_rank(), groups._get_data_parallel_rank())}
    t = torch.tensor([float(rank)])
    dist.all_reduce(t, group=groups._get_sequence_parallel_group())
    out["sp_sum"] = t.item()
    t = torch.tensor([float(rank)])
    dist.all_reduce(t, group=groups._get_data_parallel_group())
    out["dp_sum"] = t.item()
    groups._create_expert_and_data_parallel(2)
    name = groups._get_max_expert_size_name()
    t = torch.tensor([float(rank)])
    dist.all_reduce(t, group=groups._get_expert_parallel_group(name))
    out["ep"] = (name, groups._get_expert_parallel_group_ranks(name), groups._get_expert_parallel_rank(name),
                 groups._get_expert_data_parallel_group_ranks(name), t.item())
    return out


def test_groups_of_a_sequence_parallel_job_on_four_ranks():
    res = run_distributed(_groups_body, world_size=4)
    for rank, r in enumerate(res):
        # layout data x sequence with sequence fastest: ranks {0,1} and {2,3} share a data index
        assert r["sp_ranks"] == [rank - rank % 2, rank - rank % 2 + 1]
        assert r["dp_ranks"] == [rank % 2, rank % 2 + 2]
        assert r["sizes"] == (2, 2, 4)
        assert r["ranks"] == (rank % 2, rank // 2)
        assert r["sp_sum"] == sum(r["sp_ranks"]) and r["dp_sum"] == sum(r["dp_ranks"])
        name, ep_ranks, ep_rank, edp_ranks, ep_sum = r["ep"]
        # DeepSpeed's layout: experts span consecutive ranks of one tensor-parallel lane (the
        # sequence dimension counts as data for them), expert data parallel is strided
        assert name == "ep_size_2" and ep_ranks == [rank - rank % 2, rank - rank % 2 + 1] and ep_rank == rank % 2
        assert edp_ranks == [rank % 2, rank % 2 + 2] and ep_sum == sum(ep_ranks)
