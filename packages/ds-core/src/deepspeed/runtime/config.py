"""``DeepSpeedConfig``: parse a ds_config (dict, JSON/HJSON path or base64 JSON) into pydantic models.

The root model is core's sections (:mod:`deepspeed.runtime._config_sections`) plus the sections
that installed feature packages register through their feature object's ``config_sections()``.
Unknown keys at any depth are errors with a did-you-mean; a section that belongs to a feature
that is not installed names the package to install; ``"auto"`` means "use the default" and is
logged; the batch triangle is resolved and checked (:mod:`deepspeed.runtime._batch`).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
from typing import Any, Callable, Optional, Union

from pydantic import Field, create_model

from deepspeed import _providers
from deepspeed.comm.config import DeepSpeedCommsConfig
from deepspeed.monitor.config import DeepSpeedMonitorConfig
from deepspeed.runtime import _batch
from deepspeed.config.model import AUTO, DeepSpeedConfigModel, _is_auto, validate_model
from deepspeed.runtime._config_helpers import DeepSpeedConfigError, DeepSpeedConfigHelpers, parse_config_text
from deepspeed.runtime._config_sections import CoreSections
from deepspeed.runtime.checkpoint_engine.config import ValidationMode
from deepspeed.runtime.precision_config import torch_dtype
from deepspeed.utils.logging import logger

__all__ = ["DeepSpeedConfig", "DeepSpeedConfigModel", "DeepSpeedConfigError"]

ADAGRAD_OPTIMIZER = "adagrad"
ADAM_OPTIMIZER = "adam"
ADAMW_OPTIMIZER = "adamw"
LAMB_OPTIMIZER = "lamb"
ONEBIT_ADAM_OPTIMIZER = "onebitadam"
ZERO_ONE_ADAM_OPTIMIZER = "zerooneadam"
ONEBIT_LAMB_OPTIMIZER = "onebitlamb"
MUADAM_OPTIMIZER = "muadam"
MUADAMW_OPTIMIZER = "muadamw"
MUSGD_OPTIMIZER = "musgd"
LION_OPTIMIZER = "lion"
MUON_OPTIMIZER = "muon"
DEEPSPEED_OPTIMIZERS = [
    ADAGRAD_OPTIMIZER, ADAM_OPTIMIZER, ADAMW_OPTIMIZER, LAMB_OPTIMIZER, ONEBIT_ADAM_OPTIMIZER,
    ONEBIT_LAMB_OPTIMIZER, ZERO_ONE_ADAM_OPTIMIZER, MUADAM_OPTIMIZER, MUADAMW_OPTIMIZER,
    MUSGD_OPTIMIZER, LION_OPTIMIZER, MUON_OPTIMIZER,
]
TORCH_ADAM_PARAM = "torch_adam"
ADAM_W_MODE = "adam_w_mode"
ADAM_W_MODE_DEFAULT = True


# ---------------------------------------------------------------------------------------------
# Sections owned by feature packages
# ---------------------------------------------------------------------------------------------


def _lookup(section: Any, root: dict, path: str) -> list:
    """Values at ``path`` (see :class:`deepspeed.protocols.Cond`); ``*`` fans out over a level."""
    if path.startswith("/"):
        current, parts = [root], path.strip("/").split("/")
    else:
        current, parts = [section], [p for p in path.split("/") if p]
    for part in parts:
        nxt = []
        for value in current:
            if not isinstance(value, dict):
                nxt.append(None)
            elif part == "*":
                nxt.extend(value.values())
            else:
                nxt.append(value.get(part))
        current = nxt
    return current


def section_matters(conditions: tuple, section: Any, root: dict) -> bool:
    """Does a section of an uninstalled feature matter? (:class:`deepspeed.protocols.SectionUse`)"""
    if not conditions:
        return False
    if section is None or section is False or section == {}:
        return False
    if section is True:
        return True
    for path, op, values in conditions:
        found = _lookup(section, root, path)
        hit = any(v in values for v in found) if op == "in" else any(v not in values for v in found)
        if hit:
            return True
    return False


# Keys renamed before validation: legacy spelling -> current key.
_RENAMED = {
    "bfloat16": "bf16",
    "seq_parallel_comm_data_type": "seq_parallel_communication_data_type",
}

# (dotted key, "is it on?", what happens) for accepted keys whose behaviour is not implemented.
_UNSUPPORTED: list[tuple[str, Callable[[Any], bool], str]] = [
    ("amp.enabled", bool, "NVIDIA apex AMP is not supported; use fp16 or bf16"),
    ("msamp.enabled", bool, "MS-AMP is not supported; training runs without it"),
    ("autotuning", lambda v: isinstance(v, dict) and bool(v.get("enabled")), "the autotuner is not implemented"),
    ("data_efficiency", lambda v: isinstance(v, dict) and bool(v.get("enabled")),
     "data efficiency (curriculum sampling, random-LTD) is not implemented"),
    ("curriculum_learning", lambda v: isinstance(v, dict) and bool(v.get("enabled")),
     "legacy curriculum learning is not implemented"),
    ("sparse_attention", lambda v: v is not None, "sparse attention is not implemented"),
    ("progressive_layer_drop.enabled", bool, "progressive layer drop is not implemented"),
    ("eigenvalue.enabled", bool, "eigenvalue computation is not implemented"),
    ("hybrid_engine.enabled", bool, "the hybrid (RLHF) engine is not implemented"),
    ("compile.deepcompile", bool, "DeepCompile is not implemented; engine.compile() uses torch.compile"),
    ("graph_harvesting", bool, "graph harvesting is not implemented"),
    ("managed_gradient_accumulation", bool, "managed gradient accumulation is not implemented"),
    ("checkpoint.use_node_local_storage", bool,
     "it has no effect: global rank 0 writes the model states, which assumes storage every node sees"),
    ("checkpoint.writer", lambda v: v is not None,
     "it has no effect: files are written by the engine's checkpoint engine (atomic torch.save)"),
    ("checkpoint.parallel_write.pipeline_stage", bool, "it has no effect without pipeline parallelism"),
]

class _RootBase(CoreSections):
    @classmethod
    def _extra_key_names(cls) -> list[str]:
        # candidates for did-you-mean even when the owning package is not installed
        return list(_providers.SECTIONS) + list(_RENAMED)

    def __reduce__(self):
        # Note: the root class is built at run time from the installed features, so pickle cannot
        # find it by name; rebuild it (in the receiving process) from the keys the user set.
        return (_unpickle_root, (self.model_dump(exclude_unset=True, by_alias=True),))


def _unpickle_root(data: dict) -> "_RootBase":
    from deepspeed import _features

    return _root_model(_features.installed().config_sections(CoreSections.model_fields)[0]).model_validate(data)


_root_cache: dict[tuple, type] = {}


def _root_model(sections: dict[str, type]) -> type:
    key = tuple(sorted((k, repr(m) if isinstance(m, tuple) else id(m)) for k, m in sections.items()))
    if key not in _root_cache:
        fields = {}
        for k, m in sections.items():
            if isinstance(m, tuple):  # a scalar key: (type, default)
                fields[k] = (m[0], Field(m[1]))
            else:
                fields[k] = (m, Field(default_factory=m))
        _root_cache[key] = create_model("DeepSpeedConfigRoot", __base__=_RootBase, **fields)
    return _root_cache[key]


# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------


def _no_duplicates(source: str) -> Callable[[list], dict]:
    def hook(pairs: list) -> dict:
        out: dict = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"ds_config {source}: duplicate key '{k}'; remove one of them")
            out[k] = v
        return out

    return hook


def _load(config: Any) -> dict:
    if isinstance(config, dict):
        return copy.deepcopy(config)
    if isinstance(config, os.PathLike):
        config = os.fspath(config)
    if not isinstance(config, str):
        raise ValueError(
            f"ds_config must be a dict, a path to a JSON file, or a base64-encoded JSON string "
            f"(got {type(config).__name__})"
        )
    if os.path.exists(config):
        with open(config, "r") as f:
            loaded = parse_config_text(f.read(), config, _no_duplicates(config))
    else:
        text = config.strip()
        if not text.startswith("{"):
            try:
                text = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                shown = config if len(config) <= 80 else config[:77] + "..."
                raise ValueError(
                    f"ds_config '{shown}' is neither an existing file nor base64-encoded JSON; "
                    f"pass a dict, a path to a JSON file, or base64 of the JSON text"
                ) from None
        loaded = parse_config_text(text, "string", _no_duplicates("string"))
    if not isinstance(loaded, dict):
        raise ValueError(f"ds_config must be a JSON object at the top level (got {type(loaded).__name__})")
    return loaded


def _strip_auto(data: dict, path: str = "") -> tuple[dict, list[str]]:
    """Drop every ``"auto"`` value (at any depth) so the key takes its default; return the
    cleaned dict and the dotted keys that were "auto"."""
    out: dict = {}
    autos: list[str] = []
    for key, value in data.items():
        dotted = f"{path}.{key}" if path else str(key)
        if _is_auto(value):
            autos.append(dotted)
            continue
        if isinstance(value, dict):
            value, inner = _strip_auto(value, dotted)
            autos.extend(inner)
        out[key] = value
    return out, autos


def _get(data: dict, dotted: str) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


# ---------------------------------------------------------------------------------------------
# DeepSpeedConfig
# ---------------------------------------------------------------------------------------------


class DeepSpeedConfig(DeepSpeedConfigHelpers):
    """A parsed and checked ds_config, with DeepSpeed's flat attribute names.

    ``config``: a dict, a path to a JSON or HJSON file, or a base64-encoded JSON string. ``mpu`` /
    ``mesh_device`` / ``world_size`` decide the data-parallel world size of the batch triangle
    (``check_batch=False`` leaves the batch sizes as given: for readers that need other sections
    only, such as ``zero.Init``). ``features``: the feature set whose sections are parsed (the
    installed ones by default).
    ``.model`` is the validated pydantic root; ``._param_dict`` the dict after "auto" handling.
    """

    def __init__(self, config: Union[str, dict, os.PathLike], mpu: Any = None, mesh_device: Any = None,
                 world_size: Optional[int] = None, features: Any = None, check_batch: bool = True):
        if features is None:
            from deepspeed import _features

            features = _features.installed()
        self._features = features
        raw = _load(config)
        param_dict, autos = _strip_auto(raw)
        for dotted in autos:
            logger.info(f"ds_config: '{dotted}' is \"{AUTO}\"; using its default")

        errors: list[str] = []
        for old, new in _RENAMED.items():
            if old in param_dict:
                if new in param_dict:
                    errors.append(f"ds_config: both '{old}' and '{new}' are set; '{old}' is the legacy "
                                  f"name of '{new}', keep only '{new}'")
                    param_dict.pop(old)  # Note: reported here, not again as an unknown key
                else:
                    param_dict[new] = param_dict.pop(old)

        sections, installed = features.config_sections(CoreSections.model_fields)
        to_validate = dict(param_dict)
        for key, (dist, conditions) in _providers.SECTIONS.items():
            if key not in to_validate or key in sections:
                continue
            value = to_validate.pop(key)
            if not section_matters(conditions, value, param_dict):
                # Note: a warning when the section sets keys (they do nothing here), else a log line.
                log = logger.warning if isinstance(value, dict) and len(value) > 1 else logger.info
                log(f"ds_config.{key} is ignored: it is disabled, and {dist} (which provides it) "
                    f"{'does not implement it yet' if dist in installed else 'is not installed'}")
            elif dist in installed:
                errors.append(f"ds_config.{key} is not implemented by the installed {dist} yet; remove the "
                              f"section (or disable it) to train without it, or upgrade {dist}")
            else:
                errors.append(f"ds_config.{key} needs {dist}: pip install {dist}")

        root = _root_model(sections)
        try:
            self.model = validate_model(root, to_validate, "ds_config")
        except ValueError as exc:
            errors.extend(str(exc).splitlines())
            self.model = None
        if errors:
            raise DeepSpeedConfigError("\n".join(errors))

        self._param_dict = param_dict
        self._check()
        self._warn_unsupported()

        self.global_rank = _global_rank()
        self.world_size = _batch.dp_world_size(world_size, mpu, mesh_device, self.model.sequence_parallel_size)
        self._set_flat_attributes()
        self._set_feature_attributes()
        if check_batch:
            self._configure_train_batch_size(autos)
        else:
            m = self.model
            self.train_batch_size = m.train_batch_size
            self.train_micro_batch_size_per_gpu = m.train_micro_batch_size_per_gpu
            self.gradient_accumulation_steps = m.gradient_accumulation_steps
        features.validate_config(self)
        self._check_partitioned_precision()

    # -- checks ---------------------------------------------------------------------------

    def _check(self) -> None:
        m = self.model
        if m.fp16.enabled and m.bf16.enabled:
            raise ValueError("ds_config: fp16.enabled and bf16.enabled are both true; enable at most one of them")
        if m.elasticity.enabled:
            raise NotImplementedError(
                "ds_config.elasticity.enabled=true: elastic training is not implemented; "
                "set elasticity.enabled to false or remove the section"
            )
        if m.bf16.bf16_optimizer_states and not m.bf16.bf16_master_weights_and_grads:
            raise DeepSpeedConfigError("bf16_optimizer_states requires bf16_master_weights_and_grads to be enabled. "
                                       "(ds_config: bf16.bf16_optimizer_states=true needs "
                                       "bf16.bf16_master_weights_and_grads=true)")

    def _check_partitioned_precision(self) -> None:
        m = self.model
        for flag, name, ds_name in (
                (m.fp16.fp16_master_weights_and_grads, "fp16.fp16_master_weights_and_grads", "Fp16_master_weights_and_grads"),
                (m.bf16.bf16_master_weights_and_grads, "bf16.bf16_master_weights_and_grads", "Bf16_master_weights_and_grads"),
                (m.bf16.bf16_optimizer_states, "bf16.bf16_optimizer_states", "bf16_optimizer_states")):
            if flag and not self._features.active(self):
                # Note: DeepSpeed's sentence first (scripts and tests match on it), then ours.
                raise DeepSpeedConfigError(
                    f"{ds_name} is only supported with ZeRO Stage 1, 2, or 3. "
                    f"(ds_config: {name}=true is implemented only by an optimizer that partitions model states "
                    "(ZeRO stages 1-3, from ds-zero), and no such feature is in use for this config; remove the key)")

    def _warn_unsupported(self) -> None:
        for dotted, is_on, what in _UNSUPPORTED:
            value = _get(self._param_dict, dotted)
            if value is not None and is_on(value):
                logger.warning(f"ds_config: '{dotted}' is set but {what}")
        comms = self._param_dict.get("comms_logger")
        if isinstance(comms, dict) and not self.model.comms_logger.enabled:
            idle = sorted(k for k in comms if k != "enabled")
            if idle:
                logger.warning(f"ds_config: comms_logger.{', comms_logger.'.join(idle)} set but comms_logger.enabled "
                               "is false, so nothing is logged; set comms_logger.enabled to true")
        if self.model.vocabulary_size and self.model.vocabulary_size % 8 != 0:
            logger.warning(f"ds_config: vocabulary_size {self.model.vocabulary_size} is not a multiple of 8, "
                           "which may lower tensor-core utilisation")
        params = (self.model.optimizer.params or {}) if self.model.optimizer else {}
        if isinstance(params.get("max_grad_norm"), (int, float)) and params["max_grad_norm"] > 0:
            logger.warning("ds_config: optimizer.params.max_grad_norm is not supported; use the top-level "
                           "'gradient_clipping' instead")

    # -- batch ----------------------------------------------------------------------------

    def _configure_train_batch_size(self, autos: Optional[list[str]] = None) -> None:
        """Resolve and check the batch triangle. Called without arguments (DeepSpeed's signature,
        after a caller changed a batch attribute) it works from the attributes."""
        if autos is None:
            self._set_batch_related_parameters()
            self._batch_assertion()
            return
        m = self.model
        train, micro, gas = m.train_batch_size, m.train_micro_batch_size_per_gpu, m.gradient_accumulation_steps
        if train is None and micro is None and (_batch.TRAIN in autos or _batch.MICRO in autos):
            # Note: an HF-style config whose batch keys are all "auto" reaches us only when nothing
            # filled them in (e.g. zero.Init before the Trainer runs); DeepSpeed would refuse it.
            # Use a micro batch of 1 so the config parses, and say so.
            logger.info(f"ds_config: {_batch.TRAIN} and {_batch.MICRO} are \"auto\"; using {_batch.MICRO}=1")
            micro = 1
        try:
            sizes = _batch.resolve_batch(train, micro, gas, self.world_size)
        except ValueError as exc:
            raise DeepSpeedConfigError(str(exc)) from None
        self.train_batch_size = sizes.train_batch_size
        self.train_micro_batch_size_per_gpu = sizes.train_micro_batch_size_per_gpu
        self.gradient_accumulation_steps = sizes.gradient_accumulation_steps

    def _set_batch_related_parameters(self) -> None:
        """Recompute the triangle after a caller changed one corner (DeepSpeed's method name)."""
        try:
            sizes = _batch.resolve_batch(self.train_batch_size, self.train_micro_batch_size_per_gpu,
                                         self.gradient_accumulation_steps, self.world_size)
        except ValueError as exc:
            raise DeepSpeedConfigError(str(exc)) from None
        self.train_batch_size = sizes.train_batch_size
        self.train_micro_batch_size_per_gpu = sizes.train_micro_batch_size_per_gpu
        self.gradient_accumulation_steps = sizes.gradient_accumulation_steps

    # -- flat attributes --------------------------------------------------------------------

    def _set_flat_attributes(self) -> None:
        m = self.model
        self.steps_per_print = m.steps_per_print
        self.dump_state = m.dump_state
        self.disable_allgather = m.disable_allgather
        self.communication_data_type = torch_dtype(m.communication_data_type)
        self.seq_parallel_communication_data_type = torch_dtype(m.seq_parallel_communication_data_type)
        self.prescale_gradients = m.prescale_gradients
        self.gradient_predivide_factor = m.gradient_predivide_factor
        self.gradient_allreduce_op = m.gradient_allreduce_op
        self.sparse_gradients_enabled = m.sparse_gradients
        self.managed_gradient_accumulation = m.managed_gradient_accumulation


        self.activation_checkpointing_config = m.activation_checkpointing
        self.comms_config = DeepSpeedCommsConfig(self._param_dict)
        self.monitor_config = DeepSpeedMonitorConfig(
            tensorboard=m.tensorboard, wandb=m.wandb, csv_monitor=m.csv_monitor, comet=m.comet)

        self.gradient_clipping = m.gradient_clipping
        self.float16_config = m.fp16
        self.bfloat16_config = m.bf16
        self.fp16_enabled = m.fp16.enabled
        self.fp16_auto_cast = m.fp16.auto_cast
        self.fp16_master_weights_and_gradients = m.fp16.fp16_master_weights_and_grads
        self.bfloat16_enabled = m.bf16.enabled
        self.bf16_enabled = m.bf16.enabled
        self.bfloat16_immediate_grad_update = m.bf16.immediate_grad_update
        self.bfloat16_check_grad_overflow = m.bf16.check_grad_overflow
        self.loss_scale = m.fp16.loss_scale
        self.initial_dynamic_scale = m.fp16.initial_dynamic_scale()
        self.dynamic_loss_scale_args = m.fp16.dynamic_loss_scale_args() if m.fp16.enabled else None
        self.amp_enabled = m.amp.enabled
        self.amp_params = m.amp.params() if "amp" in self._param_dict else False
        self.torch_autocast_enabled = m.torch_autocast.enabled
        self.torch_autocast_dtype = torch_dtype(m.torch_autocast.dtype)
        self.torch_autocast_lower_precision_safe_modules = m.torch_autocast.lower_precision_safe_modules
        self.graph_harvesting = m.graph_harvesting

        opt = m.optimizer
        name = opt.type if opt is not None else None
        if name is not None and name.lower() in DEEPSPEED_OPTIMIZERS:
            name = name.lower()
        self.optimizer_name = name
        self.optimizer_params = opt.params if opt is not None and name is not None else None
        self.optimizer_legacy_fusion = opt.legacy_fusion if opt is not None else False
        sch = m.scheduler
        self.scheduler_name = sch.type if sch is not None else None
        self.scheduler_params = sch.params if sch is not None and sch.type is not None else None

        self.flops_profiler_config = m.flops_profiler
        self.wall_clock_breakdown = m.wall_clock_breakdown or m.flops_profiler.enabled
        self.memory_breakdown = m.memory_breakdown
        self.timers_config = m.timers
        self.compile_config = m.compile
        self.hybrid_engine = m.hybrid_engine
        self.elasticity_enabled = m.elasticity.enabled
        self.autotuning_config = m.autotuning
        self.sparse_attention = m.sparse_attention
        self.pld_enabled = m.progressive_layer_drop.enabled
        self.pld_params = (m.progressive_layer_drop.model_dump(exclude={"enabled"})
                           if "progressive_layer_drop" in self._param_dict else False)
        ev = m.eigenvalue
        self.eigenvalue_enabled = ev.enabled
        self.eigenvalue_verbose = ev.verbose
        self.eigenvalue_max_iter = ev.max_iter
        self.eigenvalue_tol = ev.tol
        self.eigenvalue_stability = ev.stability
        self.eigenvalue_gas_boundary_resolution = ev.gas_boundary_resolution
        self.eigenvalue_layer_name = ev.layer_name
        self.eigenvalue_layer_num = ev.layer_num
        self.data_efficiency_enabled = bool((m.data_efficiency or {}).get("enabled", False))
        self.data_efficiency_config = m.data_efficiency or {}
        self.curriculum_enabled_legacy = bool((m.curriculum_learning or {}).get("enabled", False))
        self.curriculum_params_legacy = m.curriculum_learning or False
        self.use_data_before_expert_parallel_ = m.use_data_before_expert_parallelism
        self.sequence_parallel_size = m.sequence_parallel_size
        self.data_parallel_size = m.data_parallel_size

        ckpt = m.checkpoint
        self.checkpoint_config = ckpt
        self.checkpoint_tag_validation_enabled = ckpt.tag_validation != ValidationMode.IGNORE
        self.checkpoint_tag_validation_fail = ckpt.tag_validation == ValidationMode.FAIL
        self.load_universal_checkpoint = ckpt.load_universal
        self.use_node_local_storage = ckpt.use_node_local_storage
        self.checkpoint_parallel_write_pipeline = ckpt.parallel_write.pipeline_stage
        self.grad_accum_dtype = m.data_types.grad_accum_dtype
        self.param_dtype = m.data_types.param_dtype
        self.buffer_dtype = m.data_types.buffer_dtype
        self.dataloader_drop_last = m.dataloader_drop_last
        self.log_level = m.log_level
        self.vocabulary_size = m.vocabulary_size

        self.reduce_bucket_size = None  # the engine's default bucket size (a partitioning feature may set it)

    def _set_feature_attributes(self) -> None:
        """DeepSpeed's flat attribute names of feature sections: each installed feature's values over
        the documented 'absent' value of every attribute the provider table lists."""
        for attributes in _providers.ATTRIBUTES.values():
            for name, value in attributes.items():
                setattr(self, name, copy.deepcopy(value))
        for name, value in self._features.config_attributes(self).items():
            setattr(self, name, value)

    # -- printing ---------------------------------------------------------------------------

    def print_user_config(self) -> None:
        logger.info("  json = {}".format(json.dumps(self._param_dict, sort_keys=True, indent=4,
                                                     separators=(",", ":"), default=str)))

    def print(self, name: str) -> None:
        """Log every attribute, then the user's config as JSON (DeepSpeed's format)."""
        logger.info(f"{name}:")
        for arg in sorted(vars(self)):
            if arg in ("_param_dict", "model", "_features"):
                continue
            dots = "." * (29 - len(arg))
            logger.info(f"  {arg} {dots} {getattr(self, arg)}")
        self.print_user_config()

    def __repr__(self) -> str:
        return (f"DeepSpeedConfig(train_batch_size={self.train_batch_size}, "
                f"train_micro_batch_size_per_gpu={self.train_micro_batch_size_per_gpu}, "
                f"gradient_accumulation_steps={self.gradient_accumulation_steps}, world_size={self.world_size})")


def _global_rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))
