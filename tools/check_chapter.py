"""Check a chapter the way the book's build and tests will, in about the time it takes to run.

    python tools/check_chapter.py book/scaling.md [book/batchnorm.md ...] [--no-run]

For each chapter it lists (``ATEN_CPU_CAPABILITY=avx2`` or ``default`` in the environment
runs torch's other CPU kernels, whose floating-point results differ, as on another machine)

- numbers typed into the prose (``tools/prose_numbers.py``);
- and, after executing the chapter as the book does (working directory ``book/``, a fresh
  kernel, ``COURSEKIT_PROGRESS=0``; ``--no-run`` skips this): how long it took (budget 90 s),
  the error of a failing cell (a hidden claim cell among them), the glue names the text uses
  that no cell glued or whose format spec does not apply, printout lines longer than
  :data:`MAX_LINE` characters, and figures wider than the column allows (:data:`MAX_FIGURE_PX`).

The executed notebook is kept in ``_build/check/<chapter>.ipynb``. Exit status 1 when
anything is wrong.
"""
from __future__ import annotations

import argparse
import base64
import os
import re
import struct
import sys
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).parent))
from prose_numbers import typed_numbers  # noqa: E402
from sphinx_course import glue_data  # noqa: E402 - what the download converter reads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from coursekit.plots import COLUMN_WIDTH, DPI  # noqa: E402

MAX_LINE = 88                                   # characters of a printout line
COLUMN_PX = 676                                 # the output area of the column at a 1280-px window
MAX_FIGURE_PX = int(COLUMN_PX / 0.8)            # shown at 80 % of its width or more
BUDGET_S = 90

_GLUE_ROLE = re.compile(r"\{glue(?::(?P<kind>[a-z]+))?\}`(?P<content>[^`]+)`")
_GLUE_DIRECTIVE = re.compile(r"^\s*(`{3,}|:{3,})\{glue(?::[a-z]+)?\}\s+(?P<name>\S+)", re.M)


def glue_uses(source: str) -> list[tuple[str, str, str]]:
    """``(kind, name, format spec)`` of every glue role and directive in a chapter's text."""
    uses = []
    for match in _GLUE_ROLE.finditer(source):
        kind = match["kind"] or ""
        content = match["content"]
        name, spec = (content.rsplit(":", 1) + [""])[:2] if kind == "text" and ":" in content else (content, "")
        uses.append((kind, name.split("::", 1)[-1], spec))
    uses += [("directive", m["name"], "") for m in _GLUE_DIRECTIVE.finditer(source)]
    return uses


def glue_problems(source: str, notebook) -> list[str]:
    from myst_nb.core.variables import format_plain_text

    values = glue_data(notebook)
    problems = []
    for kind, name, spec in glue_uses(source):
        if name not in values:
            problems.append(f"{{glue:{kind}}} uses {name!r}, which no cell glued")
        elif kind == "text" and spec:
            try:
                format_plain_text(values[name]["text/plain"], spec)
            except Exception as error:                          # noqa: BLE001 - reported
                problems.append(f"{{glue:text}}`{name}:{spec}`: the value {values[name]['text/plain']!r} "
                                f"does not take the format: {error}")
        elif kind == "md" or kind == "directive":
            if "text/markdown" not in values[name]:
                problems.append(f"{{glue:md}} {name!r} is not Markdown (glue an IPython.display.Markdown)")
    return problems


def printout_lines(notebook) -> list[tuple[int, str]]:
    """``(cell number, line)`` of every printed or displayed text line of the chapter."""
    lines = []
    for n, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("metadata", {}).get("scrapbook"):
                continue                                        # glue: not shown where it is made
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                text = output.get("text", "")
            elif output.get("output_type") in ("execute_result", "display_data"):
                data = output.get("data", {})
                text = "" if "image/png" in data or "text/html" in data or "text/markdown" in data \
                    else data.get("text/plain", "")
            else:
                continue
            text = "".join(text) if isinstance(text, list) else text
            lines += [(n, line) for line in text.split("\n")]
    return lines


def png_width(data: str) -> int:
    raw = base64.b64decode(data)
    return struct.unpack(">I", raw[16:20])[0]


def figure_widths(notebook) -> list[tuple[int, int]]:
    """``(cell number, width in px)`` of every PNG figure the chapter shows."""
    widths = []
    for n, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            png = output.get("data", {}).get("image/png")
            if png and not output.get("metadata", {}).get("scrapbook"):
                widths.append((n, png_width(png if isinstance(png, str) else "".join(png))))
    return widths


def execute(path: Path):
    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.read(path)
    env_before = os.environ.get("COURSEKIT_PROGRESS")
    os.environ["COURSEKIT_PROGRESS"] = "0"
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except Exception as e:                                      # noqa: BLE001 - reported
        error = str(e)[-3000:]
    finally:
        if env_before is None:
            os.environ.pop("COURSEKIT_PROGRESS", None)
        else:
            os.environ["COURSEKIT_PROGRESS"] = env_before
    return notebook, time.perf_counter() - start, error


def check(path: Path, run: bool = True) -> list[str]:
    problems = [f"typed number, {t}" for t in typed_numbers(path)]
    if not run:
        return problems
    notebook, seconds, error = execute(path)
    out = ROOT / "_build" / "check" / f"{path.stem}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out)
    print(f"{path}: executed in {seconds:.1f} s (budget {BUDGET_S} s); notebook in {out.relative_to(ROOT)}")
    if error:                                   # the cells after it did not run: nothing else to say
        return problems + [f"a cell failed:\n{error}"]
    if seconds > BUDGET_S:
        problems.append(f"executed in {seconds:.1f} s, over the {BUDGET_S} s budget")
    problems += glue_problems(path.read_text(), notebook)
    problems += [f"cell {n}: printout line of {len(line)} characters (at most {MAX_LINE}): {line[:60]}…"
                 for n, line in printout_lines(notebook) if len(line) > MAX_LINE]
    problems += [f"cell {n}: figure {w} px wide (at most {MAX_FIGURE_PX}: figsize width ≤ "
                 f"{MAX_FIGURE_PX / DPI:.2f} in at {DPI} dpi; the column is {COLUMN_WIDTH} in)"
                 for n, w in figure_widths(notebook) if w > MAX_FIGURE_PX]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="+", type=Path)
    parser.add_argument("--no-run", action="store_true", help="only the typed numbers")
    args = parser.parse_args()
    bad = 0
    for path in args.chapters:
        problems = check(path.resolve(), run=not args.no_run)
        print(f"{path}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  - {problem}")
        bad += bool(problems)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
