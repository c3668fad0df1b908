"""The package stands alone and its import graph flows one way (issue [one-source]): nothing under
stepgrpo_fast/ imports the checkout's bench/ or tests/, module-level imports inside the package
form no circle, and no file outgrows the ~450-line budget of one job per file."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stepgrpo_fast"
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _top_level_imports(name: str, path: Path) -> list[str]:
    """Absolute names imported at module level (not inside functions or TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                found.append(module)
                found.extend(f"{module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {imp for imp in _top_level_imports(name, path) if imp in modules and imp != name}
            for name, path in modules.items()}


def test_the_package_never_imports_the_checkout():
    offenders = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):  # inside functions too: a wheel has no bench/ or tests/
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            offenders += [f"{name}:{node.lineno} imports {n}" for n in names
                          if n.split(".")[0] in ("bench", "tests", "conftest")]
    assert not offenders, offenders


def test_no_import_circle_at_module_level():
    graph = _import_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            # importing a submodule runs its package's __init__ first: not an edge back
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_graph_sees_a_circle_when_there_is_one(tmp_path, monkeypatch):
    """The circle test is not vacuous: the same walk flags a -> b -> a."""
    graph = _import_graph()
    assert graph["stepgrpo_fast.trainer.grpo_loop"] & {"stepgrpo_fast.trainer.rollout",
                                                       "stepgrpo_fast.trainer.run"}
    fake = tmp_path / "stepgrpo_fast"
    (fake / "sub").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "sub" / "__init__.py").write_text("")
    (fake / "sub" / "a.py").write_text("from . import b\n")
    (fake / "sub" / "b.py").write_text("from stepgrpo_fast.sub.a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match="sub.a -> stepgrpo_fast.sub.b -> stepgrpo_fast.sub.a"):
        test_no_import_circle_at_module_level()


def test_every_file_fits_the_line_budget():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long
