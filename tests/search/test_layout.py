"""The package's shape: imports run one way, KerasTuner and TensorFlow load only when asked."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Folder -> the poolnas folders it may import (DESIGN.md: spaces <- evaluators <- search <-
#: dashboards). The CLI, search/_cli.py, is the one composition root that imports everything.
ALLOWED = {
    "spaces": {"spaces"},
    "evaluators": {"spaces", "evaluators"},
    "search": {"spaces", "evaluators", "search"},
    "dashboards": {"spaces", "evaluators", "search", "dashboards"},
}


def _poolnas_imports(path: Path) -> list[tuple[str, int]]:
    """Every ``poolnas.X`` module a file imports, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("poolnas"):
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("poolnas")]
    return found


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_run_one_way(folder: str) -> None:
    wrong = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if path == ROOT / "search" / "_cli.py":
            continue
        for module, line in _poolnas_imports(path):
            target = module.split(".")[1] if "." in module else ""
            if target not in ALLOWED[folder]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_dashboards_use_only_the_public_names_of_search() -> None:
    private = [f"{p.relative_to(ROOT)}:{line} imports {module}"
               for p in sorted((ROOT / "dashboards").glob("*.py"))
               for module, line in _poolnas_imports(p)
               if module.startswith("poolnas.search.")]
    assert not private, "\n".join(private)


def test_importing_the_library_loads_neither_tensorflow_nor_keras_tuner() -> None:
    script = ("import sys, poolnas.spaces, poolnas.evaluators, poolnas.search, "
              "poolnas.dashboards\n"
              "print(sorted(m for m in ('tensorflow', 'keras_tuner', 'keras') "
              "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
