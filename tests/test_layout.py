"""The package's import graph: general code imports no chapter, and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "opforce_tutorial"
#: Modules that may import the chapters: the chapters themselves and the user-facing top (CLI, chapter widgets).
TOP = ("opforce_tutorial.chapters", "opforce_tutorial.cli", "opforce_tutorial.widgets")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every package module ``path`` imports, at module level or inside functions."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[:len(base) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import ala2` imports a module, `from .x import f` a name of x
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("opforce_tutorial") and m != name}


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_general_modules_import_no_chapter():
    bad = {m: sorted(i for i in deps if i.startswith("opforce_tutorial.chapters"))
           for m, deps in graph().items() if not m.startswith(TOP)}
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"general modules import chapter configurations: {bad}"


def test_the_import_graph_has_no_cycles():
    g = graph()
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if d not in g:
                continue
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " → ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])


def test_the_walk_sees_function_level_imports(tmp_path):
    """The check cannot pass by hiding an import inside a function."""
    source = (PACKAGE / "study.py").read_text()
    assert "\nfrom .pretrained import" not in source and "    from .pretrained import" in source  # inside functions only
    deps = imports(PACKAGE / "study.py")
    assert "opforce_tutorial.pretrained" in deps and "opforce_tutorial.labels" in deps
