"""Integrity: what grading checks beyond the scores, inside and outside the kernel.

Each student's kernel runs in a sandbox (:mod:`.sandbox`), so it cannot reach the course,
the gradebook or a classmate. Inside the kernel, student code still runs before the test
cells and could change them; three defences remain:

1. two cells are added to the graded copy of every notebook (never to the student's file):
   the first, before any student code, records the identity of everything the checks rely
   on (coursekit.grading and its modules, torch, torch.Tensor, torch.testing,
   torch.nn.functional, math, builtins, the modules in sys.modules, IPython's error
   display, sys.excepthook); the last compares. Monkeypatching any of them, or deleting
   the record, flags the submission;
2. after grading, outside the kernel: every test cell of the graded notebook must have
   exactly the gradebook's source (hidden tests included), and every score must be what
   the cell's output gives with the gradebook's points;
3. the student's code is scanned for references to the grading machinery, the solutions
   or the gradebook, noted for the instructor's review.

A flagged submission is listed with what was found, for review. These in-kernel checks can
be defeated by a student who studies them; the score recorded is not theirs but the trusted
checker's (:mod:`.checker`), computed in a process the student's code never ran in.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import nbformat

from . import gradebook
from .common import grade_id as _grade_id

INTEGRITY_TAG = "coursekit_integrity"
INTEGRITY_OK = "coursekit-integrity: ok"
_WATCHED_MODULES = ("builtins", "math", "torch", "torch.testing", "torch.nn.functional", "coursekit.grading")
# names that legitimate code rebinds: IPython's `_` and ipykernel's `input` (every cell), and
# torch.manual_seed (wrapped when torch._dynamo is first imported, e.g. by an optimizer)
_LAZY = {("builtins", "_"), ("builtins", "input"), ("torch", "manual_seed")}

_INTEGRITY_START = """\
def __coursekit_integrity_start():
    import builtins, importlib, pkgutil, sys, types
    import torch, torch.testing, torch.nn.functional
    import coursekit.grading
    names = list(%(watched)r) + ["coursekit.grading." + m.name for m in pkgutil.iter_modules(coursekit.grading.__path__)]
    modules = {name: importlib.import_module(name) for name in names}
    shell = get_ipython()

    def fingerprint():
        seen = {}
        for name, module in modules.items():
            seen["sys.modules[%%r]" %% name] = id(sys.modules.get(name))
            for key, value in list(vars(module).items()):
                if (name, key) in %(lazy)r:   # rebound by IPython, ipykernel or torch itself
                    continue
                seen[name + "." + key] = id(value)
                if isinstance(value, types.FunctionType):
                    seen[name + "." + key + ".__code__"] = id(value.__code__)
                    seen[name + "." + key + ".__defaults__"] = repr(value.__defaults__)
                    seen[name + "." + key + ".__kwdefaults__"] = repr(value.__kwdefaults__)
        for key, value in list(vars(torch.Tensor).items()):
            seen["torch.Tensor." + key] = id(value)
        for key in ("showtraceback", "_showtraceback", "showsyntaxerror", "displayhook", "display_pub", "run_cell"):
            value = getattr(shell, key, None)   # a bound method is a new object each time: compare its function
            seen["IPython." + key] = (id(getattr(value, "__func__", value)), key in vars(shell))
        seen["sys.excepthook"] = id(getattr(sys.excepthook, "__func__", sys.excepthook))
        return seen

    before = fingerprint()

    def compare():
        after = fingerprint()
        changed = sorted(k for k, v in before.items() if after.get(k, "missing") != v)
        return changed
    return compare


__coursekit_integrity_compare = __coursekit_integrity_start()
del __coursekit_integrity_start
"""

_INTEGRITY_END = """\
__coursekit_integrity_changed = __coursekit_integrity_compare()
print(%(ok)r if not __coursekit_integrity_changed else
      "coursekit-integrity: changed " + ", ".join(__coursekit_integrity_changed[:12]))
