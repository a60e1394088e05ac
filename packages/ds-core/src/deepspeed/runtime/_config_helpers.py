"""DeepSpeed's ``DeepSpeedConfig`` helper methods, and reading ds_config text (JSON or HJSON).

Integrations and scripts written for DeepSpeed call these on a parsed config after changing an
attribute (``cfg.train_batch_size = 64; cfg._configure_train_batch_size()``) or re-initialise it
from a dict (``_initialize_params``). They keep DeepSpeed's names and signatures and run our
checks, so the errors are ours (a :class:`~deepspeed.config.model.ConfigError`, which is both a
ValueError and the AssertionError DeepSpeed raises).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from deepspeed.config.model import ConfigError
from deepspeed.runtime import _batch


class DeepSpeedConfigError(ConfigError):
    """A ds_config that cannot be used (DeepSpeed's name, public at ``deepspeed.runtime.config``).
    Every problem found while parsing is listed, one per line, each naming the dotted key; a
    ValueError, so ``except ValueError`` works, and an AssertionError, the type DeepSpeed's config
    checks raise."""


def parse_config_text(text: str, source: str, object_pairs_hook: Callable[[list], dict]) -> Any:
    """``text`` as JSON, else as HJSON (DeepSpeed reads config files with hjson: comments,
    unquoted keys and strings, trailing commas). ``source`` names the file or "string"."""
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as json_exc:
        try:
            import hjson
        except ImportError:  # a dependency of ds-core; only a broken install lacks it
            raise ValueError(f"ds_config {source} is not valid JSON: {json_exc} "
                             "(HJSON configs need the hjson package: pip install hjson)") from None
        try:
            return hjson.loads(text, object_pairs_hook=object_pairs_hook)
        except hjson.HjsonDecodeError as exc:
            raise ValueError(f"ds_config {source} is not valid JSON ({json_exc}) nor HJSON ({exc})") from None


class DeepSpeedConfigHelpers:
    """DeepSpeed's helper methods of ``DeepSpeedConfig`` (mixed into it)."""

    def _initialize_params(self, param_dict: dict) -> None:
        """Re-read every attribute from ``param_dict`` (a whole ds_config), with the same
        world size; the config is unchanged when ``param_dict`` is invalid."""
        fresh = type(self)(param_dict, world_size=self.world_size, features=self._features)
        vars(self).update(vars(fresh))

    def _batch_assertion(self) -> None:
        """Check the three batch numbers agree with the data-parallel world size."""
        train, micro, gas = self.train_batch_size, self.train_micro_batch_size_per_gpu, self.gradient_accumulation_steps
        for name, value, ds_name in ((_batch.TRAIN, train, "Train batch size"),
                                     (_batch.MICRO, micro, "Micro batch size per gpu"),
                                     (_batch.GAS, gas, "Gradient accumulation steps")):
            if value is None or value <= 0:
                raise DeepSpeedConfigError(f"{ds_name}: {value} has to be greater than 0 "
                                           f"(ds_config: {name} must be a positive integer)")
        if train != micro * gas * self.world_size:
            raise DeepSpeedConfigError(
                "Check batch related parameters. train_batch_size is not equal to micro_batch_per_gpu * "
                f"gradient_acc_step * world_size {train} != {micro} * {gas} * {self.world_size} "
                f"(ds_config: set two of {_batch.TRAIN}, {_batch.MICRO}, {_batch.GAS} and let the third be computed)")

    def _do_error_check(self) -> None:
        """The config's consistency checks (DeepSpeed's name)."""
        self._check()
        self._check_partitioned_precision()
        self._features.validate_config(self)
        self._batch_assertion()

    def _do_warning_check(self) -> None:
        """Log the warnings about keys that are set but have no effect (DeepSpeed's name)."""
        self._warn_unsupported()

    def _do_sanity_check(self) -> None:
        self._do_error_check()
        self._do_warning_check()
