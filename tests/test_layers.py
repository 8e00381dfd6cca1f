"""The package's import graph: no import cycle between modules and no import pointing up a layer.

The source is read with ``ast`` (nothing is imported), so every import counts: module-level,
function-level (lazy), under ``if TYPE_CHECKING:``, relative, and ``importlib.import_module`` with a
literal name. Folders map into the package as setup.py installs them (``kernels/`` -> ``mrface.kernels``,
``training/`` -> ``mrface.training``, ``eval/`` -> ``mrface.eval``).

An import names the module that defines what it imports: ``from mrface import ops`` is the module
``mrface.ops``; a name a package's ``__init__`` re-exports resolves to the module it comes from; a name
the root facade ``mrface/__init__.py`` serves through a function or ``__getattr__`` resolves to the
modules that function imports, so nothing reaches a higher layer through a package ``__init__``.
``import mrface`` counts through the ``mrface.<name>`` attributes the importing module uses.
Executing parent packages' ``__init__`` on import is not counted as an edge.

Layers, low to high (a module may import its own layer, if acyclic, and any lower one):
mrface.errors, mrface.io, mrface.versions (shared utilities) < kernels, mrface._C < ops < losses, models
< data, export < training, eval < bench, cli. The root facade ``mrface`` may import anything;
``mrface.kernels`` imports nothing of mrface outside itself.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"mrface": "mrface", "mrface.kernels": "kernels", "mrface.training": "training", "mrface.eval": "eval"}
COMPILED_MODULES = ("mrface._C",)
ROOT = "mrface"

# (module prefix, layer rank); a module's layer is that of its longest matching prefix.
LAYERS: dict[str, int] = {
    "mrface.errors": 0,
    "mrface.io": 0,
    "mrface.versions": 0,
    "mrface.kernels": 1,
    "mrface._C": 1,
    "mrface.ops": 2,
    "mrface.losses": 3,
    "mrface.models": 3,
    "mrface.data": 4,
    "mrface.export": 4,
    "mrface.training": 5,
    "mrface.eval": 5,
    "mrface.bench": 6,
    "mrface.bench_report": 6,
    "mrface.bench_plots": 6,
    "mrface.bench_gpu": 6,
    "mrface.cli": 6,
}
LAYER_NAMES = {
    0: "base",
    1: "kernels",
    2: "ops",
    3: "losses/models",
    4: "data/export",
    5: "training/eval",
    6: "bench/cli",
}
# Modules under these prefixes import nothing of the package outside their own prefix.
SELF_CONTAINED = ("mrface.kernels",)


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


# --------------------------------------------------------------------------------------------------
# the checker


def discover_modules(package_dirs: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> source file for every .py file under each (package -> folder) root."""
    modules: dict[str, Path] = {}
    for package, folder in package_dirs.items():
        for path in sorted(Path(folder).rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


def _is_package(module: str, modules: dict[str, Path]) -> bool:
    path = modules.get(module)
    return path is not None and path.name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom, modules: dict[str, Path]) -> str:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if not node.level:
        return node.module or ""
    package = module if _is_package(module, modules) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _package_bindings(init: Path, package: str, modules: dict[str, Path]) -> dict[str, set[str]]:
    """Names a package ``__init__`` binds -> the modules that really define or serve them.

    A re-export (``from m import name``) maps to ``m``; a function (a facade's lazy helper or its
    ``__getattr__``) maps to every module imported inside it; names defined in the ``__init__`` itself
    are absent (they belong to the package)."""
    tree = ast.parse(init.read_text(), filename=str(init))
    bindings: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            source = _absolute(package, node, modules)
            for alias in node.names:
                real = f"{source}.{alias.name}"
                bindings[alias.asname or alias.name] = {real if real in modules else source}
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = {t for t, _ in _raw_imports(package, node, modules)}
            if inner:
                bindings[node.name] = inner
    return bindings


def _raw_imports(module: str, tree: ast.AST, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported module or module.name, line) for every import anywhere in ``tree``, unresolved."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node, modules)
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.args[0].value, node.lineno))
    return found


