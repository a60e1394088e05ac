"""PipelineModule, LayerSpec/TiedLayerSpec, partitioning and topologies, in one process."""

import re

import pytest
import torch

from deepspeed.pipe import (
    LayerSpec,
    PipeDataParallelTopology,
    PipelineModule,
    PipelineParallelGrid,
    PipeModelDataParallelTopology,
    ProcessTopology,
    TiedLayerSpec,
)
from deepspeed.runtime.pipe import _partition
from deepspeed.runtime.pipe.topology import core_sizes


def test_partition_uniform_and_balanced():
    assert _partition.partition_uniform(9, 2) == [0, 5, 9]
    assert _partition.partition_uniform(10, 4) == [0, 3, 6, 8, 10]
    assert _partition.partition_uniform(2, 4) == [0, 1, 2, 2, 2]
    # the heaviest part is as light as possible: [4 | 1 1 1 1 | 4]
    assert _partition.partition_balanced([4, 1, 1, 1, 1, 4], 3) == [0, 1, 5, 6]
    assert _partition.partition_balanced([1] * 6, 3) == [0, 2, 4, 6]
    assert _partition.partition_balanced([5, 0, 0, 5, 0], 2) == [0, 3, 5]


class _Spy(torch.nn.Linear):
    devices: list = []

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        _Spy.devices.append(self.weight.device.type)


def _mlp():
    return [LayerSpec(torch.nn.Linear, 4, 64), torch.nn.ReLU(), LayerSpec(torch.nn.Linear, 64, 4),
            torch.nn.ReLU(), LayerSpec(_Spy, 4, 4)]


def test_partition_methods_on_virtual_stages():
    # 3 parts of one rank (virtual stages) exercise the split without extra ranks
    sizes = [4 * 64 + 64, 0, 64 * 4 + 4, 0, 20]
    m = PipelineModule(_mlp(), num_stages=1, virtual_stages=3, partition_method="uniform")
    assert m.partitions() == [0, 2, 4, 5]
    m = PipelineModule(_mlp(), num_stages=1, virtual_stages=2, partition_method="parameters")
    assert m.partitions() == _partition.partition_balanced(sizes, 2) == [0, 2, 5]
    m = PipelineModule(_mlp(), num_stages=1, virtual_stages=2, partition_method="type:relu")
    assert m.partitions() == [0, 3, 5]  # one ReLU per part (ties: the earlier part takes more)
    assert [i for i, _ in m.chunk_layers(0)] == [0, 1, 2] and [i for i, _ in m.chunk_layers(1)] == [3, 4]


def test_parameter_counting_builds_on_meta_only():
    _Spy.devices.clear()
    PipelineModule(_mlp(), num_stages=1, partition_method="parameters")
    assert _Spy.devices == ["meta", "cpu"]  # counted without memory, built once for real
    _Spy.devices.clear()
    PipelineModule(_mlp(), num_stages=1, partition_method="uniform")
    assert _Spy.devices == ["cpu"]


def test_state_dict_names_and_seeded_layers():
    layers = [TiedLayerSpec("e", torch.nn.Linear, 3, 3), LayerSpec(torch.nn.Linear, 3, 3), torch.nn.Tanh(),
              TiedLayerSpec("e", torch.nn.Linear, 3, 3, forward_fn=lambda mod, x: x @ mod.weight)]
    a = PipelineModule(layers, num_stages=1, seed_layers=True, base_seed=5)
    b = PipelineModule(layers, num_stages=1, seed_layers=True, base_seed=5)
    assert sorted(a.state_dict()) == ["1.bias", "1.weight", "tied_modules.e.bias", "tied_modules.e.weight"]
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    torch.manual_seed(5 + 1)
    assert torch.equal(a.state_dict()["1.weight"], torch.nn.Linear(3, 3).weight)  # seeded with base_seed + index
    x = torch.randn(2, 3)
    e, lin = a.tied_modules["e"], getattr(a, "1")
    torch.testing.assert_close(a(x), torch.tanh(lin(e(x))) @ e.weight)


