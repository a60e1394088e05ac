"""``deepspeed.constants`` (DeepSpeed's module): the default rendezvous port and process-group
timeout, inference mode names and the launcher's environment variable names."""

from deepspeed.comm._discovery import default_pg_timeout

#: Port of the torch.distributed rendezvous when none is given (``init_distributed(distributed_port=...)``).
TORCH_DISTRIBUTED_DEFAULT_PORT = 29500
INFERENCE_GENERIC_MODE = "generic"
INFERENCE_SPECIALIZED_MODE = "specialized"
CROSS_RANK = "CROSS_RANK"
CROSS_SIZE = "CROSS_SIZE"
LOCAL_RANK = "LOCAL_RANK"

__all__ = ["TORCH_DISTRIBUTED_DEFAULT_PORT", "default_pg_timeout", "INFERENCE_GENERIC_MODE",
           "INFERENCE_SPECIALIZED_MODE", "CROSS_RANK", "CROSS_SIZE", "LOCAL_RANK"]
