"""The package stands alone and its import graph flows one way (issues [one-source],
[docs-and-rooms]): nothing under stepgrpo_fast/ imports the checkout's bench/ or tests/, imports
inside the package form no circle (counting imports made inside functions), trainer/ keeps at
most 12 files directly in it, old module paths still import, and no file outgrows the ~450-line
budget of one job per file."""
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


def _imports(name: str, path: Path) -> list[str]:
    """Absolute names imported anywhere in the module, inside functions too (a deferred import
    is still an arrow: it only hides a circle from the interpreter), except in TYPE_CHECKING
    blocks, which never run."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
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
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {imp for imp in _imports(name, path) if imp in modules and imp != name}
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


def test_no_import_circle():
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
    assert graph["stepgrpo_fast.trainer.rl.grpo_loop"] & {"stepgrpo_fast.trainer.rl.rollout",
                                                       "stepgrpo_fast.trainer.run"}
    fake = tmp_path / "stepgrpo_fast"
    (fake / "sub").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "sub" / "__init__.py").write_text("")
    (fake / "sub" / "a.py").write_text("from . import b\n")
    (fake / "sub" / "b.py").write_text("def f():\n    from stepgrpo_fast.sub.a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    # the arrow back sits inside a function: still a circle
    with pytest.raises(AssertionError, match="sub.a -> stepgrpo_fast.sub.b -> stepgrpo_fast.sub.a"):
        test_no_import_circle()
    # ... and one inside `if TYPE_CHECKING:` is not (it never runs)
    (fake / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stepgrpo_fast.sub.a import x\n")
    test_no_import_circle()


def test_trainer_is_in_rooms():
    """At most 12 .py files directly in trainer/; the stages a reader looks for are folders."""
    trainer = PACKAGE / "trainer"
    top = sorted(p.name for p in trainer.glob("*.py"))
    assert len(top) <= 12, top
    for room in ("config", "model", "rl"):
        assert (trainer / room / "__init__.py").is_file(), room


@pytest.mark.parametrize("old", sorted(__import__("stepgrpo_fast._moved", fromlist=["MOVED"]).MOVED))
def test_old_module_paths_still_import(old):
    """Every moved module's old path imports and serves the names of its new home(s); a name
    that moved nowhere fails naming the new path."""
    import importlib

    from stepgrpo_fast._moved import MOVED

    module = importlib.import_module(old)
    for home_name in MOVED[old]:
        home = importlib.import_module(home_name)
        public = [n for n in vars(home) if not n.startswith("_")]
        assert public and all(getattr(module, n) is getattr(home, n) for n in public)
    with pytest.raises(AttributeError, match=MOVED[old][-1]):
        module.no_such_name_anywhere


def test_every_file_fits_the_line_budget():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long
