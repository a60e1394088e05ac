"""ZeRO-3 parameter fetching: module hooks gather parameters for forward and release them after;
saved-tensor hooks gather them again when backward needs them.

Forward: a module's pre-hook gathers its own parameters (``recurse=False``, plus those registered
with ``register_external_parameter``; a leaf module from ``set_z3_leaf_modules`` gathers its whole
subtree) and, once the first forward has recorded the order in which modules run, also the
parameters of the modules that come next, up to ``prefetch_bucket_size`` elements, in the same
coalesced all-gather. Its post-hook releases them (persistent parameters stay), except, in a
training forward once the order is known, those whose next use (later in this forward, or in
backward) comes after fewer than ``stage3_max_reuse_distance`` parameter elements (0: never),
while no more than ``stage3_max_live_parameters`` elements are kept this way: they stay gathered
until their gradient is reduced, so backward does not gather them again (DeepSpeed's defaults,
1e9 and 1e9, keep a model of fewer than 1e9 parameters gathered from forward to backward).

Backward: while a forward runs with grad enabled, autograd's saved tensors that are ZeRO-3
parameters (or views of them) are stored as references; unpacking one gathers the parameter
again. The stage-3 optimizer releases it once its gradient has been reduced. Inside a
``GatheredParameters`` block these hooks are suspended (saved_tensor_hooks_suspended): what is
saved there is saved as itself, as under DeepSpeed, so a custom autograd function that saved a
parameter finds it, ``ds_*`` attributes included, in its backward (and gathers it there itself,
as TRL's fused LM-head loss does).
"""

from __future__ import annotations

import contextlib

import torch

from deepspeed.runtime.zero._partitioned_param import ZeroParamStatus, gather, is_zero_param, release

_ZP = object()  # marker of a packed parameter reference
_HOOKED: list = []  # fetchers whose saved-tensor hooks are pushed (inside a grad-enabled forward)


@contextlib.contextmanager
def saved_tensor_hooks_suspended():
    """Pop the fetchers' saved-tensor hooks for the block, push them back after.

    Note: autograd hands back a new tensor object for anything saved while any saved-tensor hook
    is pushed, so attributes set on a parameter (``ds_status``) are lost in backward. Only hooks on
    top of autograd's stack are popped; with someone else's pushed after ours nothing changes.
    """
    suspended = []
    for fetcher in reversed(_HOOKED):
        top = torch._C._autograd._top_saved_tensors_default_hooks(False)
        if fetcher._saved_ctx is None or top is None or top[1] != fetcher._unpack:
            break
        fetcher._saved_ctx.__exit__(None, None, None)
        suspended.append(fetcher)
    try:
        yield
    finally:
        for fetcher in reversed(suspended):
            fetcher._saved_ctx.__enter__()


def _is_leaf(module) -> bool:
    return bool(getattr(module, "_z3_leaf", False))


def module_params(module) -> list:
    """The ZeRO-3 parameters a module's forward reads directly."""
    own = module.parameters(recurse=_is_leaf(module))
    ext = getattr(module, "_external_params", {})
    return [p for p in list(own) + list(ext.values()) if is_zero_param(p)]


