"""The chapters' sources follow the book's conventions, checked without building the book:

- no result typed into the prose (``tools/prose_numbers.py``): numbers come from the run
  through myst-nb's glue, except the paper facts listed in ``tools/paper_facts.yml``;
- claims about the run are checked in hidden cells (``remove-cell``) with
  ``coursekit.book.claim``, and the chapter ends with its papers' claims against this run;
- figures use the book's style (``coursekit.plots.use_book_style``), fit the column, set no
  font size of their own, and are labelled in words.

The build checks the rest: a glued name the text uses must exist, and a claim the run no
longer supports fails the chapter's execution (``test_book.py``)."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import jupytext
import pytest
import yaml

from conftest import CHAPTERS, ROOT

sys.path.insert(0, str(ROOT / "tools"))
import prose_numbers  # noqa: E402

from coursekit.plots import COLUMN_WIDTH  # noqa: E402

CLAIMS_HEADING = "## The papers' claims and this run"


def cells(name: str):
    return jupytext.read(ROOT / f"{name}.md").cells


def code_cells(name: str):
    return [c for c in cells(name) if c.cell_type == "code"]


def hidden(cell) -> bool:
    return "remove-cell" in cell.metadata.get("tags", [])


def calls(source: str, function: str) -> list[ast.Call]:
    """The calls of ``function`` (a bare name or an attribute) in a cell's code."""
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and
            (getattr(node.func, "id", None) == function or getattr(node.func, "attr", None) == function)]


# ---------------------------------------------------------------------------------------------
# numbers come from the run


@pytest.mark.parametrize("name", CHAPTERS + ["book/intro", "book/perform", "book/keras"])
def test_prose_types_no_number_that_the_run_computes(name):
    typed = prose_numbers.typed_numbers(ROOT / f"{name}.md")
    assert not typed, (f"{name} types {len(typed)} number(s) of three or more significant digits into its "
                       "prose: glue them from the run ({glue:text}`name:.3f`), or list a cited paper's "
                       "number in tools/paper_facts.yml:\n" + "\n".join(map(str, typed)))


def test_each_listed_paper_fact_has_a_source_and_is_in_its_chapter():
    listed = yaml.safe_load((ROOT / "tools" / "paper_facts.yml").read_text())
    for chapter, entries in listed.items():
        assert (ROOT / "book" / f"{chapter}.md").is_file(), f"tools/paper_facts.yml: no chapter {chapter!r}"
        prose = " ".join(line for _, line in prose_numbers.split((ROOT / "book" / f"{chapter}.md").read_text())[0])
        for entry in entries or []:
            assert set(entry) == {"number", "source"} and str(entry["source"]).strip(), \
                f"tools/paper_facts.yml, {chapter}: each entry is a number and its source, got {entry}"
            assert re.search(rf"(?<![\w.]){re.escape(str(entry['number']))}(?![\w])", prose), \
                f"tools/paper_facts.yml, {chapter}: {entry['number']} is no longer in the prose: remove it"


def test_prose_numbers_finds_typed_results_and_leaves_the_rest(tmp_path):
    assert [prose_numbers.significant_digits(n) for n in ("0.606", "91.5", "0.05", "1000", "1024", "12,000", "0.50")] \
        == [3, 3, 1, 1, 4, 2, 2]
    chapter = tmp_path / "scaling.md"
    chapter.write_text("---\nkernelspec:\n  name: python3\n---\n# T\n\n"
                       "It lost 11 points, from 0.598 to {glue:text}`acc:.3f`, as `lr=0.125` and\n"
                       "{cite:t}`ioffe2015batch` (2015) found; batch size 256 and $\\kappa \\approx 136.2$.\n"
                       "See [the figure](images/fig-0.375.png).\n\n"
                       "Both run 1024 steps.\n\n"
                       "```{code-cell} ipython3\nfit(batch_size=256)\nrun(steps=1024,\n    lr=1)\n```\n\n"
                       ":::{note}\nA note with 1.38 in it.\n:::\n% a comment with 4.567\n")
    found = [t.number for t in prose_numbers.typed_numbers(chapter)]
    assert found == ["0.598", "136.2", "1.38"]


