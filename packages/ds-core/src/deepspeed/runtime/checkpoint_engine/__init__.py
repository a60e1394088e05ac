"""``deepspeed.runtime.checkpoint_engine``: how checkpoint files are written and read.

:class:`CheckpointEngine` is the interface; :class:`TorchCheckpointEngine` the default (atomic
writes, ``weights_only=True`` loads). A feature package can supply another one through the
``checkpoint_engine`` hook of its feature object.
"""

from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

__all__ = ["CheckpointEngine", "TorchCheckpointEngine"]
