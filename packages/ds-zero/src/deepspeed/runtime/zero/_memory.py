"""ZeRO model-state memory estimators (DeepSpeed's ``estimate_zero{2,3}_model_states_mem_needs*``).

Bytes per parameter, mixed precision with Adam (DeepSpeed's formulas): 2 for 16-bit weights,
2 for 16-bit gradients and 12 for the fp32 master weights and the two Adam moments, with what is
partitioned divided by the number of data-parallel ranks. ``additional_buffer_factor`` pads the
host estimates for temporary buffers.
"""

from __future__ import annotations

import torch

_GIB = 2**30


def _params(model: torch.nn.Module) -> tuple[int, int]:
    """(total parameters, parameters of the largest single module) counted with ds_numel under ZeRO-3."""

    def numel(p):
        return getattr(p, "ds_numel", p.numel())

    total = sum(numel(p) for p in model.parameters())
    largest = max((sum(numel(p) for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
    return total, largest


def estimate_zero2_model_states_mem_needs(total_params: int, num_gpus_per_node: int = 1, num_nodes: int = 1,
                                          cpu_offload: bool = True, additional_buffer_factor: float = 1.5):
    """``(cpu_bytes, gpu_bytes)`` per device for ZeRO 2."""
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu_mem = 2 * total_params
        cpu_mem = total_params * max(4 * total_gpus, 16) * additional_buffer_factor
    else:
        gpu_mem = 4 * total_params + int(16 * total_params / total_gpus)
        cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem)


def estimate_zero3_model_states_mem_needs(total_params: int, largest_layer_params: int, num_gpus_per_node: int = 1,
                                          num_nodes: int = 1, cpu_offload: bool = True,
                                          cpu_offload_params: bool = True, zero_init: bool = True,
                                          additional_buffer_factor: float = 1.5):
    """``(cpu_bytes, gpu_bytes, largest_layer_bytes)`` per device for ZeRO 3."""
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest_layer_memory = 4 * largest_layer_params
    if cpu_offload:
        if cpu_offload_params:
            gpu_mem = largest_layer_memory
            per_param = 18 * gpus_factor if zero_init else max(4 * num_gpus_per_node, 18 * gpus_factor)
        else:
            gpu_mem = largest_layer_memory + int(2 * total_params / total_gpus)
            per_param = 16 * gpus_factor if zero_init else max(4 * num_gpus_per_node, 16 * gpus_factor)
        cpu_mem = total_params * per_param * additional_buffer_factor
    else:
        gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
        per_param = 4 * gpus_factor if zero_init else 4 * num_gpus_per_node
        cpu_mem = total_params * per_param * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem), int(largest_layer_memory)


def _print(title: str, rows: list[tuple[str, int, int]]) -> None:
    print(title)
    print("  per CPU  |  per GPU |   Options")
    for options, cpu, gpu in rows:
        print(f"  {cpu / _GIB:7.2f}GB | {gpu / _GIB:6.2f}GB | {options}")


def estimate_zero2_model_states_mem_needs_all_cold(total_params: int, num_gpus_per_node: int = 1,
                                                   num_nodes: int = 1, additional_buffer_factor: float = 1.5):
    """Print ZeRO-2 needs for ``total_params`` parameters, with and without optimizer offload."""
    rows = []
    for offload in (True, False):
        cpu, gpu = estimate_zero2_model_states_mem_needs(total_params, num_gpus_per_node, num_nodes, offload,
                                                         additional_buffer_factor)
        rows.append((f"offload_optimizer={'cpu' if offload else 'none'}", cpu, gpu))
    _print(f"Estimated memory needed for params, optim states and gradients for a:\nHW: Setup with {num_nodes} "
           f"node(s), {num_gpus_per_node} GPU(s) per node.\nSW: Model with {int(total_params / 1e6)}M total params.",
           rows)
    return rows


def estimate_zero2_model_states_mem_needs_all_live(model: torch.nn.Module, num_gpus_per_node: int = 1,
                                                   num_nodes: int = 1, additional_buffer_factor: float = 1.5):
    """Print ZeRO-2 needs for ``model`` (counting its parameters); returns the table rows."""
    total, _ = _params(model)
    return estimate_zero2_model_states_mem_needs_all_cold(total, num_gpus_per_node, num_nodes,
                                                          additional_buffer_factor)


def estimate_zero3_model_states_mem_needs_all_cold(total_params: int, largest_layer_params: int,
                                                   num_gpus_per_node: int = 1, num_nodes: int = 1,
                                                   additional_buffer_factor: float = 1.5):
    """Print ZeRO-3 needs for every offload / zero.Init combination."""
    rows = []
    for offload, offload_params in ((True, True), (True, False), (False, False)):
        for zero_init in (True, False):
            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(total_params, largest_layer_params,
                                                                num_gpus_per_node, num_nodes, offload,
                                                                offload_params, zero_init, additional_buffer_factor)
            rows.append((f"offload_param={'cpu' if offload_params else 'none'}, "
                         f"offload_optimizer={'cpu' if offload else 'none'}, zero_init={int(zero_init)}", cpu, gpu))
    _print(f"Estimated memory needed for params, optim states and gradients for a:\nHW: Setup with {num_nodes} "
           f"node(s), {num_gpus_per_node} GPU(s) per node.\nSW: Model with {int(total_params / 1e6)}M total params, "
           f"{int(largest_layer_params / 1e6)}M largest layer params.", rows)
    return rows


def estimate_zero3_model_states_mem_needs_all_live(model: torch.nn.Module, num_gpus_per_node: int = 1,
                                                   num_nodes: int = 1, additional_buffer_factor: float = 1.5):
    """Print ZeRO-3 needs for ``model``; returns the table rows."""
    total, largest = _params(model)
    return estimate_zero3_model_states_mem_needs_all_cold(total, largest, num_gpus_per_node, num_nodes,
                                                          additional_buffer_factor)
