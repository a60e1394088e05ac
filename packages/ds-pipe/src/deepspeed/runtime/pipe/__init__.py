"""``deepspeed.runtime.pipe`` (from ds-pipe): DeepSpeed's pipeline modules at their paths."""

from deepspeed.runtime.pipe.module import LayerSpec, PipelineModule, TiedLayerSpec
from deepspeed.runtime.pipe.topology import ProcessTopology

__all__ = ["LayerSpec", "PipelineModule", "ProcessTopology", "TiedLayerSpec"]
