"""``deepspeed.pipe`` (from ds-pipe): pipeline parallelism with DeepSpeed's names.

``PipelineModule``, ``LayerSpec``, ``TiedLayerSpec`` (:mod:`deepspeed.runtime.pipe.module`), the
topologies (:mod:`deepspeed.runtime.pipe.topology`); schedules are in
:mod:`deepspeed.runtime.pipe.schedule`, the engine in :mod:`deepspeed.runtime.pipe.engine`.
"""

from deepspeed.pipe._version import __version__
from deepspeed.runtime.pipe.module import LayerSpec, PipelineModule, TiedLayerSpec
from deepspeed.runtime.pipe.topology import (
    PipeDataParallelTopology,
    PipelineParallelGrid,
    PipeModelDataParallelTopology,
    ProcessTopology,
)

__all__ = ["LayerSpec", "PipeDataParallelTopology", "PipeModelDataParallelTopology", "PipelineModule",
           "PipelineParallelGrid", "ProcessTopology", "TiedLayerSpec", "__version__"]
