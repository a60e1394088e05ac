"""The flops profiler's text report and number formatting (``"1.23 G"``, ``"4.5 ms"``)."""

from __future__ import annotations

import collections

import torch.nn as nn

from deepspeed.profiling.flops_profiler.module_stats import get_module_duration, get_module_macs

_UNITS = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")]


def number_to_string(num: float, units: str | None = None, precision: int = 2) -> str:
    """``1234567`` → ``"1.23 M"``; ``units`` forces one of ``"P" "T" "G" "M" "K" ""``."""
    if units is None:
        units = next((u for scale, u in _UNITS if abs(num) >= scale), "")
    scale = dict((u, s) for s, u in _UNITS).get(units, 1.0)
    return f"{round(num / scale, precision):g} {units}"


def macs_to_string(macs: float, units: str | None = None, precision: int = 2) -> str:
    return f"{number_to_string(macs, units, precision)}MACs"


def flops_to_string(flops: float, units: str | None = None, precision: int = 2) -> str:
    """A rate: ``2.5e9`` → ``"2.5 GFLOPS"``."""
    return f"{number_to_string(flops, units, precision)}FLOPS"


def params_to_string(params: float, units: str | None = None, precision: int = 2) -> str:
    return number_to_string(params, units, precision).rstrip()


def duration_to_string(duration: float, units: str | None = None, precision: int = 2) -> str:
    """Seconds → ``"12.34 ms"`` (``s``, ``ms`` or ``us``)."""
    if units is None:
        units = "s" if duration >= 1 else "ms" if duration >= 1e-3 else "us"
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6}[units]
    return f"{round(duration * scale, precision):g} {units}"


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.2f}%" if whole else "0.00%"


def _engine_value(engine, name, default):
    fn = getattr(engine, name, None)
    try:
        return fn() if callable(fn) else (fn if fn is not None else default)
    except Exception:  # noqa: BLE001 - the summary still prints without this figure
        return default


def _timer_seconds(engine, name: str) -> float:
    """The engine's ``name`` timer (``bwd``, ``step``), else its ``<name>_microstep`` timer."""
    timers = getattr(engine, "timers", None)
    existing = getattr(timers, "get_timers", lambda: {})() if timers is not None else {}
    for candidate in (name, f"{name}_microstep"):
        if candidate in existing:
            return timers(candidate).elapsed(reset=False) / 1000.0
    return 0.0


def summary(prof, profile_step: int) -> list[str]:
    model, engine = prof.model, prof.ds_engine
    flops, macs, params = prof.get_total_flops(), prof.get_total_macs(), prof.get_total_params()
    fwd = get_module_duration(model)
    lines = [
        "", "-------------------------- DeepSpeed Flops Profiler --------------------------",
        f"Profile Summary at step {profile_step}:",
        "Notations:",
        "data parallel size (dp_size), model parallel size (mp_size),",
        "number of parameters (params), number of multiply-accumulate operations (MACs),",
        "number of floating-point operations (flops), floating-point operations per second (FLOPS),",
        "fwd latency (forward propagation latency), bwd latency (backward propagation latency),",
        "step (weights update latency), iter latency (sum of fwd, bwd and step latency)", "",
    ]
    mp_size = 1
    if engine is not None:
        world = _engine_value(engine, "world_size", 1)
        dp = _engine_value(engine, "dp_world_size", world)
        mpu = getattr(engine, "mpu", None)
        if mpu is not None and hasattr(mpu, "get_model_parallel_world_size"):
            mp_size = mpu.get_model_parallel_world_size()
        batch = _engine_value(engine, "train_micro_batch_size_per_gpu", None)
        lines += [f"{'world size: ':<60}{world}", f"{'data parallel size: ':<60}{dp}",
                  f"{'model parallel size: ':<60}{mp_size}"]
        if batch is not None:
            lines.append(f"{'batch size per GPU: ':<60}{batch}")
    lines += [
        f"{'params per GPU: ':<60}{params_to_string(params)}",
        f"{'params of model = params per GPU * mp_size: ':<60}{params_to_string(params * mp_size)}",
        f"{'fwd MACs per GPU: ':<60}{macs_to_string(macs)}",
        f"{'fwd flops per GPU: ':<60}{number_to_string(flops)}",
        f"{'fwd flops of model = fwd flops per GPU * mp_size: ':<60}{number_to_string(flops * mp_size)}",
        f"{'fwd latency: ':<60}{duration_to_string(fwd)}",
        f"{'fwd FLOPS per GPU = fwd flops per GPU / fwd latency: ':<60}"
        f"{flops_to_string(flops / fwd if fwd else 0.0)}",
    ]
    if engine is not None:
        bwd, step = _timer_seconds(engine, "bwd"), _timer_seconds(engine, "step")
        bwd_factor = 2 + prof.recompute_fwd_factor
        if bwd > 0:
            lines += [f"{'bwd latency: ':<60}{duration_to_string(bwd)}",
                      f"{f'bwd FLOPS per GPU = {bwd_factor:g} * fwd flops per GPU / bwd latency: ':<60}"
                      f"{flops_to_string(bwd_factor * flops / bwd)}",
                      f"{f'fwd+bwd FLOPS per GPU = {bwd_factor + 1:g} * fwd flops per GPU / (fwd+bwd latency): ':<60}"
                      f"{flops_to_string((bwd_factor + 1) * flops / (fwd + bwd))}"]
        if step > 0:
            it = fwd + bwd + step
            lines += [f"{'step latency: ':<60}{duration_to_string(step)}",
                      f"{'iter latency: ':<60}{duration_to_string(it)}",
                      f"{f'FLOPS per GPU = {bwd_factor + 1:g} * fwd flops per GPU / iter latency: ':<60}"
                      f"{flops_to_string((bwd_factor + 1) * flops / it)}"]
            batch = _engine_value(engine, "train_micro_batch_size_per_gpu", None)
            dp = _engine_value(engine, "dp_world_size", 1)
            if batch:
                lines.append(f"{'samples/second: ':<60}{batch * dp / it:.2f}")
    return lines


