"""``deepspeed.utils.exceptions`` (DeepSpeed's module)."""


class DeprecatedException(Exception):
    """Raised by DeepSpeed APIs that were removed (DeepSpeed's name)."""


__all__ = ["DeprecatedException"]
