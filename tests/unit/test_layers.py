"""No module imports a stage above its own: the import graph of src/lmtune, read with ast.

Every import counts, the ones inside functions too (a lazy import is still a dependency). A new
top-level module or package must be given a layer here before its imports can pass.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "lmtune"
# Low to high. runs.py (run folders, resume points) and use.py (loading a finished run) read what the
# training stage writes, so they sit beside it.
LAYERS = [
    {"__init__", "config", "config_file", "config_method", "config_section", "config_tune", "fsutil", "stats"},
    {"data", "model"},
    {"graders"},
    {"train", "runs", "use"},
    {"evaluate"},
    {"pipeline"},
    {"execute"},
    {"tune"},
    {"cli", "serve"},
]
# Modules placed apart from their package: the grader schema (pydantic models only) and the parser of
# `multi`'s formula (ast only) are what config validates `method.grpo.grader` and `eval.graders` with.
MODULE_LAYERS = {"graders.spec": 0, "graders.formula": 0}
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names} | MODULE_LAYERS


def stage_of(module: str) -> str:
    """`lmtune.train.loop` -> `train`; `lmtune.graders.spec` -> itself (MODULE_LAYERS); `lmtune` -> `__init__`."""
    parts = module.split(".")
    if ".".join(parts[1:3]) in MODULE_LAYERS:
        return ".".join(parts[1:3])
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    """The dotted name of a source file under src/lmtune."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    return (SRC / f"{name}.py").is_file() or (SRC / name / "__init__.py").is_file()


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, lmtune module) of every import in a file, relative ones resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from lmtune import cli` names a module (`from lmtune import __version__` does not).
            found += [(node.lineno, f"{base}.{alias.name}" if base == "lmtune" and _is_module(alias.name) else base)
                      for alias in node.names]
    return [(line, name) for line, name in found if name == "lmtune" or name.startswith("lmtune.")]


def upward_imports() -> list[str]:
    """'file:line: a (layer i) imports b (layer j > i)' for every violation."""
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        own = stage_of(module_name(path)) if path != SRC / "__init__.py" else "__init__"
        for line, target in imported_modules(path):
            other = stage_of(target)
            for stage in (own, other):
                if stage not in LAYER_OF:
                    problems.append(f"{path.relative_to(SRC)}:{line}: {stage} has no layer in test_layers.py")
            if own in LAYER_OF and other in LAYER_OF and LAYER_OF[other] > LAYER_OF[own]:
                problems.append(f"{path.relative_to(SRC)}:{line}: {own} imports {target} ({other} is a layer above)")
    return problems


def test_no_module_imports_a_stage_above_its_own():
    assert upward_imports() == []


@pytest.mark.parametrize("source, expected", [
    ("from lmtune.pipeline.training import run_training\n", ["pipeline"]),
    ("def f():\n    import lmtune.serve.app\n", ["serve"]),
    ("from lmtune import cli\n", ["cli"]),
    ("from ..evaluate import suite\n", ["evaluate"]),
])
def test_the_graph_sees_every_kind_of_import(tmp_path, monkeypatch, source, expected):
    fake = tmp_path / "lmtune"
    (fake / "train").mkdir(parents=True)
    (fake / "train" / "probe.py").write_text(source)
    (fake / "cli.py").write_text("")
    monkeypatch.setattr(f"{__name__}.SRC", fake)
    assert [stage_of(m) for _, m in imported_modules(fake / "train" / "probe.py")] == expected
    assert len(upward_imports()) == 1
