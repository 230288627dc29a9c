"""Shared fixtures: paths of the course, and the solution notebook's code as a student's."""
from __future__ import annotations

import ast
import json
import linecache
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # nbgrader and jupyter-book run from the same environment


def tool_env(**extra) -> dict:
    """Environment for course commands run as subprocesses: the venv's tools first on PATH
    (nbgrader calls `alembic` by name), no progress bars, a private data cache."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def released_course(root: Path, assignment: str = "scaling") -> Path:
    """A course folder at ``root`` with the configuration, ``solutions/<assignment>`` and its
    release and gradebook made by ``nbgrader generate_assignment``: where grading tests start."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copytree(ROOT / "solutions" / assignment, root / "solutions" / assignment)
    subprocess.run([str(VENV_BIN / "nbgrader"), "generate_assignment", assignment, "--force"], cwd=root,
                   env=tool_env(), check=True, capture_output=True)
    return root


def code_cells(assignment: str) -> list[dict]:
    """The code cells of ``solutions/<assignment>/<assignment>.ipynb``, in order."""
    nb = json.loads((ROOT / "solutions" / assignment / f"{assignment}.ipynb").read_text())
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def graded_cells(assignment: str) -> list[tuple[str, str, float]]:
    """``(grade_id, source, points)`` of each autograded test cell, hidden tests included
    (as nbgrader runs them when grading: the markers are comments)."""
    out = []
    for cell in code_cells(assignment):
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            out.append((meta["grade_id"], "".join(cell["source"]), float(meta["points"])))
    return out


