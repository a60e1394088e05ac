"""``flops_profiler`` section of ds_config."""

from __future__ import annotations

from typing import Optional

from deepspeed.config.model import DeepSpeedConfigModel


class DeepSpeedFlopsProfilerConfig(DeepSpeedConfigModel):
    """``flops_profiler {enabled, recompute_fwd_factor, profile_step, module_depth, top_modules,
    detailed, output_file}``."""

    enabled: bool = False
    recompute_fwd_factor: float = 0.0
    profile_step: int = 1
    module_depth: int = -1
    top_modules: int = 1
    detailed: bool = True
    output_file: Optional[str] = None
