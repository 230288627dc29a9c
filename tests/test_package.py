"""The package's seams: no import cycle between coursekit's modules (counting imports inside
functions and under ``TYPE_CHECKING``, which only hide one), and no module reaching into
another's private names."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "coursekit"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> list[tuple[str, list[str], int]]:
    """``(module, imported names, line)`` for every import of a coursekit module in ``name``'s
    source, wherever it stands (relative imports resolved)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.append((base, [alias.name for alias in node.names], node.lineno))
    return [(m, names, line) for m, names, line in out if m == "coursekit" or m.startswith("coursekit.")]


def edges(name: str) -> set[str]:
    """The coursekit modules that importing ``name`` runs: each imported module (and a
    submodule named in ``from package import submodule``). A module's own parent packages
    are left out: Python initializes them before the module, whatever it imports."""
    out = set()
    for module, names, _ in imports(name):
        submodules = {f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES}
        out |= submodules
        if len(submodules) < len(names) or not names:      # a name from the module itself
            out.add(module)
    return {m for m in out if m in MODULES and m != name and not name.startswith(m + ".")}


def test_the_import_graph_has_no_cycle():
    graph = {name: edges(name) for name in MODULES}
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_cycle_finder_sees_a_hidden_import(tmp_path, monkeypatch):
    """The check counts imports under TYPE_CHECKING and inside functions."""
    (tmp_path / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from coursekit.b import X\n")
    (tmp_path / "b.py").write_text("def f():\n    from coursekit.a import Y\n")
    monkeypatch.setitem(MODULES, "coursekit.a", tmp_path / "a.py")
    monkeypatch.setitem(MODULES, "coursekit.b", tmp_path / "b.py")
    assert "coursekit.b" in edges("coursekit.a") and "coursekit.a" in edges("coursekit.b")
    with pytest.raises(pytest.fail.Exception, match="import cycle: coursekit.a -> coursekit.b -> coursekit.a"):
        test_the_import_graph_has_no_cycle()


def test_no_module_imports_anothers_private_names():
    found = [f"{MODULES[name].relative_to(ROOT)}:{line} imports {n} from {module}"
             for name in MODULES for module, names, line in imports(name)
             for n in names if n.startswith("_") and not n.startswith("__")]
    assert not found, "\n".join(found)


def test_no_module_re_exports_lazily():
    """A module-level ``__getattr__`` hides an import from readers and from this check."""
    lazy = [name for name, path in MODULES.items()
            if any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
                   for node in ast.parse(path.read_text()).body)]
    assert not lazy


def test_nbgrader_s_configuration_does_not_import_torch():
    """Every nbgrader command (generate_assignment, autograde of each grading shard, feedback)
    loads nbgrader_config.py, which imports ``coursekit.classroom``: torch's second and more
    of import time would be paid by each. Only the trusted checker and the kernels need it."""
    code = ("import sys\nfrom coursekit.classroom.feedback import HideHiddenTests\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:5])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]", f"importing coursekit.classroom imports torch: {result.stdout}"
    assert "coursekit.classroom.feedback import HideHiddenTests" in (ROOT / "nbgrader_config.py").read_text()
