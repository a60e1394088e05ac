"""ds-core's runtime and config modules hold no feature- or vendor-specific name or rule: no key
of a feature's section, no ZeRO/pipeline/aio rule, no vendor device name. Checked on the code
(identifiers and string constants; docstrings are documentation and may mention features).

The allowed exceptions are listed with their reason: DeepSpeed's own engine methods that
integrations call keep their names and delegate, and a few keys of core's own sections carry a
feature's word in their DeepSpeed name.
"""

import ast
import pathlib
import re

import deepspeed

ROOT = pathlib.Path(deepspeed.__file__).parent
FORBIDDEN = re.compile(r"zero_optimization|stage3|stage_3|offload|nvme|torch\.cuda|\bcuda\b|\baio\b|pipeline|"
                       r"DeepSpeedZero|ds-zero|ds-pipe|ds-aio|ds-moe|ds-inference|ds-compression|ds-checkpoint|ds-sequence")
ALLOWED = {
    # DeepSpeed's engine methods that integrations call: they keep their names and delegate
    ("runtime/engine.py", "zero_optimization"): "DeepSpeed's engine method, delegates to the optimizer",
    ("runtime/engine.py", "_zero3_consolidated_16bit_state_dict"): "DeepSpeed's engine method (Accelerate, TF)",
    ("runtime/engine.py", "save_16bit_model"): "the message names the key that lets ZeRO-3 gather weights",
    # keys of core's own sections, spelled as in DeepSpeed
    ("runtime/_config_sections.py", ""): "compile.offload_* keys of core's compile section",
    ("runtime/checkpoint_engine/config.py", ""): "checkpoint.parallel_write.pipeline_stage (core's section)",
    ("runtime/config.py", "_set_flat_attributes"): "checkpoint_parallel_write_pipeline (DeepSpeed's attribute)",
    ("runtime/config.py", ""): "no-effect warnings of core keys (parallel_write.pipeline_stage, load_universal)",
    ("runtime/config.py", "_check_partitioned_precision"): "the message points to the package that implements it",
    ("runtime/_engine_checkpoint.py", "load"): "the refusal of load_universal names the package that will add it",
}


def _hits(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    stack = [(tree, "")]
    while stack:
        node, fn = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            fn = node.name
        stack.extend((child, fn) for child in ast.iter_child_nodes(node))
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, ast.Name):
            text = node.id
        if text and FORBIDDEN.search(text):
            yield fn, node.lineno, text


def test_runtime_and_config_modules_name_no_feature_or_vendor():
    files = sorted([*(ROOT / "runtime").rglob("*.py"), *(ROOT / "config").rglob("*.py"),
                    ROOT / "_features.py", ROOT / "_initialize.py"])
    found = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for fn, line, text in _hits(path):
            if (rel, fn) not in ALLOWED:
                found.append(f"{rel}:{line} in {fn or '<module>'}: {text[:80]!r}")
    assert not found, "feature or vendor names in ds-core's runtime/config modules:\n" + "\n".join(found)


def test_the_scan_finds_what_it_looks_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('"""zero_optimization in a docstring is fine."""\n\ndef f(c):\n    return c["zero_optimization"]\n')
    assert [(fn, text) for fn, _, text in _hits(probe)] == [("f", "zero_optimization")]
