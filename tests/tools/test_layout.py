"""The runtime package holds only what production runs: it never imports the tooling package."""

from __future__ import annotations

import ast
import subprocess
import sys

from earmark.config import PROJECT_ROOT

RUNTIME = PROJECT_ROOT / "include" / "earmark"


def _imported_modules(path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_runtime_sources_import_nothing_from_the_tooling():
    offenders = {
        str(path.relative_to(PROJECT_ROOT)): sorted(
            name for name in _imported_modules(path) if name.split(".")[0] == "earmark_dev"
        )
        for path in RUNTIME.rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_importing_every_runtime_module_loads_no_tooling():
    script = (
        "import importlib, pkgutil, sys, earmark\n"
        "for m in pkgutil.walk_packages(earmark.__path__, 'earmark.'):\n"
        "    importlib.import_module(m.name)\n"
        "loaded = sorted(n for n in sys.modules if n.split('.')[0] == 'earmark_dev')\n"
        "print(len([n for n in sys.modules if n.startswith('earmark.')]), loaded)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    ).stdout.split(None, 1)
    assert int(out[0]) > 20  # it did import the runtime modules
    assert out[1].strip() == "[]"


def test_tooling_lives_apart():
    for module in ("harness", "localenv", "demo", "sampledata", "tiny_models", "bench"):
        assert not (RUNTIME / f"{module}.py").exists() and not (RUNTIME / module).exists()
