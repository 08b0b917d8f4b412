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


# The rooms of the runtime package, lowest first: a module may import its own room and the rooms
# below it, never one above (the README's Layout section draws the same order).
LAYERS = (
    ("config", "statuses", "reasons", "names", "hostname"),
    ("store",),
    ("inference",),
    ("ingest",),
    ("review",),
    ("gpu",),
    ("lifecycle", "versions"),
    ("day",),
    ("ops",),
    ("orchestration",),
    ("web",),
    ("cli",),
)
SHARED_MODULES = {f"{name}.py" for name in LAYERS[0]} | {"cli.py", "__init__.py"}
LONGEST_WITHOUT_A_REASON = 500


def _room(module: str) -> str:
    return module.split(".")[1].removesuffix(".py")


def _level(room: str) -> int:
    return next(i for i, rooms in enumerate(LAYERS) if room in rooms)


def test_the_top_level_holds_rooms_and_a_few_shared_modules():
    modules = {p.name for p in RUNTIME.glob("*.py")}
    rooms = {p.name for p in RUNTIME.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert modules <= SHARED_MODULES, modules - SHARED_MODULES
    assert rooms == {room for layer in LAYERS[1:] for room in layer if room != "cli"}


def test_no_room_imports_a_room_above_it():
    upward = []
    for path in RUNTIME.rglob("*.py"):
        module = "earmark." + ".".join(path.relative_to(RUNTIME).with_suffix("").parts)
        if module.endswith(".__init__") and module.count(".") == 1:
            continue
        here = _level(_room(module))
        for name in _imported_modules(path):
            if name.startswith("earmark.") and _level(_room(name)) > here:
                upward.append(f"{module} imports {name}")
    assert upward == []


def test_a_long_module_says_why_at_its_top():
    long_without_reason = [
        str(path.relative_to(PROJECT_ROOT))
        for path in RUNTIME.rglob("*.py")
        if len(path.read_text(encoding="utf-8").splitlines()) > LONGEST_WITHOUT_A_REASON
        and "Why one module" not in (ast.get_docstring(ast.parse(path.read_text("utf-8"))) or "")
    ]
    assert long_without_reason == []


def test_the_readme_layout_names_every_room():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    for layer in LAYERS[1:]:
        for room in layer:
            assert f"  {room}/" in layout or f"  {room}.py" in layout, room
