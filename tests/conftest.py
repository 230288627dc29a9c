"""Shared fixtures: paths of the course, and the solution notebook's code as a student's."""
from __future__ import annotations

import ast
import fcntl
import json
import linecache
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from sphinx_external_toc.parsing import parse_toc_yaml

from coursekit import course

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
    release and gradebook made by ``nbgrader generate_assignment``: where grading tests start.

    nbgrader generates each assignment once per test session (:func:`_release`), shared by
    the pytest-xdist workers; every caller gets a copy of it (generating takes seconds)."""
    shutil.copytree(_release(assignment), root, dirs_exist_ok=True)
    return root


def _release(assignment: str) -> Path:
    """The course folder in which ``nbgrader generate_assignment`` released ``assignment`` in
    this session: made by the first process that asks, while the others wait on its lock."""
    folder = Path(os.environ[RELEASES_DIR_ENV])
    made = folder / assignment
    with open(folder / f"{assignment}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not made.exists():
            work = folder / f"{assignment}.making"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            shutil.copy(ROOT / "nbgrader_config.py", work)
            shutil.copytree(ROOT / "solutions" / assignment, work / "solutions" / assignment)
            subprocess.run([str(VENV_BIN / "nbgrader"), "generate_assignment", assignment, "--force"], cwd=work,
                           env=tool_env(), check=True, capture_output=True)
            work.rename(made)
    return made


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


def failure_messages(answer, checks) -> list[str]:
    """The message of each check in ``checks`` that ``answer`` fails (``CheckFailure``), in order."""
    from coursekit.grading import CheckFailure
    messages = []
    for check in checks:
        try:
            check(answer)
        except CheckFailure as failure:
            messages.append(str(failure))
    return messages


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
def _no_progress_bars():
    os.environ.setdefault("COURSEKIT_PROGRESS", "0")


def toc_files() -> list[str]:
    """The book's pages in the table of contents' order (``book/intro``, ``book/scaling``, ...),
    read by sphinx-external-toc as Jupyter Book and tools/execute_chapters.py read it."""
    return list(parse_toc_yaml(str(ROOT / "_toc.yml")).keys())


def is_notebook(name: str) -> bool:
    """A page that is a MyST notebook: front matter with a kernelspec (plain pages have none)."""
    text = (ROOT / f"{name}.md").read_text()
    return text.startswith("---") and "kernelspec:" in text.split("---", 2)[1]


CHAPTERS = [chapter.doc for chapter in course.CHAPTERS]   # the executed chapters (tests/test_course.py
# holds _toc.yml and the notebooks in book/ to the registry)


# The repository that the tested build of the book launches from (a public course sets its
# own in _config.yml; the committed one is empty, which the build must also handle).
EXAMPLE_REPOSITORY = "https://github.com/example-org/normcourse"


BOOK_DIR_ENV = "COURSEKIT_TEST_BOOK"    # the folder of the session's book build, shared by workers
RELEASES_DIR_ENV = "COURSEKIT_TEST_RELEASES"   # the session's released assignments (released_course)
CACHE_ENV = "COURSEKIT_CACHE"           # generated data (MNIST-1D) and Optuna studies: the session's own
# The folders the controlling process makes for the session (each unless its variable is set),
# outside pytest's temporary folder: tests that watch theirs for stray files run while the book
# builds. The cache is not the user's; the workers, the book's chapters and the graded kernels
# share it (coursekit.data generates MNIST-1D once for processes that ask together).
SESSION_FOLDERS = {BOOK_DIR_ENV: "coursekit-book-", RELEASES_DIR_ENV: "coursekit-releases-",
                   CACHE_ENV: "coursekit-cache-"}
_SET_BY_US: set[str] = set()            # environment variables this file set for the tests' processes


def _book_dir() -> Path:
    return Path(os.environ[BOOK_DIR_ENV])


def _start_book_build(folder: Path) -> None:
    """Start building the book from clean, with warnings as errors, in a copy of the
    repository (the whole tree, as a maintainer has it) in ``folder/src``, with
    ``repository: url:`` set to :data:`EXAMPLE_REPOSITORY` so that the launch buttons are built
    too. The build runs in a session of its own (it outlives the pytest-xdist worker that
    started it, if need be) and writes its exit status to ``folder/returncode`` when done."""
    src = folder / "src"
    ignore = shutil.ignore_patterns(".venv", "_build", ".git", "__pycache__", ".pytest_cache",
                                    "submitted", "autograded", "feedback", "gradebook.db",
                                    "reports", "test-artifacts")
    shutil.copytree(ROOT, src, ignore=ignore, dirs_exist_ok=True)
    config = src / "_config.yml"
    text = config.read_text()
    assert '  url: ""' in text, "_config.yml no longer has an empty repository url: update this fixture"
    config.write_text(text.replace('  url: ""', f"  url: {EXAMPLE_REPOSITORY}", 1))
    script = ('python tools/execute_chapters.py > build.log 2>&1; '
              'jupyter-book build . --warningiserror >> build.log 2>&1; '
              'echo $? > ../returncode.tmp && mv ../returncode.tmp ../returncode')
    env = {k: v for k, v in tool_env(COURSEKIT_PROGRESS="0").items()
           if k not in _SET_BY_US and k != "COURSEKIT_SCALE"}     # the chapters' runs, as in the book
    build = subprocess.Popen(["sh", "-c", script], cwd=src, env=env, start_new_session=True)   # as `make book`
    (folder / "pid").write_text(str(build.pid))


# The assignments' experiments (their last code cell: a training run that prints a table) run
# again for every submission graded, and the tests grade dozens: they run at a tenth of their
# size (coursekit.train.scaled), which the kernels and the trusted checker's workers inherit
# through the environment. Nothing the tests assert depends on the size of those runs.
ASSIGNMENT_SCALE = "0.1"

BOOK_FILES = {"test_book", "test_browser"}       # the tests of the built book: they run last
# The modules that grade whole classes through nbgrader and the sandbox (minutes each), longest
# first: they start first, so that under pytest-xdist no worker is left with one of them at the
# end while the other idles. `make test` passes --no-loadscope-reorder, so that xdist hands the
# modules out in this order (by default it would start with the modules of the most tests).
LONG_FILES = ["test_nbgrader", "test_classroom", "test_sandbox", "test_trusted", "test_grade_safety",
              "test_trusted_attacks", "test_install"]


def pytest_configure(config):
    """The controlling process (the only one without pytest-xdist) makes the folders where the
    book will be built, the assignments released and the data cached; the workers it starts
    inherit their names from the environment, and ``COURSEKIT_SCALE``
    (:data:`ASSIGNMENT_SCALE` unless set). Each
    pytest-xdist worker runs torch on its share of the cores: two workers of two threads each
    on two cores wait on each other's threads, and the unit tests take up to twice as long."""
    os.environ.setdefault("COURSEKIT_SCALE", ASSIGNMENT_SCALE)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if hasattr(config, "workerinput") and workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)   # and in the kernels and workers grading starts
        _SET_BY_US.add("OMP_NUM_THREADS")
    if not hasattr(config, "workerinput"):
        config._coursekit_folders = {}     # variable -> the folder this process made
        for name, prefix in SESSION_FOLDERS.items():
            if name not in os.environ:
                os.environ[name] = config._coursekit_folders[name] = tempfile.mkdtemp(prefix=prefix)


