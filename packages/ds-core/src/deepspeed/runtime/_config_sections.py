"""The root of ds_config as ds-core sees it: every top-level key core owns, with DeepSpeed's
names and defaults. Feature packages add their sections to this root at parse time
(:func:`deepspeed.runtime.config.DeepSpeedConfig`)."""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from deepspeed.comm.config import CommsLoggerConfig
from deepspeed.monitor.config import CometConfig, CSVConfig, TensorBoardConfig, WandbConfig
from deepspeed.profiling.config import DeepSpeedFlopsProfilerConfig
from deepspeed.config.model import DeepSpeedConfigModel
from deepspeed.runtime.activation_checkpointing.config import DeepSpeedActivationCheckpointingConfig
from deepspeed.runtime.checkpoint_engine.config import DeepSpeedCheckpointConfig
from deepspeed.runtime.precision_config import (
    DeepSpeedAMPConfig,
    DeepSpeedBF16Config,
    DeepSpeedDataTypesConfig,
    DeepSpeedFP16Config,
    DeepSpeedTorchAutocastConfig,
    dtype_name,
)

STEPS_PER_PRINT_DEFAULT = 10


class OptimizerConfig(DeepSpeedConfigModel):
    """``optimizer {type, params, legacy_fusion}``. ``params`` is passed to the optimizer and is
    checked by the optimizer factory, which knows each optimizer's arguments."""

    type: Optional[str] = None
    params: Optional[dict[str, Any]] = None
    legacy_fusion: bool = False

    @model_validator(mode="after")
    def _type_required(self) -> "OptimizerConfig":
        # Note: without a type the engine would build no optimizer and train nothing.
        if self.type is None and self.params:
            raise ValueError("optimizer.type is required when optimizer.params is given (e.g. \"type\": \"AdamW\"); "
                             "without it no optimizer is built and nothing trains")
        return self


class SchedulerConfig(DeepSpeedConfigModel):
    """``scheduler {type, params}``; ``params`` is checked by the scheduler factory."""

    type: Optional[str] = None
    params: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _type_required(self) -> "SchedulerConfig":
        if self.type is None and self.params is not None:
            raise ValueError("scheduler.type is required when scheduler.params is given (e.g. \"type\": "
                             "\"WarmupLR\"); without it no schedule is built")
        return self


class ThroughputTimerConfig(DeepSpeedConfigModel):
    enabled: bool = True
    synchronized: bool = True


class DeepSpeedTimersConfig(DeepSpeedConfigModel):
    """``timers {throughput {enabled, synchronized}}``."""

    throughput: ThroughputTimerConfig = Field(default_factory=ThroughputTimerConfig)


class ElasticityConfig(DeepSpeedConfigModel):
    """``elasticity``: accepted with ``enabled: false`` only (elastic training is not implemented)."""

    enabled: bool = False
    max_train_batch_size: Optional[int] = None
    micro_batch_sizes: Optional[list[int]] = None
    min_gpus: int = 1
    max_gpus: int = 10000
    min_time: int = 0
    num_gpus_per_node: int = 1
    model_parallel_size: int = 1
    prefer_larger_batch: bool = True
    ignore_non_elastic_batch_info: bool = False
    version: float = 0.2


class CompileConfig(DeepSpeedConfigModel):
    """``compile``: DeepCompile options (DeepCompile itself is not implemented)."""

    deepcompile: bool = False
    free_activation: bool = False
    free_activation_threshold: int = 10 * 1024 * 1024
    offload_activation: bool = False
    offload_opt_states: bool = False
    double_buffer: bool = True
    symmetric_memory: bool = False
    debug_log: bool = False
    offload_parameters: bool = False
    sync_before_reduce: bool = False
    sync_after_reduce: bool = False
    sync_before_allgather: bool = False
    sync_after_allgather: bool = False
    keep_int_input_tensors: bool = True
    keep_all_input_tensors: bool = False
    passes: Optional[list[Literal["z1", "z3", "autosp"]]] = None


class ProgressiveLayerDropConfig(DeepSpeedConfigModel):
    enabled: bool = False
    theta: float = 1.0
    gamma: float = 0.001


class EigenvalueConfig(DeepSpeedConfigModel):
    enabled: bool = False
    verbose: bool = False
    max_iter: int = 100
    tol: float = 1e-2
    stability: float = 1e-6
    gas_boundary_resolution: int = 1
    layer_name: str = "bert.encoder.layer"
    layer_num: int = 0


class HybridEngineConfig(DeepSpeedConfigModel):
    enabled: bool = False
    max_out_tokens: int = Field(512, gt=0)
    inference_tp_size: int = 1
    release_inference_cache: bool = False
    pin_parameters: bool = True
    tp_gather_partition_size: int = 8
    enable_cuda_graph: bool = False


class MSAMPConfig(DeepSpeedConfigModel):
    """``msamp {enabled, opt_level}``: written by Accelerate; MS-AMP is not supported."""

    enabled: bool = False
    opt_level: str = "O1"


