"""Habits that keep the architecture: the import contracts and the type check run in the suite (and so in .ci/run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_layer_contracts_hold() -> None:
    """pyproject's [tool.importlinter]: core < pipeline < evaluate < agents < checks < cli, no cycles."""
    done = _run("import sys; from importlinter.cli import lint_imports; "
                "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


@pytest.mark.slow
def test_mypy_passes_on_src() -> None:
    """pyproject's [tool.mypy]: ``mypy src`` is clean."""
    done = _run("import sys; from mypy import api; out, err, code = api.run(['src']); "
                "print(out); print(err, file=sys.stderr); sys.exit(code)")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_benchmarks_import_only_names_the_package_has() -> None:
    """Every ``from deploysim... import name`` in benchmarks/ resolves (a trim once broke the history script)."""
    import ast
    import importlib

    missing = []
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deploysim"):
                module = importlib.import_module(str(node.module))
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            missing.append(f"{script.name}: {node.module}.{alias.name}")
    assert not missing, missing