def pytest_unconfigure(config):
    """The controlling process stops a build still running (an interrupted session) and
    removes the folders it made."""
    made = getattr(config, "_coursekit_folders", {})
    book = Path(made[BOOK_DIR_ENV]) if BOOK_DIR_ENV in made else None
    if book and (book / "pid").exists() and not (book / "returncode").exists():
        try:
            os.killpg(int((book / "pid").read_text()), signal.SIGKILL)
        except (ProcessLookupError, PermissionError, ValueError):
            pass
    for name, folder in made.items():
        shutil.rmtree(folder, ignore_errors=True)
        del os.environ[name]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """The tests of the built book run last, so that the book builds (in the background, see
    :func:`pytest_collection_finish`) while the other tests run; the long modules run first."""
    def order(item):
        stem = Path(str(item.fspath)).stem
        return (stem in BOOK_FILES, LONG_FILES.index(stem) if stem in LONG_FILES else len(LONG_FILES))
    items.sort(key=order)     # stable: the order within a module is kept


# The modules whose tests pytest-xdist may run on different workers, one work unit per value
# of their first parameter, instead of one per module: test_nbgrader.py grades each
# assignment's class once per worker that runs one of its tests.
SPLIT_BY_FIRST_PARAMETER = {"test_nbgrader"}


def pytest_xdist_make_scheduler(config, log):
    """`make test`'s ``--dist loadscope`` (a module's tests on one worker: they share module
    fixtures, a graded class, a sandbox run), except for :data:`SPLIT_BY_FIRST_PARAMETER`."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByModuleOrFirstParameter(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module, _, test = nodeid.partition("::")
            if Path(module).stem in SPLIT_BY_FIRST_PARAMETER and test.endswith("]"):
                return f"{module}[{test.partition('[')[2].split('-')[0].rstrip(']')}]"
            return super()._split_scope(nodeid)
    return ByModuleOrFirstParameter(config, log)


def _claim_book_build() -> None:
    """Start the book's build unless a process of this session already did (with pytest-xdist
    every worker collects every test; the first to claim the folder builds)."""
    try:
        (_book_dir() / "claimed").mkdir()
    except FileExistsError:
        return
    _start_book_build(_book_dir())


def pytest_collection_finish(session):
    """When a collected test needs the built book, start building it now, beside the tests
    that do not (the build takes minutes and mostly one core)."""
    if session.config.option.collectonly:
        return
    if any("site" in getattr(item, "fixturenames", ()) for item in session.items):
        _claim_book_build()


@pytest.fixture(scope="session")
def site() -> Path:
    """The book built from clean (:func:`_start_book_build`), started when the tests were
    collected; shared by the tests of the book's files and of the book in a browser, in every
    pytest-xdist worker."""
    _claim_book_build()
    folder = _book_dir()
    deadline = time.monotonic() + 900
    while not (folder / "returncode").exists():
        if time.monotonic() > deadline:
            pytest.fail(f"the book did not build within 900 s; its log: {folder / 'src' / 'build.log'}")
        time.sleep(1)
    src = folder / "src"
    output = (src / "build.log").read_text()
    (src / "_build").mkdir(exist_ok=True)
    (src / "_build" / "build.log").write_text(output)
    if (folder / "returncode").read_text().strip() != "0":
        pytest.fail(f"the book did not build:\n{output[-9000:]}")
    return src / "_build" / "html"