class CoreSections(DeepSpeedConfigModel):
    """Every top-level ds_config key that ds-core owns."""

    # batch
    train_batch_size: Optional[int] = None
    train_micro_batch_size_per_gpu: Optional[int] = None
    gradient_accumulation_steps: Optional[int] = None
    managed_gradient_accumulation: bool = False

    # logging and profiling
    steps_per_print: Union[int, float] = STEPS_PER_PRINT_DEFAULT
    wall_clock_breakdown: bool = False
    memory_breakdown: bool = False
    dump_state: bool = False
    log_level: Optional[str] = None
    flops_profiler: DeepSpeedFlopsProfilerConfig = Field(default_factory=DeepSpeedFlopsProfilerConfig)
    timers: DeepSpeedTimersConfig = Field(default_factory=DeepSpeedTimersConfig)
    comms_logger: CommsLoggerConfig = Field(default_factory=CommsLoggerConfig)

    # gradient communication
    communication_data_type: Optional[str] = None
    seq_parallel_communication_data_type: str = "fp32"
    prescale_gradients: bool = False
    gradient_predivide_factor: float = Field(1.0, gt=0)
    gradient_allreduce_op: Literal["mean", "sum"] = "mean"
    sparse_gradients: bool = False
    disable_allgather: bool = False
    gradient_clipping: float = Field(0.0, ge=0)
    #: ours: what a bf16/fp32 step with a NaN/inf gradient norm does ("skip" it with a warning, or
    #: "raise" FloatingPointError); fp16 with a dynamic loss scale skips and lowers the scale.
    nonfinite_gradients: Literal["skip", "raise"] = "skip"

    # optimizer and scheduler
    optimizer: Optional[OptimizerConfig] = None
    scheduler: Optional[SchedulerConfig] = None

    # precision
    fp16: DeepSpeedFP16Config = Field(default_factory=DeepSpeedFP16Config)
    bf16: DeepSpeedBF16Config = Field(default_factory=DeepSpeedBF16Config)
    amp: DeepSpeedAMPConfig = Field(default_factory=DeepSpeedAMPConfig)
    torch_autocast: DeepSpeedTorchAutocastConfig = Field(default_factory=DeepSpeedTorchAutocastConfig)
    data_types: DeepSpeedDataTypesConfig = Field(default_factory=DeepSpeedDataTypesConfig)
    msamp: MSAMPConfig = Field(default_factory=MSAMPConfig)

    # checkpointing
    activation_checkpointing: DeepSpeedActivationCheckpointingConfig = Field(default_factory=DeepSpeedActivationCheckpointingConfig)
    checkpoint: DeepSpeedCheckpointConfig = Field(default_factory=DeepSpeedCheckpointConfig)

    # monitors
    tensorboard: TensorBoardConfig = Field(default_factory=TensorBoardConfig)
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    csv_monitor: CSVConfig = Field(default_factory=CSVConfig)
    comet: CometConfig = Field(default_factory=CometConfig)

    # training features core accepts (most are not implemented: see config._UNSUPPORTED)
    # Note: DeepSpeed itself reads these four as raw dicts with mode-dependent keys; we keep them
    # as dicts too rather than inventing a stricter schema for features we do not implement.
    data_efficiency: Optional[dict[str, Any]] = None
    curriculum_learning: Optional[dict[str, Any]] = None
    sparse_attention: Optional[dict[str, Any]] = None
    autotuning: Optional[dict[str, Any]] = None
    progressive_layer_drop: ProgressiveLayerDropConfig = Field(default_factory=ProgressiveLayerDropConfig)
    eigenvalue: EigenvalueConfig = Field(default_factory=EigenvalueConfig)
    elasticity: ElasticityConfig = Field(default_factory=ElasticityConfig)
    hybrid_engine: HybridEngineConfig = Field(default_factory=HybridEngineConfig)
    compile: CompileConfig = Field(default_factory=CompileConfig)

    # parallelism
    use_data_before_expert_parallelism: bool = False
    sequence_parallel_size: int = Field(1, ge=1)
    data_parallel_size: Optional[int] = Field(None, ge=1)

    # other
    graph_harvesting: bool = False
    dataloader_drop_last: bool = False
    vocabulary_size: Optional[int] = None

    @field_validator("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                     mode="before")
    @classmethod
    def _integral(cls, v: Any) -> Any:
        # Note: JSON written by other tools sometimes carries 8.0 for 8; accept integral floats.
        # A string ("32") or a boolean is refused rather than coerced ("auto" was handled earlier).
        if isinstance(v, bool) or (isinstance(v, str) and v.strip().lower() != "auto"):
            raise ValueError("must be a positive integer, written without quotes (e.g. 32), not "
                             + ("a string" if isinstance(v, str) else "true/false"))
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    @field_validator("steps_per_print", mode="before")
    @classmethod
    def _steps_per_print(cls, v: Any) -> Any:
        # Accelerate writes float("inf") to silence periodic logging.
        if isinstance(v, str) and v.strip().lower() in ("inf", "infinity", "+inf"):
            return math.inf
        if isinstance(v, bool):
            raise ValueError("steps_per_print must be a positive integer or inf")
        if isinstance(v, float):
            if math.isinf(v) and v > 0:
                return v
            if v.is_integer():
                v = int(v)
        if isinstance(v, int) and v >= 1:
            return v
        raise ValueError("steps_per_print must be a positive integer or inf")

    @field_validator("communication_data_type", mode="before")
    @classmethod
    def _comm_dtype(cls, v: Any) -> Optional[str]:
        if isinstance(v, str) and v.strip().lower() == "none":
            return None
        return dtype_name(v, "communication_data_type")

    @field_validator("seq_parallel_communication_data_type", mode="before")
    @classmethod
    def _sp_dtype(cls, v: Any) -> Optional[str]:
        return dtype_name(v, "seq_parallel_communication_data_type")

    @field_validator("gradient_allreduce_op", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v
