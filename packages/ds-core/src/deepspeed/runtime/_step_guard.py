"""Two steps the engine refuses to take silently.

* ``step()`` with no gradient since the previous ``step()`` (no ``backward``): plain torch leaves
  the weights alone when no parameter has a gradient, but Adam-like optimizers would apply their
  momentum to zeroed gradient buffers. The engine does nothing (weights, optimizer state and
  counters unchanged) and says so once.
* A step whose gradient norm is NaN/inf with bf16 or fp32 (fp16 with a dynamic loss scale already
  skips such steps, as DeepSpeed does): the optimizer skips the step, and the engine warns naming
  the step, or raises ``FloatingPointError`` when ds_config ``nonfinite_gradients`` is ``"raise"``
  (the default is ``"skip"``). ``skipped_steps`` counts these steps, like fp16 overflows.
"""

from __future__ import annotations

import torch

from deepspeed.utils.logging import logger

SKIP, RAISE = "skip", "raise"


class StepGuard:
    def __init__(self, nonfinite: str = SKIP) -> None:
        self.nonfinite = nonfinite
        self.backward_seen = False
        self._warned_no_grad = False

    def note_backward(self) -> None:
        self.backward_seen = True

    def no_gradients(self, module: torch.nn.Module, step: int) -> bool:
        """True (after a one-time warning) when ``step()`` has nothing to apply: no backward since
        the last step and no parameter holding a gradient."""
        if self.backward_seen or any(p.grad is not None for p in module.parameters()):
            return False
        if not self._warned_no_grad:
            self._warned_no_grad = True
            logger.warning(f"engine.step() at global step {step} was called without a backward() since the previous "
                           "step: nothing to apply, so the weights, optimizer state and step counters are left "
                           "unchanged (this warning is shown once)")
        return True

    def stepped(self) -> None:
        self.backward_seen = False

    def check_skipped(self, step: int, norm, fp16: bool) -> None:
        """Called when the optimizer skipped step ``step``; warns or raises unless fp16 overflow."""
        if fp16:
            return
        value = float(norm) if norm is not None else float("nan")
        msg = (f"step {step}: the gradient norm is {value} (not finite), so the optimizer step was skipped and the "
               "weights are unchanged")
        if self.nonfinite == RAISE:
            raise FloatingPointError(msg + " (ds_config nonfinite_gradients=\"raise\"); check the loss and the "
                                     "inputs of this step")
        logger.warning(msg + "; set ds_config nonfinite_gradients=\"raise\" to stop instead")