def _resolve(
    name: str,
    root: str,
    modules: dict[str, Path],
    bindings: dict[str, dict[str, set[str]]],
    seen: frozenset = frozenset(),
) -> set[str]:
    """The package modules ``name`` (a module, or ``package.attribute``) really comes from; empty if external."""
    if name in seen or (name != root and not name.startswith(root + ".")):
        return set()
    if name in modules:
        return {name}
    package, _, attribute = name.rpartition(".")
    if package not in modules:
        return _resolve(package, root, modules, bindings, seen | {name}) if package else set()
    served = bindings.get(package, {}).get(attribute)
    if not served:
        return {package}
    return set().union(*(_resolve(s, root, modules, bindings, seen | {name}) for s in served))


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for an attribute chain on a plain name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def import_edges(modules: dict[str, Path], root: str, compiled: tuple[str, ...] = ()) -> list[Import]:
    """Every import between the package's modules, each resolved to the module that defines the name."""
    known = {**modules, **{c: Path(c) for c in compiled}}
    bindings = {m: _package_bindings(p, m, known) for m, p in modules.items() if p.name == "__init__.py"}
    edges: set[Import] = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        raw = _raw_imports(module, tree, known)
        plain_root = [line for name, line in raw if name == root]
        raw = [(name, line) for name, line in raw if name != root]
        if plain_root:  # `import mrface`: the attributes used decide what it reaches
            chains = {_dotted(node) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
            chains = {c for c in chains if c and c.startswith(root + ".")}
            raw += [(c, plain_root[0]) for c in chains if not any(o.startswith(c + ".") for o in chains)]
        for name, line in raw:
            for target in _resolve(name, root, known, bindings):
                if target != module:
                    edges.add(Import(module, target, path, line))
    return sorted(edges, key=lambda e: (e.source, e.target, e.line))


def layer_of(module: str, layers: dict[str, int]) -> int | None:
    matches = [p for p in layers if module == p or module.startswith(p + ".")]
    return layers[max(matches, key=len)] if matches else None


def upward_imports(
    edges: list[Import],
    layers: dict[str, int],
    root: str,
    self_contained: tuple[str, ...] = (),
    names: dict[int, str] | None = None,
) -> list[str]:
    """One line per import that points to a higher layer (or leaves a self-contained prefix)."""
    problems = []
    for e in edges:
        if e.source == root:
            continue  # the facade may import anything
        for prefix in self_contained:
            inside = e.source == prefix or e.source.startswith(prefix + ".")
            if inside and not (e.target == prefix or e.target.startswith(prefix + ".")):
                problems.append(f"{e.source} imports {e.target}, outside self-contained {prefix} ({e.where()})")
        low, high = layer_of(e.source, layers), layer_of(e.target, layers)
        if low is not None and high is not None and high > low:
            problems.append(
                f"{e.source} [{(names or {}).get(low, low)}] imports {e.target} [{(names or {}).get(high, high)}] "
                f"({e.where()})"
            )
    return problems


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def import_cycles(edges: list[Import]) -> list[str]:
    """One line per strongly connected group of modules: its members and one shortest cycle, with lines."""
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
        where.setdefault((e.source, e.target), e.where())
    problems = []
    for component in _strongly_connected(graph):
        if len(component) < 2:
            continue
        members = set(component)
        start = component[0]
        previous: dict[str, str] = {}
        queue = deque([start])
        while queue:  # shortest path start -> ... -> start inside the component
            node = queue.popleft()
            if start in graph[node] and node in members:
                cycle = [start]
                while node != start:
                    cycle.append(node)
                    node = previous[node]
                cycle = [start, *reversed(cycle[1:]), start]
                break
            for child in sorted(graph[node] & members):
                if child not in previous and child != start:
                    previous[child] = node
                    queue.append(child)
        steps = ", ".join(f"{a} -> {b} ({where[a, b]})" for a, b in zip(cycle, cycle[1:], strict=False))
        problems.append(f"cycle among {{{', '.join(component)}}}: {steps}")
    return problems


# --------------------------------------------------------------------------------------------------
# the package


@pytest.fixture(scope="module")
def package_modules() -> dict[str, Path]:
    modules = discover_modules({p: REPO / d for p, d in PACKAGE_DIRS.items()})
    assert "mrface.kernels" in modules and "mrface.training" in modules and "mrface.eval.metrics" in modules
    return modules


@pytest.fixture(scope="module")
def package_edges(package_modules: dict[str, Path]) -> list[Import]:
    edges = import_edges(package_modules, ROOT, COMPILED_MODULES)
    assert edges, "no imports found: the walk is broken"
    return [Import(e.source, e.target, e.path.relative_to(REPO), e.line) for e in edges]


def test_every_module_has_a_layer(package_modules: dict[str, Path]) -> None:
    unplaced = sorted(m for m in package_modules if m != ROOT and layer_of(m, LAYERS) is None)
    assert not unplaced, f"modules with no layer (add them to LAYERS in {__file__}): {unplaced}"


def test_no_import_cycle(package_edges: list[Import]) -> None:
    cycles = import_cycles(package_edges)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_upward_import(package_edges: list[Import]) -> None:
    upward = upward_imports(package_edges, LAYERS, ROOT, SELF_CONTAINED, LAYER_NAMES)
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


# --------------------------------------------------------------------------------------------------
# the checker on a planted tree (so the package tests cannot pass vacuously)


def _plant(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return discover_modules({"pkg": tmp_path / "pkg", "pkg.low": tmp_path / "low"})


FAKE_LAYERS = {"pkg.low": 0, "pkg.mid": 1, "pkg.high": 2}


def test_checker_finds_planted_cycle_and_upward_imports(tmp_path: Path) -> None:
    modules = _plant(
        tmp_path,
        {
            "pkg/__init__.py": "def helper():\n    from pkg.high.b import run\n    return run\n",
            "pkg/mid/__init__.py": "from .a import thing\n",
            "pkg/mid/a.py": "import os\n\ndef f():\n    from pkg.mid import c\n    return c\nthing = 1\n",
            "pkg/mid/c.py": "from . import a\n",
            "pkg/high/__init__.py": "",
            "pkg/high/b.py": "from pkg.mid import thing\n\ndef run():\n    pass\n",
            "low/__init__.py": "",
            "low/k.py": "def g():\n    from pkg import helper\n    return helper\n",
            "low/ok.py": "from pkg.low import k\nimport numpy\n",
        },
    )
    assert "pkg.low.k" in modules and "pkg.mid" in modules
    edges = import_edges(modules, "pkg")
    pairs = {(e.source, e.target) for e in edges}
    # the relative and lazy imports resolve to real modules; the re-export resolves through pkg.mid's __init__
    assert {("pkg.mid.a", "pkg.mid.c"), ("pkg.mid.c", "pkg.mid.a"), ("pkg.high.b", "pkg.mid.a")} <= pairs
    assert ("pkg.low.ok", "pkg.low.k") in pairs and not any(t == "numpy" or t == "os" for _, t in pairs)

    cycles = import_cycles(edges)
    assert len(cycles) == 1 and "{pkg.mid.a, pkg.mid.c}" in cycles[0]
    assert "pkg.mid.a -> pkg.mid.c" in cycles[0] and "pkg.mid.c -> pkg.mid.a" in cycles[0]

    upward = upward_imports(edges, FAKE_LAYERS, "pkg", ("pkg.low",))
    # the lazy import of the facade's helper reaches pkg.high.b: upward, and outside self-contained pkg.low
    assert any(line.startswith("pkg.low.k [") and "imports pkg.high.b [" in line for line in upward), upward
    assert any("outside self-contained pkg.low" in line for line in upward), upward
    assert not any(line.startswith("pkg.high.b") for line in upward)  # downward is fine


def test_checker_passes_a_clean_tree_and_reads_plain_root_imports(tmp_path: Path) -> None:
    modules = _plant(
        tmp_path,
        {
            "pkg/__init__.py": "__version__ = '1'\n",
            "pkg/high/__init__.py": "",
            "pkg/high/b.py": "import pkg\nimport pkg.mid.a\n\nv = pkg.__version__\nx = pkg.mid.a.thing\n",
            "pkg/mid/__init__.py": "",
            "pkg/mid/a.py": "import importlib\nthing = importlib.import_module('pkg.low.k')\n",
            "low/__init__.py": "",
            "low/k.py": "",
        },
    )
    edges = import_edges(modules, "pkg")
    assert {(e.source, e.target) for e in edges} == {
        ("pkg.high.b", "pkg"),
        ("pkg.high.b", "pkg.mid.a"),
        ("pkg.mid.a", "pkg.low.k"),
    }
    assert import_cycles(edges) == []
    assert upward_imports(edges, FAKE_LAYERS, "pkg", ("pkg.low",)) == []