def aggregated_profile(model: nn.Module, module_depth: int = -1, top_modules: int = 1) -> str:
    """Per depth of the module tree, the top modules (summed by class) by params, MACs and
    forward latency."""
    by_depth: dict[int, dict[str, list[float]]] = collections.defaultdict(
        lambda: collections.defaultdict(lambda: [0, 0, 0.0]))

    def walk(module: nn.Module, depth: int) -> None:
        entry = by_depth[depth][type(module).__name__]
        entry[0] += getattr(module, "__params__", 0)
        entry[1] += get_module_macs(module)
        entry[2] += get_module_duration(module)
        for child in module.children():
            walk(child, depth + 1)

    walk(model, 0)
    max_depth = max(by_depth) if module_depth == -1 else min(module_depth, max(by_depth))
    lines = ["", "----------------------------- Aggregated Profile per GPU -----------------------------",
             f"Top {top_modules} modules in terms of params, MACs or fwd latency at different model depths:"]
    for depth in range(max_depth + 1):
        info = by_depth[depth]
        n = min(top_modules, len(info))

        def top(i, fmt):
            items = sorted(info.items(), key=lambda kv: kv[1][i], reverse=True)[:n]
            return {k: fmt(v[i]) for k, v in items}

        lines += [f"depth {depth}:",
                  f"    params      - {top(0, params_to_string)}",
                  f"    MACs        - {top(1, macs_to_string)}",
                  f"    fwd latency - {top(2, duration_to_string)}"]
    return "\n".join(lines) + "\n"


def detailed_profile(prof, module_depth: int = -1) -> str:
    """The module tree, each line annotated with params, % params, MACs, % MACs, fwd latency,
    % latency and FLOPS."""
    totals = prof.module_profile(prof.model)

    def describe(module: nn.Module) -> str:
        p = prof.module_profile(module)
        fields = [params_to_string(p["params"]), _pct(p["params"], totals["params"]),
                  macs_to_string(p["macs"]), _pct(p["macs"], totals["macs"]),
                  duration_to_string(p["duration"]), _pct(p["duration"], totals["duration"]),
                  flops_to_string(p["flops_per_s"])]
        extra = module.extra_repr()
        return f"{type(module).__name__}({', '.join(fields + ([extra] if extra else []))}"

    def render(module: nn.Module, depth: int, indent: str) -> list[str]:
        children = list(module.named_children())
        if not children or (module_depth != -1 and depth >= module_depth):
            return [describe(module) + ")"]
        lines = [describe(module)]
        for name, child in children:
            sub = render(child, depth + 1, indent + "  ")
            lines.append(f"{indent}  ({name}): {sub[0]}")
            lines += sub[1:]
        lines.append(f"{indent})")
        return lines

    head = ["", "------------------------------ Detailed Profile per GPU ------------------------------",
            "Each module profile is listed after its name in the following order:",
            "params, percentage of total params, MACs, percentage of total MACs, fwd latency, "
            "percentage of total fwd latency, fwd FLOPS", "",
            "Note: 1. A module can have torch.nn.module or torch.nn.functional to compute logits (e.g. CrossEntropyLoss).",
            "They are not counted as submodules, thus not to be printed out. However they make up the difference "
            "between a parent's MACs (or latency) and the sum of its submodules'.",
            "2. Number of floating-point operations is a theoretical estimation, thus FLOPS computed using that "
            "could be larger than the maximum system throughput.", ""]
    return "\n".join(head + render(prof.model, 0, "")) + "\n"


def write_profile(prof, profile_step: int, module_depth: int, top_modules: int, detailed: bool) -> str:
    text = "\n".join(summary(prof, profile_step)) + "\n"
    text += aggregated_profile(prof.model, module_depth, top_modules)
    if detailed:
        text += detailed_profile(prof, module_depth)
    text += "------------------------------------------------------------------------------\n"
    return text