def test_process_topology():
    t = ProcessTopology(axes=["pipe", "data"], dims=[2, 4])
    assert t.world_size() == 8 and t.get_rank(pipe=1, data=1) == 5
    assert t.get_coord(5) == t.ProcessCoord(pipe=1, data=1)
    assert t.get_axis_comm_lists("pipe") == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert t.get_axis_comm_lists("data") == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert t.filter_match(pipe=0) == [0, 1, 2, 3] and t.get_axis_list("data", 2) == [2, 6]
    assert t.get_dim("model") == 0 and t.get_axis_comm_lists("model") == []
    assert t.get_rank_repr(5) == ""
    t3 = PipeModelDataParallelTopology(num_pp=2, num_mp=2, num_dp=2)
    assert t3.get_axis_names() == ["pipe", "data", "model"]
    assert t3.get_rank(pipe=1, data=0, model=1) == 5
    assert t3.get_rank_repr(5) == "model_01" and t3.get_rank_repr(5, omit_axes=[]) == "pipe_01-data_00-model_01"
    assert core_sizes(t3) == {"pipe": 2, "data": 2, "tensor": 2}
    assert PipeDataParallelTopology(num_pp=1, num_dp=1).world_size() == 1


def test_topology_errors():
    with pytest.raises(ValueError, match=r"axes=\['a'\] and dims=\[1, 2\] must have the same length"):
        ProcessTopology(["a"], [1, 2])
    with pytest.raises(NotImplementedError, match=r"ordered differently .* build it as ProcessTopology\(axes="
                                                  r"\['pipe', 'data'\]"):
        core_sizes(ProcessTopology(["data", "pipe"], [1, 1]))
    with pytest.raises(ValueError, match=re.escape("the pipeline topology {'pipe': 2, 'data': 2} has 4 ranks but the "
                                                   "job has 1; launch 4 ranks or change the topology's sizes")):
        PipelineParallelGrid(PipeDataParallelTopology(2, 2))


def test_module_bad_input():
    with pytest.raises(ValueError, match=r"pass num_stages=<stages> or topology=<ProcessTopology>"):
        PipelineModule(_mlp())
    with pytest.raises(ValueError, match=r"num_stages=2 does not divide the world size 1; launch a multiple of 2"):
        PipelineModule(_mlp(), num_stages=2)
    with pytest.raises(ValueError, match=r"has 2 ranks but the job has 1"):
        PipelineModule(_mlp(), topology=PipeDataParallelTopology(2, 1))
    with pytest.raises(ValueError, match=re.escape(
            "partition_method='parameters' splits 3 layers into 2 parts (1 stages x 2 virtual stages) as [0, 3, 3], "
            "which leaves part(s) [1] without layers; use fewer stages, more layers, or partition_method='uniform'")):
        PipelineModule([LayerSpec(torch.nn.Linear, 2, 2), torch.nn.ReLU(), torch.nn.ReLU()], num_stages=1,
                       virtual_stages=2)
    with pytest.raises(ValueError, match=r"partition_method='type:conv' matches no layer \(layer types: "
                                         r"\['Linear', 'ReLU', '_Spy'\]\)"):
        PipelineModule(_mlp(), num_stages=1, partition_method="type:conv")
    with pytest.raises(ValueError, match=r"partition_method='best' is not one of"):
        PipelineModule(_mlp(), num_stages=1, partition_method="best")
    with pytest.raises(NotImplementedError, match="'profile' is not implemented"):
        PipelineModule(_mlp(), num_stages=1, partition_method="profile")
    with pytest.raises(RuntimeError, match="LayerSpec only supports torch.nn.Module types"):
        LayerSpec(len)
    with pytest.raises(ValueError, match="layers is empty"):
        PipelineModule([], num_stages=1)
