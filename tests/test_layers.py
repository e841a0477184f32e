"""The package graph points down only, and no two modules import each other in a circle.

LAYERS lists the package's modules and subpackages from the bottom up (the same list is in the
package docstring, ``talkinghead_cli/__init__.py``). A module may import from its own layer or
any layer below it, never from a layer above. Imports are read from the source (``ast``), the
ones inside functions and under ``TYPE_CHECKING`` included, so a lazy import cannot hide an
upward arrow. A new top-level module or subpackage must be placed in the list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import talkinghead_cli

PACKAGE = Path(talkinghead_cli.__file__).parent

LAYERS = [
    {"", "errors", "progress", "atomic", "device", "jit"},  # "" is the package's own __init__
    {"audio", "mesh", "checkpoint", "metrics", "text_metrics", "style", "pretrained"},
    {"render", "data", "phonemize", "articulation_metrics"},
    {"export", "retarget", "video"},
    {"animator", "lipreader"},
    {"config"},
    {"training"},
    {"animate", "score"},
    {"cli", "__main__"},
]


def _modules() -> dict[str, Path]:
    """{dotted name below the package ("render.camera", "" for __init__): file}."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports (dotted names below the package)."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if name else []
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_pkg else here[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(["talkinghead_cli", *base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t != "talkinghead_cli" and not t.startswith("talkinghead_cli."):
                continue
            rel = t[len("talkinghead_cli."):] if t != "talkinghead_cli" else ""
            while rel not in MODULES:  # "from m import name": m, unless m.name is a module
                rel = rel.rpartition(".")[0]
            if rel != name:
                found.add(rel)
    return found


def _layer(name: str) -> int:
    top = name.split(".")[0]
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    raise AssertionError(f"talkinghead_cli.{name} is in no layer: add it to LAYERS in {__file__}")


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    for name in MODULES:
        _layer(name)


def test_no_upward_import():
    upward = [f"{a or '__init__'} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
              for a, deps in GRAPH.items() for b in sorted(deps) if _layer(b) > _layer(a)]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    """Between modules, through any chain of imports; a package's __init__ importing its own
    submodules is not a cycle unless a submodule imports the package's __init__ back."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(GRAPH[n]):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                pytest.fail("import cycle: " + " -> ".join(c or "__init__" for c in cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(GRAPH):
        if n not in state:
            visit(n)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from talkinghead_cli.render.camera import Camera\n"
                   "from talkinghead_cli import animate\n")
    assert _imports("mesh", src) == {"render.camera", "animate"}
