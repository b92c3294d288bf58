"""The architecture, checked on the source: purity of the core, no import cycles, declared surfaces.

- ``policies/`` and the translators (``proxy/translate/``) import no framework: not aiohttp, yaml,
  orjson or prometheus_client, and read no ``os.environ``.
- No import cycles among the modules of ``proxy`` and ``policies`` (every import counts: inside
  functions and under ``TYPE_CHECKING`` too).
- Each module's ``__all__`` lists exactly its public names: every function, class and constant it
  defines whose name does not start with ``_`` (a module's logger, ``log``, is not surface), plus
  names it deliberately re-exports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("proxy", "policies")
PURE = ("policies", "proxy/translate")
FRAMEWORKS = {"aiohttp", "yaml", "orjson", "prometheus_client"}
NOT_SURFACE = {"log"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (absolute imports)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def _own(name: str) -> str | None:
    """The project module an imported name refers to (``proxy.x.y`` may be a name inside ``proxy.x``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


@pytest.mark.parametrize("module", [m for m, p in MODULES.items()
                                    if any(str(p.relative_to(ROOT)).startswith(d) for d in PURE)])
def test_pure_modules_import_no_framework(module: str) -> None:
    """The routing engine and the translators take and return plain values: no framework, no environment."""
    path = MODULES[module]
    roots = {name.split(".")[0] for name in _imports(path)}
    assert not roots & FRAMEWORKS, f"{module} imports {sorted(roots & FRAMEWORKS)}"
    if module.startswith("policies"):
        assert not {r for r in roots if r == "proxy"}, f"{module} imports from proxy"
    environ = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)
               and n.attr == "environ" and isinstance(n.value, ast.Name) and n.value.id == "os"]
    assert not environ, f"{module} reads os.environ"


def test_no_import_cycles() -> None:
    """No module of proxy or policies reaches itself through its imports."""
    graph = {m: {o for name in _imports(p) if (o := _own(name)) and o != m} for m, p in MODULES.items()}
    # a package's __init__ is reached by importing any of its modules; it may re-export them
    for module in graph:
        graph[module] = {o for o in graph[module] if not module.startswith(o + ".")}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert cycles == []


def _public_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                parts = target.elts if isinstance(target, ast.Tuple) else [target]
                names.update(t.id for t in parts if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_") and n not in NOT_SURFACE}


def _declared(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return [elt.value for elt in node.value.elts]  # type: ignore[attr-defined]
    return None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_all_lists_exactly_the_public_names(module: str) -> None:
    """``__all__`` is the module's surface: every public definition, and nothing it does not define."""
    tree = ast.parse(MODULES[module].read_text())
    declared = _declared(tree)
    public = _public_names(tree)
    if declared is None:
        assert not public, f"{module} defines {sorted(public)} but has no __all__"
        return
    assert len(declared) == len(set(declared)), f"{module}: __all__ repeats a name"
    imported = {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert public <= set(declared), f"{module}: {sorted(public - set(declared))} missing from __all__"
    assert set(declared) <= public | imported, \
        f"{module}: __all__ names {sorted(set(declared) - public - imported)}, which it neither defines nor imports"
