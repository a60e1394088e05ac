"""DeepSpeed's ``deepspeed.runtime.config_utils`` names, for feature packages and user code:
the section base class and the small helpers DeepSpeed's own section modules use."""

from __future__ import annotations

from typing import Any

from deepspeed.config.model import DeepSpeedConfigModel

__all__ = ["DeepSpeedConfigModel", "get_scalar_param", "get_list_param", "get_dict_param",
           "dict_raise_error_on_duplicate_keys", "pp_int"]


def get_scalar_param(param_dict: dict, param_name: str, param_default_value: Any) -> Any:
    return param_dict.get(param_name, param_default_value)


def get_list_param(param_dict: dict, param_name: str, param_default_value: Any) -> Any:
    return param_dict.get(param_name, param_default_value)


def get_dict_param(param_dict: dict, param_name: str, param_default_value: Any) -> Any:
    return param_dict.get(param_name, param_default_value)


def dict_raise_error_on_duplicate_keys(ordered_pairs: list) -> dict:
    """``object_pairs_hook`` for json.load that rejects duplicate keys."""
    out: dict = {}
    for key, value in ordered_pairs:
        if key in out:
            raise ValueError(f"ds_config: duplicate key '{key}'; remove one of them")
        out[key] = value
    return out


class pp_int(int):
    """An int that prints in a readable form (``pp_int(5e8)`` repr is ``500,000,000``), used for
    large defaults in config docs."""

    def __new__(cls, val: Any, custom_print_str: str | None = None):
        inst = super().__new__(cls, int(val))
        inst.custom_print_str = custom_print_str
        return inst

    def __repr__(self) -> str:
        if self.custom_print_str:
            return self.custom_print_str
        return f"{int(self):,}"
