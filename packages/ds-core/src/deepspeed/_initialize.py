"""``deepspeed.initialize`` and ``deepspeed.add_config_arguments``."""

from __future__ import annotations

import argparse
from typing import Any

from deepspeed._errors import InputError
from deepspeed.utils.logging import logger


def _resolve_config(args, config, config_params) -> Any:
    if config is not None and config_params is not None and config is not config_params and config != config_params:
        raise ValueError("deepspeed.initialize: both config and config_params were given with different values; "
                         "config_params is the legacy name of config, pass only config")
    if config is None:
        config = config_params
    from_args = None
    if args is not None:
        from_args = getattr(args, "deepspeed_config", None)
        if from_args is None and getattr(args, "deepscale_config", None) is not None:
            logger.warning("--deepscale_config is deprecated, please use --deepspeed_config")
            from_args = args.deepscale_config
    if from_args is not None and config is not None:
        raise ValueError("deepspeed.initialize: a config was given both as args.deepspeed_config and as the config "
                         "argument; pass only one of them")
    config = config if config is not None else from_args
    if config is None:
        raise ValueError("deepspeed.initialize: no DeepSpeed config; pass config=<dict or path to JSON> or "
                         "args with --deepspeed_config")
    return config


def _data_parallel_world(model_dims: dict) -> int | None:
    """The ranks the batch triangle counts when the model carries parallel dimensions itself
    (``model_parallel_dims``): the world divided by their sizes; None (the config's own rule) otherwise."""
    if not model_dims:
        return None
    import math

    import deepspeed.comm as dist

    world = dist.get_world_size() if dist.is_initialized() else 1
    split = math.prod(model_dims.values())
    if world % split:
        raise ValueError(f"the model is built for parallel dimensions {model_dims} (product {split}), which does not "
                         f"divide the world size {world}; launch a multiple of {split} ranks or rebuild the model")
    return world // split


def initialize(args=None, model=None, optimizer=None, model_parameters=None, training_data=None, lr_scheduler=None,
               mpu=None, dist_init_required=None, collate_fn=None, config=None, config_params=None):
    """Build the engine for ``model`` from the ds_config.

    Returns ``(engine, engine.optimizer, engine.training_dataloader, engine.lr_scheduler)``.
    ``optimizer`` and ``lr_scheduler`` may be objects or callables (``optimizer(params)``,
    ``lr_scheduler(optimizer)``); ``model_parameters`` an iterator, a list of tensors, or param
    groups; ``training_data`` a Dataset, for which a distributed loader is built.
    """
    if model is None:
        # Note: DeepSpeed asserts here; InputError is a ValueError and an AssertionError.
        raise InputError("deepspeed.initialize requires a model: model is None; pass the torch.nn.Module to train")
    from deepspeed import _features
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.runtime.engine import DeepSpeedEngine, init_distributed_from_env

    features = _features.installed()
    # Note: the config is parsed once, here, so every hook (engine_class included) receives the
    # same DeepSpeedConfig; its batch triangle needs the world size, hence the process group first.
    init_distributed_from_env(dist_init_required)
    config = DeepSpeedConfig(_resolve_config(args, config, config_params), mpu, features=features,
                             world_size=_data_parallel_world(features.model_parallel_dims(model)))
    features.check_composition(config)
    engine_cls = features.engine_class(model, config) or DeepSpeedEngine
    engine = engine_cls(args=args, model=model, optimizer=optimizer, model_parameters=model_parameters,
                        training_data=training_data, lr_scheduler=lr_scheduler, mpu=mpu,
                        dist_init_required=dist_init_required, collate_fn=collate_fn, config=config,
                        features=features)
    return engine, engine.optimizer, engine.training_dataloader, engine.lr_scheduler


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--deepspeed`` and ``--deepspeed_config`` (and the legacy ``--deepscale*``) to ``parser``."""
    group = parser.add_argument_group("DeepSpeed", "DeepSpeed configurations")
    group.add_argument("--deepspeed", default=False, action="store_true",
                       help="Enable DeepSpeed (helper flag for user code, no impact on DeepSpeed backend)")
    group.add_argument("--deepspeed_config", default=None, type=str, help="DeepSpeed json configuration file.")
    group.add_argument("--deepscale", default=False, action="store_true", help=argparse.SUPPRESS)
    group.add_argument("--deepscale_config", default=None, type=str, help=argparse.SUPPRESS)
    return parser