def cell_index(nb: dict, grade_id: str) -> int:
    """The position of the cell with nbgrader's ``grade_id`` in a notebook."""
    return next(i for i, c in enumerate(nb["cells"]) if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


def edit(nb: dict, grade_id: str, old: str, new: str) -> dict:
    """A copy of a notebook with ``old`` replaced by ``new`` in the cell ``grade_id``: a
    student's submission made from the solution."""
    nb = json.loads(json.dumps(nb))
    cell = nb["cells"][cell_index(nb, grade_id)]
    source = "".join(cell["source"])
    assert old in source, f"{grade_id} no longer contains {old!r}: update this test"
    cell["source"] = source.replace(old, new)
    return nb


def trusted_spec(assignment: str):
    """The trusted checker's view of an assignment, as grading builds it (the test cells'
    source with hidden tests, as the gradebook holds it), and the solution notebook."""
    from coursekit.classroom import checker
    source = json.loads((ROOT / "solutions" / assignment / f"{assignment}.ipynb").read_text())
    tests = {grade_id: (cell, points) for grade_id, cell, points in graded_cells(assignment)}
    release = json.loads((ROOT / "exercises" / assignment / f"{assignment}.ipynb").read_text())
    return checker.Assignment.from_release(assignment, release, tests), source


def run_cell(source: str, namespace: dict, filename: str):
    """Run ``source`` as a notebook cell: the value of its last expression, if any. The
    source is registered in ``linecache`` as IPython does, so a failure shows the line."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tree = ast.parse(source, filename)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, filename, "exec"), namespace)
    if last is not None:
        return eval(compile(ast.Expression(last.value), filename, "eval"), namespace)
    return None


def notebook_cells(path: Path) -> dict[str, str]:
    """The source of each cell of a notebook, keyed by its nbgrader grade_id (or cell id)."""
    nb = json.loads(path.read_text())
    cells = {}
    for cell in nb["cells"]:
        key = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or cell.get("id")
        cells[key] = "".join(cell["source"])
    return cells


def student_classes(*cell_sources: str) -> dict:
    """Execute solution cells as a student's notebook would, and return their namespace."""
    namespace = {"torch": torch}
    for source in cell_sources:
        exec(compile(source, "<solution cell>", "exec"), namespace)
    return namespace


def with_mistake(cells: dict[str, str], cell: str, *edits: tuple[str, str], setup: tuple[str, ...] = ()) -> dict:
    """Execute the ``setup`` cells, then one solution cell with text replaced (a mistake put
    in), and return the namespace; fails loudly when the solution no longer contains the
    text to replace."""
    source = cells[cell]
    for old, new in edits:
        assert old in source, f"the solution cell {cell!r} no longer contains {old!r}: update this test"
        source = source.replace(old, new)
    return student_classes(*(cells[name] for name in setup), source)


def solution_cells(assignment: str) -> dict[str, str]:
    return notebook_cells(ROOT / "solutions" / assignment / f"{assignment}.ipynb")


@pytest.fixture(scope="session")
def scaling_solution() -> dict[str, str]:
    return solution_cells("scaling")


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Generated data (MNIST-1D) goes to a per-run cache, not the user's."""
    os.environ.setdefault("COURSEKIT_CACHE", str(tmp_path_factory.mktemp("coursekit-cache")))
    os.environ.setdefault("COURSEKIT_PROGRESS", "0")


def toc_files() -> list[str]:
    """The book's pages in the table of contents' order (``book/intro``, ``book/scaling``, ...)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [toc["root"]] + [entry["file"] for part in toc.get("parts", []) for entry in part["chapters"]]


def is_notebook(name: str) -> bool:
    """A page that is a MyST notebook: front matter with a kernelspec (plain pages have none)."""
    text = (ROOT / f"{name}.md").read_text()
    return text.startswith("---") and "kernelspec:" in text.split("---", 2)[1]


CHAPTERS = [name for name in toc_files() if is_notebook(name)]   # the executed chapters


# The repository that the tested build of the book launches from (a public course sets its
# own in _config.yml; the committed one is empty, which the build must also handle).
EXAMPLE_REPOSITORY = "https://github.com/example-org/normcourse"


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The book built from clean, with warnings as errors, in a copy of the repository (the
    whole tree, as a maintainer has it), with ``repository: url:`` set to
    :data:`EXAMPLE_REPOSITORY` so that the launch buttons are built too. Shared by the
    tests of the book's files and of the book in a browser: it takes minutes."""
    src = tmp_path_factory.mktemp("book")
    ignore = shutil.ignore_patterns(".venv", "_build", ".git", "__pycache__", ".pytest_cache",
                                    "submitted", "autograded", "feedback", "gradebook.db",
                                    "reports", "test-artifacts")
    shutil.copytree(ROOT, src, ignore=ignore, dirs_exist_ok=True)
    config = src / "_config.yml"
    text = config.read_text()
    assert '  url: ""' in text, "_config.yml no longer has an empty repository url: update this fixture"
    config.write_text(text.replace('  url: ""', f"  url: {EXAMPLE_REPOSITORY}", 1))
    result = subprocess.run(["jupyter-book", "build", ".", "--warningiserror"], cwd=src,
                            env=tool_env(COURSEKIT_PROGRESS="0"), capture_output=True, text=True, timeout=900)
    (src / "_build").mkdir(exist_ok=True)
    (src / "_build" / "build.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        pytest.fail(f"the book did not build:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}")
    return src / "_build" / "html"


# ---------------------------------------------------------------------------------------------
# Running the suite on two workers (pytest-xdist, `make test`: -n 2 --dist loadgroup)
#
# Each file is one group that runs on one worker, so its module fixtures are built once, with
# two exceptions: the book's files share the `site` build (group "book"), and the files that
# grade with nbgrader, bubblewrap and cgroups form one group ("grading"), so that no two
# gradings run at the same time (they count the sandboxes and cgroups left behind). The
# longest groups come first (`--no-loadscope-reorder` keeps this order), the book's build
# then runs beside the grading.
BOOK_FILES = {"test_book", "test_browser"}
GRADING_FILES = {"test_nbgrader", "test_sandbox", "test_classroom", "test_grade_safety", "test_trusted",
                 "test_trusted_attacks", "test_collect", "test_preflight_export", "test_fairness",
                 "test_fairness_scaling", "test_grading_early_stopping"}
GROUP_ORDER = ["grading", "book"]            # the rest follow in the order pytest collected them


def xdist_group(path: Path) -> str:
    name = path.stem
    return "book" if name in BOOK_FILES else "grading" if name in GRADING_FILES else name


@pytest.hookimpl(tryfirst=True)              # before xdist reads the markers
def pytest_collection_modifyitems(config, items):
    groups = {item: xdist_group(Path(str(item.fspath))) for item in items}
    for item, group in groups.items():
        item.add_marker(pytest.mark.xdist_group(group))
    rank = {group: i for i, group in enumerate(GROUP_ORDER)}
    items.sort(key=lambda item: rank.get(groups[item], len(rank)))   # stable: files keep their order