"""


def integrity_cells() -> tuple[dict, dict]:
    def cell(source):
        return {"cell_type": "code", "execution_count": None, "id": f"{INTEGRITY_TAG}-{len(source)}",
                "metadata": {INTEGRITY_TAG: True}, "outputs": [], "source": source}
    return (cell(_INTEGRITY_START % {"watched": _WATCHED_MODULES, "lazy": _LAZY}),
            cell(_INTEGRITY_END % {"ok": INTEGRITY_OK}))


_SUSPICIOUS = [
    (r"coursekit\s*\.\s*grading|from\s+coursekit\.grading|import\s+coursekit\.grading", "the grading machinery (coursekit.grading)"),
    (r"assert_close|torch\.testing", "torch.testing"),
    (r"\bbuiltins\b|__builtins__", "builtins"),
    (r"showtraceback|excepthook|displayhook|get_ipython", "IPython's error display"),
    (r"sys\.modules|__code__|__closure__|\bgc\b\.", "interpreter internals"),
    (r"gradebook|solutions/|BEGIN HIDDEN|nbgrader", "the gradebook, the solutions or the hidden tests"),
    (r"__coursekit_integrity", "the integrity check"),
]


def _student_code(nb: dict, release: dict) -> str:
    """The code a student wrote: editable code cells that differ from every released cell."""
    given = {"".join(c["source"]) for c in release["cells"]}
    parts = []
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        source = "".join(cell["source"])
        if cell.get("cell_type") == "code" and not meta.get("locked") and source not in given:
            parts.append(source)
    return "\n".join(parts)


def scan(nb: dict, release: dict) -> list[str]:
    """What the student's own code refers to that honest code rarely does, for review."""
    code = _student_code(nb, release)
    return [f"the code refers to {what}" for pattern, what in _SUSPICIOUS if re.search(pattern, code)]


def verify(course: Path, shard: Path, assignment: str, student: str, notebooks: list[str]) -> list[str]:
    """What is wrong with a graded submission, checked outside the kernel (empty: nothing)."""
    problems = []
    for name in notebooks:
        nb = json.loads((shard / "autograded" / student / assignment / name).read_text())
        notebook = name[:-len(".ipynb")]
        ends = [c for c in nb["cells"] if c["metadata"].get(INTEGRITY_TAG)]
        text = "".join("".join(o.get("text", "")) for o in (ends[-1]["outputs"] if ends else [])
                       if o.get("output_type") == "stream")
        if INTEGRITY_OK not in text:
            found = re.search(r"coursekit-integrity: .*", text)
            problems.append(f"{name}: the integrity check " + (f"reported: {found.group(0)[20:]}" if found
                                                                  else "did not run to the end"))
        cells = gradebook.test_cells(gradebook.db_path(course), assignment, notebook)
        scores = gradebook.auto_scores(shard / "gradebook.db", assignment, notebook, student)
        for cell in nb["cells"]:
            gid = _grade_id(cell)
            if gid not in cells or not cell["metadata"]["nbgrader"].get("grade"):
                continue
            source, max_score = cells[gid]
            if cell["metadata"]["nbgrader"].get("locked") and "".join(cell["source"]) != source:
                problems.append(f"{name}: the test cell {gid!r} ran with other code than the gradebook's")
            expected = _cell_score(cell, max_score)
            if expected is not None and scores.get(gid) != expected:
                problems.append(f"{name}: the score of {gid!r} ({scores.get(gid)}) is not what its output "
                                f"gives ({expected})")
    return problems
def _cell_score(cell: dict, max_score: float) -> float | None:
    """nbgrader's rule for an autograded code cell, with the gradebook's points."""
    from nbgrader.utils import determine_grade
    if cell.get("cell_type") != "code" or cell["metadata"]["nbgrader"].get("solution"):
        return None
    cell = nbformat.from_dict(copy.deepcopy(cell))
    cell.metadata.nbgrader["points"] = max_score
    return determine_grade(cell)[0]