# ---------------------------------------------------------------------------------------------
# claims are checked on every build; the papers' claims against this run


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_checks_its_claims_in_hidden_cells(name):
    checked = [c for c in code_cells(name) if hidden(c) and calls(c.source, "claim")]
    n_claims = sum(len(calls(c.source, "claim")) for c in checked)
    assert len(checked) >= 4 and n_claims >= 10, \
        f"{name}: {n_claims} claims in {len(checked)} hidden cells; every sentence about a run is checked"
    shown = [c for c in code_cells(name) if not hidden(c) and calls(c.source, "claim")]
    assert not shown, f"{name}: a cell that checks claims is shown to readers (tag it remove-cell):\n{shown[0].source[:200]}"
    for cell in checked:
        for call in calls(cell.source, "claim"):
            assert len(call.args) >= 2 and isinstance(call.args[1], (ast.Constant, ast.JoinedStr, ast.BinOp, ast.IfExp)), \
                f"{name}: each claim names the sentence it checks:\n{ast.unparse(call)[:200]}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_ends_with_its_papers_claims_against_this_run(name):
    text = (ROOT / f"{name}.md").read_text()
    assert CLAIMS_HEADING in text, f"{name} has no section {CLAIMS_HEADING!r}"
    section = text.split(CLAIMS_HEADING, 1)[1]
    assert re.match(r"(?s).*?\n## Summary", section) and "\n## " not in section.split("\n## Summary")[0], \
        f"{name}: {CLAIMS_HEADING!r} comes right before ## Summary"
    directive = re.search(r"^(`{3,}|:{3,})\{glue:md\}\s+(\w+)", section, flags=re.M)
    assert directive, f"{name}: the section shows its glued table with the {{glue:md}} directive"
    tables = [c for c in code_cells(name) if calls(c.source, "claims_table")]
    assert tables, f"{name}: no claims_table(...) in the code"
    rows = [call for c in tables for call in calls(c.source, "Claim")]
    assert len(rows) >= 3, f"{name}: its papers' claims table has {len(rows)} rows (at least 3)"


# ---------------------------------------------------------------------------------------------
# figures: the book's style, the column's width, words on the axes


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_uses_the_book_figure_style(name):
    first = next(c for c in code_cells(name) if "import" in c.source)
    assert calls(first.source, "use_book_style"), f"{name}: its first cell does not call use_book_style()"
    for cell in code_cells(name):
        for call in calls(cell.source, "subplots") + calls(cell.source, "figure"):
            for keyword in call.keywords:
                if keyword.arg == "figsize" and isinstance(keyword.value, ast.Tuple):
                    width = keyword.value.elts[0]
                    if isinstance(width, ast.Constant):
                        assert width.value <= COLUMN_WIDTH, \
                            f"{name}: a figure {width.value} in wide, wider than the column ({COLUMN_WIDTH} in):\n" \
                            f"{ast.unparse(call)}"
        sized = re.findall(r"\bfontsize\s*=\s*[^,)]+", cell.source)
        assert not sized, f"{name}: sets its own font size ({sized}); the book's style sets legible ones"


LABELS = ("set_xlabel", "set_ylabel", "set_title", "suptitle", "supxlabel", "supylabel")


@pytest.mark.parametrize("name", CHAPTERS)
def test_axes_and_legends_are_labelled_in_words(name):
    """Labels are words ("validation accuracy"), not history keys ("val_acc")."""
    key = re.compile(r"\b[a-z]+_[a-z_]+\b")
    words = lambda text: re.sub(r"\$[^$]*\$", "", text)  # noqa: E731 - math may have subscripts
    for cell in code_cells(name):
        for function in LABELS:
            for call in calls(cell.source, function):
                for arg in call.args[:1]:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        assert not key.search(words(arg.value)), f"{name}: {function}({arg.value!r}) shows a code name"
        for call in calls(cell.source, "plot") + calls(cell.source, "fill_between") + calls(cell.source, "scatter"):
            for keyword in call.keywords:
                if keyword.arg == "label" and isinstance(keyword.value, ast.Constant) and \
                        isinstance(keyword.value.value, str):
                    assert not key.search(words(keyword.value.value)), \
                        f"{name}: a legend entry {keyword.value.value!r} shows a code name"
