"""0/1 Adam (``optimizer.type: "ZeroOneAdam"``): adaptive variance freezing plus 1-bit
communication and local steps.

Before ``var_freeze_step``: on *variance steps* (every ``var_interval`` steps; the interval starts
at 1 and doubles after every ``var_update_scaler`` variance updates) the engine all-reduces the
fp32 gradients and both moments update; on the other steps the local gradients are averaged by
the 1-bit all-reduce and only the momentum updates. From ``var_freeze_step`` on the variance is
frozen and ranks take *local steps*: each updates its parameters with its own momentum and
accumulates the updates; every ``local_step_interval`` steps (starting at 1, doubling every
``local_step_scaler`` steps, at most ``local_step_clipper``) the accumulated updates are averaged
by the 1-bit all-reduce and applied to the last synchronised parameters, which every rank then
holds bit-identically, and the momentum becomes the averaged one.

Update: ``p -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * p)``; with ``bias_correction``
(the default) ``m_hat = m / (1 - b1^t)`` and ``v_hat = v / (1 - b2^k)``, ``k`` the number of
variance updates so far (DeepSpeed accepts the flag and applies no correction; without it the
first steps are ~3x Adam's and diverged at lr=1e-2 on the test model). The schedule state
(intervals and counters) is saved with the optimizer state.
"""

from __future__ import annotations

import torch

from deepspeed.runtime.fp16.onebit._common import OnebitBase, grad_of

_SCHEDULE = ("var_interval", "var_counter", "var_updates", "local_step_interval", "local_step_counter", "since_sync",
             "lrs")


class ZeroOneAdam(OnebitBase):
    """DeepSpeed's ``deepspeed.runtime.fp16.onebit.zoadam.ZeroOneAdam`` signature."""

    _type_name = "ZeroOneAdam"

    def __init__(self, params, deepspeed=None, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8,
                 eps_inside_sqrt=False, weight_decay=0.0, max_grad_norm=0.0, var_freeze_step=100000,
                 var_update_scaler=16, local_step_scaler=32678, local_step_clipper=16, amsgrad=False,
                 cuda_aware=False, comm_backend_name="nccl"):
        if amsgrad:
            raise RuntimeError("0/1 Adam does not support the AMSGrad variant.")
        defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps, weight_decay=weight_decay,
                        max_grad_norm=max_grad_norm)
        super().__init__(params, deepspeed, defaults, cuda_aware=cuda_aware, comm_backend_name=comm_backend_name)
        self.var_freeze_step = int(var_freeze_step)
        self.var_update_scaler = int(var_update_scaler)
        self.local_step_scaler = int(local_step_scaler)
        self.local_step_clipper = int(local_step_clipper)
        self.eps_mode = 0 if eps_inside_sqrt else 1
        self.schedule = dict(var_interval=1, var_counter=0, var_updates=0, local_step_interval=1,
                             local_step_counter=0, since_sync=0, lrs=0.0)
        self.steps = 0

    def _c1(self, group, st) -> float:
        return 1 - group["betas"][0] ** st["step"] if group["bias_correction"] else 1.0

    def _denom(self, group, st):
        v = st["exp_avg_sq"]
        if group["bias_correction"] and self.schedule["var_updates"]:
            v = v / (1 - group["betas"][1] ** self.schedule["var_updates"])
        return (v + group["eps"]).sqrt() if self.eps_mode == 0 else v.sqrt().add_(group["eps"])

    @torch.no_grad()
    def step(self, closure=None, grads=None):
        loss = closure() if closure is not None else None
        sch = self.schedule
        local = self.steps >= self.var_freeze_step
        var_step = not local and self.steps % sch["var_interval"] == 0
        if var_step:
            sch["var_updates"] += 1
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            params = group["params"]
            grads_ = []
            for p in params:
                st = self.state[p]
                if "exp_avg" not in st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    st["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                grads_.append(grad_of(p).float().clone())
                st["step"] += 1
            if not local and not var_step:
                self._compress(group, grads_, key="_grad")
            for p, g in zip(params, grads_):
                st = self.state[p]
                st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                if var_step:
                    st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                if local and "synced" not in st:
                    st["synced"] = p.detach().float().clone()
                    st["accum"] = torch.zeros_like(st["exp_avg"])
                update = st["exp_avg"] / self._c1(group, st) / self._denom(group, st)
                if local:
                    st["accum"].add_(update, alpha=lr)
                    if wd > 0:
                        st["synced"].mul_(1 - lr * wd)
                        p.mul_(1 - lr * wd)
                    p.add_(update.to(p.dtype), alpha=-lr)
                else:
                    if wd > 0:
                        update.add_(p.float(), alpha=wd)
                    p.add_(update.to(p.dtype), alpha=-lr)
        if local:
            first = self.state[self.param_groups[0]["params"][0]]
            sch["lrs"] += self.param_groups[0]["lr"] / self._c1(self.param_groups[0], first)
            sch["since_sync"] += 1
            if sch["since_sync"] >= sch["local_step_interval"]:
                self._sync()
            sch["local_step_counter"] += 1
            if sch["local_step_counter"] % self.local_step_scaler == 0:
                sch["local_step_interval"] = min(sch["local_step_interval"] * 2, self.local_step_clipper)
        elif var_step:
            sch["var_counter"] += 1
            if sch["var_counter"] == self.var_update_scaler:
                sch["var_counter"] = 0
                sch["var_interval"] *= 2
        self.steps += 1
        self._plan_next()
        return loss

    def _sync(self) -> None:
        """Average the accumulated local updates (1-bit), apply them to the synchronised weights."""
        sch = self.schedule
        for group in self.param_groups:
            params = group["params"]
            accums = [self.state[p]["accum"] for p in params]
            self._compress(group, accums, key="_local")
            for p in params:
                st = self.state[p]
                st["synced"].sub_(st["accum"])
                p.copy_(st["synced"].to(p.dtype))
                # Note: the momentum becomes the (lr / bias-correction)-weighted mean of the averaged
                # momenta (one group's lr stands for all: DeepSpeed's scheduler moves them together).
                st["exp_avg"].copy_(st["accum"] * self._denom(group, st) / sch["lrs"])
                st["accum"].zero_()
        sch["since_sync"] = 0
        sch["lrs"] = 0.0

    def _plan_next(self) -> None:
        """The engine reduces fp32 gradients only for the coming variance step."""
        step = self.steps
        full = step < self.var_freeze_step and step % self.schedule["var_interval"] == 0
        self._set_backward_allreduce(full)

    def state_dict(self):
        sd = super().state_dict()
        sd["zero_one_schedule"] = dict(self.schedule, steps=self.steps)
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        sched = dict(state_dict.pop("zero_one_schedule", {}))
        super().load_state_dict(state_dict)
        if sched:
            self.steps = int(sched.pop("steps"))
            self.schedule.update({k: sched[k] for k in _SCHEDULE if k in sched})
        self._plan_next()
