"""Exception types shared by core's modules.

DeepSpeed checks many inputs with ``assert`` (``deepspeed.initialize`` without a model, a deprecated
config key given with its replacement, the batch triangle), so code written for it catches
``AssertionError``; ours raise ValueError for bad input. :class:`InputError` is both.
"""


class InputError(ValueError, AssertionError):
    """Bad input: a ValueError, and an AssertionError where DeepSpeed asserts on the same input."""
