"""DeepSpeed's ``deepspeed.accelerator.<vendor>_accelerator`` modules re-export the accelerator
class of the installed ops package, found through the ``deepspeed.accelerators`` entry point
(core imports no ops package by name). Importing one whose package is missing raises ImportError
naming the ``pip install``."""

from __future__ import annotations

from deepspeed import _plugins


def vendor_class(module: str, class_name: str, accelerator_names: tuple[str, ...]) -> type:
    """The class registered under the first installed name of ``accelerator_names``."""
    plugins = _plugins.accelerators()
    for name in accelerator_names:
        if name in plugins:
            return plugins[name].load()
    hints = [h for h in (_plugins.provider_hint(_plugins.ACCELERATORS, n) for n in accelerator_names) if h]
    fix = f"pip install {' or '.join(dict.fromkeys(hints))}" if hints else "install the vendor's ds-ops package"
    installed = ", ".join(plugins) or "none"
    raise ImportError(
        f"cannot import {class_name} from {module}: no ops package registers the "
        f"{' or '.join(accelerator_names)} accelerator (installed accelerators: {installed}). Fix: {fix}",
        name=module)