class ParameterFetcher:
    """Installs the hooks on ``root`` and its submodules; ``remove()`` takes them off."""

    def __init__(self, root: torch.nn.Module, prefetch_bucket_size: int = 0, max_live_parameters: int = 0,
                 max_reuse_distance: int = 0):
        self.root = root
        self.prefetch_bucket_size = int(prefetch_bucket_size)
        self.max_live_parameters = int(max_live_parameters)
        self.max_reuse_distance = int(max_reuse_distance)
        self._retained: set[int] = set()
        self._live = 0
        self._reuse: dict | None = None  # (trace position, ds_id) -> elements fetched until the next use
        self._pos: dict[int, int] = {}  # id(module) -> its first trace position (with _reuse)
        self._handles = []
        self._saved_ctx = None
        self._trace: list = []  # modules in forward order (first forward)
        self._trace_done = False
        self._step_index = 0
        self._cursor = 0
        self._ahead = 0
        self._prefetched: set[int] = set()
        self._param_cache: dict[int, list] = {}
        self._first_use: dict[int, int] | None = None
        self._bwd_cursor = 0
        self.backward_gathered: dict[int, torch.nn.Parameter] = {}
        self._install(root)

    # -- installation ----------------------------------------------------------------------------
    def _install(self, root) -> None:
        stack = [root]
        modules = []
        while stack:
            m = stack.pop()
            modules.append(m)
            if not _is_leaf(m):
                stack.extend(reversed(list(m.children())))
        for m in modules:
            self._handles.append(m.register_forward_pre_hook(self._pre_forward))
            self._handles.append(m.register_forward_hook(self._post_forward))
        self._handles.append(root.register_forward_pre_hook(self._root_pre, prepend=True))
        self._handles.append(root.register_forward_hook(self._root_post))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- forward ---------------------------------------------------------------------------------
    def _root_pre(self, module, args):
        self._retained.clear()
        self._live = 0
        self._step_index = 0
        self._cursor = 0
        self._ahead = 0
        self._prefetched.clear()
        if torch.is_grad_enabled() and self._saved_ctx is None:
            self._saved_ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
            self._saved_ctx.__enter__()
            _HOOKED.append(self)

    def _root_post(self, module, args, output):
        if self._saved_ctx is not None:
            ctx, self._saved_ctx = self._saved_ctx, None
            ctx.__exit__(None, None, None)
            _HOOKED.remove(self)
        if not self._trace_done:
            self._trace_done = True
        self._bwd_cursor = len(self._trace)
        # Note: anything prefetched but not used in this forward is dropped here.
        for m in self._trace:
            release([p for p in self._params(m) if p.ds_id not in self._retained])

    def _params(self, module) -> list:
        # Note: cached per module; registering an external parameter after the first forward
        # needs ParameterFetcher.refresh() (the engine builds the fetcher at initialize).
        cached = self._param_cache.get(id(module))
        if cached is None:
            cached = self._param_cache[id(module)] = module_params(module)
        return cached

    def refresh(self) -> None:
        """Forget cached parameter lists and the recorded module order."""
        self._param_cache.clear()
        self._first_use = None
        self._reuse = None
        self._trace, self._trace_done = [], False

    def _prefetch_list(self) -> list:
        """Parameters of the modules after the current one, while fewer than ``prefetch_bucket_size``
        prefetched elements are waiting to be used."""
        if not self._trace_done or self.prefetch_bucket_size <= 0:
            return []
        out = []
        i = max(self._step_index, self._cursor)
        while i < len(self._trace) and self._ahead < self.prefetch_bucket_size:
            for p in self._params(self._trace[i]):
                if p.ds_status == ZeroParamStatus.NOT_AVAILABLE and p.ds_id not in self._prefetched:
                    out.append(p)
                    self._prefetched.add(p.ds_id)
                    self._ahead += p.ds_numel
            i += 1
        self._cursor = i
        return out

    def _pre_forward(self, module, args):
        params = self._params(module)
        if not self._trace_done:
            self._trace.append(module)
        elif self._step_index < len(self._trace) and self._trace[self._step_index] is module:
            self._step_index += 1
        for p in params:
            p.ds_active_sub_modules.add(id(module))
            if p.ds_id in self._prefetched:
                self._prefetched.discard(p.ds_id)
                self._ahead -= p.ds_numel
        gather(params)
        # Note: the next modules' parameters arrive while this module computes.
        gather(self._prefetch_list(), async_op=True)

    def _post_forward(self, module, args, output):
        params = self._params(module)
        for p in params:
            p.ds_active_sub_modules.discard(id(module))
        if torch._C._current_graph_task_id() != -1:
            # Note: a forward inside backward is activation-checkpoint recomputation; what it saved
            # for backward may be the parameters themselves, so they stay gathered until their
            # gradient is reduced (or the backward ends).
            for p in params:
                self.backward_gathered[p.ds_id] = p
            return
        release([p for p in params if not self._retain(module, p)])

    def _reuse_distances(self) -> dict:
        """For each (trace position, parameter): elements gathered before its next use, which is its
        next module later in the forward, else its backward (the rest of the forward, then the
        backward of those modules: twice the elements after it)."""
        if self._reuse is None:
            n = len(self._trace)
            sizes = [sum(p.ds_numel for p in self._params(m)) for m in self._trace]
            cum = [0]
            for size in sizes:
                cum.append(cum[-1] + size)
            after, seen, total = [0] * n, set(), 0
            for i in reversed(range(n)):
                after[i] = total
                for p in self._params(self._trace[i]):
                    if p.ds_id not in seen:
                        seen.add(p.ds_id)
                        total += p.ds_numel
            reuse, next_at = {}, {}
            for i in reversed(range(n)):
                for p in self._params(self._trace[i]):
                    j = next_at.get(p.ds_id)
                    reuse[(i, p.ds_id)] = cum[j] - cum[i + 1] if j is not None else 2 * after[i]
                for p in self._params(self._trace[i]):
                    next_at[p.ds_id] = i
            self._reuse = reuse
            self._pos.clear()
            for i, m in enumerate(self._trace):
                self._pos.setdefault(id(m), i)
        return self._reuse

    def _retain(self, module, p) -> bool:
        """Keep ``p`` gathered after ``module``'s forward (see the module docstring)?"""
        if not (self._trace_done and torch.is_grad_enabled()) or p.ds_persist:
            return False
        if p.ds_id in self._retained:
            return True
        if p.ds_status != ZeroParamStatus.AVAILABLE or self._live + p.ds_numel > self.max_live_parameters:
            return False
        distance = self._reuse_distances().get((self._pos.get(id(module), -1), p.ds_id))
        if distance is None or distance >= self.max_reuse_distance:
            return False
        self._retained.add(p.ds_id)
        self._live += p.ds_numel
        self.backward_gathered[p.ds_id] = p  # Note: released once its gradient is reduced
        return True

    # -- backward --------------------------------------------------------------------------------
    @staticmethod
    def _pack(t):
        if is_zero_param(t):
            return (_ZP, t, None)
        base = t._base
        if base is not None and is_zero_param(base):
            return (_ZP, base, (t.size(), t.stride(), t.storage_offset() - base.data.storage_offset()))
        return t

    def _unpack(self, packed):
        if not (isinstance(packed, tuple) and len(packed) == 3 and packed[0] is _ZP):
            return packed
        _, p, view = packed
        if p.ds_status != ZeroParamStatus.AVAILABLE:
            batch = [p] + self._backward_prefetch(p)
            gather(batch)
            for q in batch:
                self.backward_gathered[q.ds_id] = q
        if view is None:
            return p.data
        size, stride, delta = view
        return p.data.as_strided(size, stride, p.data.storage_offset() + delta)

    def _backward_prefetch(self, p) -> list:
        """Backward runs the modules roughly in reverse: with ``p`` also gather the parameters of the
        modules before its own, up to ``prefetch_bucket_size`` elements, in the same all-gather."""
        if not self._trace_done or self.prefetch_bucket_size <= 0:
            return []
        if self._first_use is None:
            self._first_use = {}
            for i, m in enumerate(self._trace):
                for q in self._params(m):
                    self._first_use.setdefault(q.ds_id, i)
        idx = self._first_use.get(p.ds_id)
        if idx is None:
            return []
        out, budget = [], self.prefetch_bucket_size
        i = min(idx, self._bwd_cursor) - 1
        while i >= 0 and budget > 0:
            for q in self._params(self._trace[i]):
                if q is not p and q.ds_status == ZeroParamStatus.NOT_AVAILABLE and q.requires_grad:
                    out.append(q)
                    budget -= q.ds_numel
            i -= 1
        self._bwd_cursor = min(self._bwd_cursor, i + 1)
        return out

    def release_backward_gathered(self) -> None:
        """Release what backward gathered and no gradient hook released (frozen parameters)."""
        params = list(self.backward_gathered.values())
        self.backward_gathered.clear()
        for p in params:
            p.ds_active_sub_modules.clear()  # recomputation may have stopped before the post-hooks
        release(params)
