"""``ds_report``: what is installed, what was chosen and why, and which ops can run."""

from __future__ import annotations

import argparse
import platform
import sys

GREEN, RED, YELLOW, END = "\033[92m", "\033[91m", "\033[93m", "\033[0m"


def _color(text: str, color: str, enabled: bool) -> str:
    return f"{color}{text}{END}" if enabled else text


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return lines


def deepspeed_distribution() -> str:
    """The ``deepspeed`` distribution's line: Transformers, Accelerate and Lightning detect DeepSpeed
    by ``importlib.metadata`` of a distribution named ``deepspeed`` (its version gates their
    features), which the à-la-carte packages (ds-core, ds-zero, ...) do not provide."""
    import importlib.metadata as md

    try:
        dist = md.distribution("deepspeed")
    except md.PackageNotFoundError:
        return ("not installed: Transformers / Accelerate / Lightning will not see DeepSpeed (they look for "
                "the 'deepspeed' distribution). Fix: pip install this project's packages/deepspeed "
                "(not DeepSpeed from PyPI)")
    if not any(r.split(";")[0].replace(" ", "").startswith("ds-core") for r in dist.requires or []):
        return (f"{dist.version}, not this project's (it does not require ds-core): it installs its own "
                "deepspeed/ files over ds-core's. Fix: pip uninstall deepspeed, then pip install this "
                "project's packages/deepspeed")
    return f"{dist.version} (what Transformers / Accelerate / Lightning detect)"


def report(hide_operator_status: bool = False, hide_errors_and_warnings: bool = False, color: bool = False) -> str:
    """The report as text. Raises the selection error if the accelerator cannot be chosen."""
    import torch

    import deepspeed
    from deepspeed import _plugins
    from deepspeed.accelerator import get_accelerator
    from deepspeed.accelerator.real_accelerator import selection_reason

    acc = get_accelerator()  # raises with a clear message when DS_ACCELERATOR cannot be honoured
    out = ["DeepSpeed general environment info:", "-" * 50]
    info = [
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("torch version", torch.__version__),
        ("torch install path", str(torch.__path__[0])),
        ("torch cuda / hip", f"{torch.version.cuda} / {getattr(torch.version, 'hip', None)}"),
        ("ds-core (deepspeed) version", deepspeed.__version__),
        ("deepspeed install path", str(deepspeed.__path__[0])),
        ("deepspeed distribution", deepspeed_distribution()),
        ("plugin API", ", ".join(f"{g.split('.')[-1]} {'.'.join(map(str, v))}"
                                 for g, v in _plugins.PLUGIN_API_VERSIONS.items())),
        ("accelerator", f"{acc._name} ({type(acc).__module__}.{type(acc).__name__})"),
        ("chosen because", selection_reason()),
        ("communication backend", acc.communication_backend_name()),
    ]
    width = max(len(k) for k, _ in info)
    out += [f"{k:<{width}} : {v}" for k, v in info]

    problems: list[str] = []
    acc_rows = []
    for name, p in _plugins.accelerators().items():
        try:
            cls = p.load()
            prio = str(cls.priority)
            avail = "yes" if cls.is_available() else f"no ({cls.unavailable_reason()})"
        except Exception as exc:  # report every plugin, even a broken one
            prio, avail = "-", "error"
            problems.append(str(exc))
        acc_rows.append((name, p.distribution, p.version, prio, avail))
    out += ["", "Accelerator plugins (deepspeed.accelerators; without DS_ACCELERATOR the available one with the "
            "highest priority is chosen):"]
    out += (_table(acc_rows, ("name", "distribution", "version", "priority", "available"))
            if acc_rows else ["  none installed"])

    feat_rows = []
    for name, p in _plugins.features().items():
        try:
            p.load()
            status = "ok"
        except Exception as exc:
            status = "error"
            problems.append(str(exc))
        feat_rows.append((name, p.distribution, p.version, status))
    out += ["", "Features (deepspeed.features):"]
    out += _table(feat_rows, ("name", "distribution", "version", "status")) if feat_rows else ["  none installed"]

    if not hide_operator_status:
        op_rows = []
        for key, p in _plugins.op_builders().items():
            try:
                builder = p.load()()
                compatible = builder.is_compatible()
                built = builder.is_built()
                notes = builder.compatibility_notes()
                comp_s = _color("[OKAY]" if compatible else "[NO]", GREEN if compatible else RED, color)
                built_s = _color("[YES]" if built else "[NO] (JIT on first use)", GREEN if built else YELLOW, color)
            except Exception as exc:
                comp_s, built_s, notes = "error", "-", ""
                problems.append(str(exc))
            op_rows.append((key, p.distribution, comp_s, built_s, notes))
        out += ["", "Op builders (deepspeed.op_builders):"]
        out += (
            _table(op_rows, ("op", "distribution", "compatible", "prebuilt", "notes"))
            if op_rows else ["  none installed"]
        )
    if problems and not hide_errors_and_warnings:
        out += ["", "Problems:"] + [f"  - {p}" for p in problems]
    return "\n".join(out)


def cli_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ds_report", description="Report the DeepSpeed environment.")
    parser.add_argument("--hide_operator_status", action="store_true", help="do not list op builders")
    parser.add_argument("--hide_errors_and_warnings", action="store_true", help="do not list plugin problems")
    args = parser.parse_args(argv)
    try:
        text = report(args.hide_operator_status, args.hide_errors_and_warnings, color=sys.stdout.isatty())
    except (ValueError, RuntimeError) as exc:
        print(f"ds_report: error: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0


def main() -> None:
    sys.exit(cli_main())


if __name__ == "__main__":
    main()
