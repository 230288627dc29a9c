"""The book's files: it builds from clean with warnings as errors (the ``site`` fixture of
conftest.py), every chapter executes without an error and offers its notebook, citations and
links resolve, and the site holds no solution or hidden test. ``test_browser.py`` opens the
same build in Chromium."""
from __future__ import annotations

import html.parser
import json
import re
import subprocess
from urllib.parse import unquote, urlsplit

import pytest

from coursekit import course
from conftest import CHAPTERS, EXAMPLE_REPOSITORY, ROOT, VENV_BIN, toc_files, tool_env

pytestmark = pytest.mark.slow


def test_toc_lists_the_planned_chapters_in_order():
    assert toc_files() == ["book/intro", "book/scaling", "book/batchnorm", "book/normalization_family",
                           "book/initialization", "book/transfer", "book/regularization",
                           "book/early_stopping", "book/tuning", "book/why_batchnorm", "book/perform",
                           "book/keras", "book/assignments", "book/bibliography"]


def test_every_page_is_built(site):
    for name in toc_files():
        assert (site / f"{name}.html").is_file(), f"{name} was not built"
    assert (site / "index.html").is_file()


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_executed_without_errors(site, name):
    html = (site / f"{name}.html").read_text()
    assert html.count('class="cell_output') >= 3, f"{name} shows no executed outputs"
    for bad in ("Traceback (most recent call last)", 'class="output traceback', "Error:"):
        assert bad not in html, f"{name} shows an error output ({bad!r})"


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_has_figures_summary_and_exercises_linking_its_assignment(site, name):
    html = (site / f"{name}.html").read_text()
    images = set(re.findall(r'<img[^>]+src="([^"]+\.png)"', html))
    assert len(images) >= 5, f"{name}: only {len(images)} figures"
    for src in images:
        assert (site / "book" / src).resolve().stat().st_size > 1000, f"{name}: empty figure {src}"
    text = re.sub(r"<[^>]+>", " ", html)
    for heading in ("Summary", "Exercises"):
        assert heading in text, f"{name} has no {heading} section"
    if course.chapter(name).assignment is None:    # a chapter without an assignment (transfer)
        assert "exercises/" not in text, f"{name} links an assignment the registry does not give it"
        return
    assignment = course.chapter(name).assignment.name
    assert f"exercises/{assignment}/{assignment}.ipynb" in text
    assert (ROOT / "exercises" / assignment / f"{assignment}.ipynb").is_file()


def test_site_holds_no_solution_or_hidden_test(site):
    solutions = "".join(p.read_text() for p in (ROOT / "solutions").rglob("*.ipynb"))
    # markers, and the seeds of the hidden tests, which only the solutions contain
    secrets = ["BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "BEGIN MARK SCHEME",
               "seed=2718", "seed=31415", "seed=1618", "seed=1729", "seed=4242", "seed=777",
               "seed=8128", "seed=496", "seed=6174", "seed=1597", "seed=2357", "seed=1123"]
    assert all(s in solutions for s in secrets)
    for path in site.rglob("*"):
        if path.is_file() and path.suffix in {".html", ".txt", ".md", ".ipynb", ".js", ".json"}:
            text = path.read_text(errors="replace")
            for secret in secrets:
                assert secret not in text, f"{path.relative_to(site)} contains {secret!r}"



def bib_keys() -> list[str]:
    return re.findall(r"^@\w+\{([^,\s]+),", (ROOT / "references.bib").read_text(), flags=re.M)


def cited_keys(text: str) -> set[str]:
    """The keys of the {cite}, {cite:p} and {cite:t} roles in MyST text."""
    return {key.strip() for keys in re.findall(r"\{cite(?::[pt])?\}`([^`]+)`", text) for key in keys.split(",")}


def test_every_work_in_the_bibliography_is_cited_where_it_is_discussed():
    keys = bib_keys()
    assert len(keys) == len(set(keys)), f"duplicate keys in references.bib: {sorted(k for k in keys if keys.count(k) > 1)}"
    cited_by = {name: cited_keys((ROOT / f"{name}.md").read_text()) for name in CHAPTERS}
    for name, cited in cited_by.items():
        assert len(cited) >= 3, f"{name} cites only {sorted(cited)}"
        assert cited <= set(keys), f"{name} cites works not in references.bib: {sorted(cited - set(keys))}"
    uncited = set(keys) - set().union(*cited_by.values())
    assert not uncited, f"references.bib has works that no chapter cites: {sorted(uncited)}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_citations_link_to_the_bibliography(site, name):
    html = (site / f"{name}.html").read_text()
    links = set(re.findall(r'href="bibliography\.html#(id\d+)"', html))
    assert len(links) >= 3, f"{name}: {len(links)} citations link to the bibliography"
    bibliography = (site / "book" / "bibliography.html").read_text()
    for anchor in links:
        assert f'id="{anchor}"' in bibliography, f"{name} cites #{anchor}, which the bibliography page lacks"


def test_bibliography_page_lists_every_work(site):
    text = re.sub(r"<[^>]+>", "", (site / "book" / "bibliography.html").read_text())
    entries = re.findall(r"\[([A-Za-z+]+\d\d[a-z]?)\]", text)     # alpha labels: [IS15], [SDFE18a]
    assert len(set(entries)) == len(bib_keys()), f"{len(set(entries))} entries shown, {len(bib_keys())} in references.bib"
    assert "Ioffe" in text and "Batch normalization" in text


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_offers_its_notebook_for_download_and_launch(site, name):
    html = (site / f"{name}.html").read_text()
    ipynb = f"_sources/{name}.ipynb"
    assert f'href="../{ipynb}"' in html, f"{name}: no .ipynb in the download menu"
    notebook = json.loads((site / ipynb).read_text())
    outputs = [o for cell in notebook["cells"] if cell["cell_type"] == "code" for o in cell.get("outputs", [])]
    assert len(outputs) >= 5, f"the downloadable {name}.ipynb has no outputs"
    assert not any(o.get("output_type") == "error" for o in outputs)
    binder = f"https://mybinder.org/v2/gh/{EXAMPLE_REPOSITORY.split('github.com/')[1]}/main?urlpath=lab/tree/{name}.md"
    assert binder in html, f"{name}: no Binder launch button for {binder}"
    assert (ROOT / f"{name}.md").is_file()
    for path in ("binder/requirements.txt", "binder/postBuild"):
        assert (ROOT / path).is_file(), f"{path}, the environment of the launch buttons, is missing"


def test_assignments_page_offers_every_student_notebook(site):
    html = (site / "book" / "assignments.html").read_text()
    assignments = sorted(p.name for p in (ROOT / "exercises").iterdir() if p.is_dir())
    assert len(assignments) >= 7
    for name in assignments:
        links = re.findall(rf'href="(\.\./_downloads/[0-9a-f]+/{name}\.ipynb)"', html)
        assert links, f"the assignments page does not offer exercises/{name}/{name}.ipynb"
        served = (site / "book" / links[0]).resolve()
        assert served.read_bytes() == (ROOT / "exercises" / name / f"{name}.ipynb").read_bytes(), \
            f"the {name} notebook offered for download is not exercises/{name}/{name}.ipynb"
    text = re.sub(r"<[^>]+>", " ", html)
    for words in ("Submitting", "name unchanged", "Restart the kernel"):
        assert words in text, f"the assignments page does not say {words!r}"


class _Links(html.parser.HTMLParser):
    """The ids of a page, and the local targets of its links and images."""

    def __init__(self):
        super().__init__()
        self.ids, self.targets = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        target = attrs.get("href") if tag in ("a", "link") else attrs.get("src") if tag in ("img", "script") else None
        if target and not urlsplit(target).scheme and not target.startswith(("//", "mailto:", "javascript:")):
            self.targets.append(target)


def test_internal_links_and_anchors_resolve(site):
    pages = {}
    for path in site.rglob("*.html"):
        if "_static" not in path.parts:
            parser = _Links()
            parser.feed(path.read_text())
            pages[path.resolve()] = parser
    broken = []
    for page, parser in pages.items():
        for target in parser.targets:
            parts = urlsplit(target)
            file = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if file.is_dir():
                file = file / "index.html"
            if not file.exists():
                broken.append(f"{page.relative_to(site.resolve())}: {target} (no such file)")
            elif parts.fragment and file in pages and unquote(parts.fragment) not in pages[file].ids:
                broken.append(f"{page.relative_to(site.resolve())}: {target} (no such anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken[:30])


def test_build_reports_execution_times_and_rebuild_uses_the_cache(site):
    src = site.parent.parent
    first = (src / "_build" / "build.log").read_text()
    # tools/execute_chapters.py ran every chapter, and the build rendered each from the cache
    assert f"executing {len(CHAPTERS)} of {len(CHAPTERS)} chapters in parallel" in first, first[-3000:]
    for name in CHAPTERS:
        assert f"{name}.md: Using cached notebook" in first, f"the build executed {name} again"
    report = subprocess.run([str(VENV_BIN / "python"), "tools/chapter_times.py"],
                            cwd=src, capture_output=True, text=True, check=True).stdout
    for name in CHAPTERS:
        row = re.search(rf"^{name}\.md\s+(\d+\.\d) s", report, flags=re.M)
        assert row and float(row.group(1)) > 0, f"no execution time for {name} in:\n{report}"
    # a change to a chapter's prose re-renders it from the execution cache: nothing is executed
    chapter = src / "book" / "scaling.md"
    chapter.write_text(chapter.read_text() + "\nThis sentence was added by the cache test.\n")
    again = subprocess.run([str(VENV_BIN / "python"), "tools/execute_chapters.py"], cwd=src,
                           env=tool_env(COURSEKIT_PROGRESS="0"), capture_output=True, text=True, timeout=600)
    assert f"executing 0 of {len(CHAPTERS)} chapters" in again.stdout, again.stdout + again.stderr[-3000:]
    result = subprocess.run(["jupyter-book", "build", ".", "--warningiserror"], cwd=src,
                            env=tool_env(COURSEKIT_PROGRESS="0"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "book/scaling.md: Using cached notebook" in result.stdout, result.stdout[-3000:]
    assert "Executing notebook" not in result.stdout, "the rebuild executed a notebook instead of using the cache"
    assert "added by the cache test" in (site / "book" / "scaling.html").read_text()
    notebook = json.loads((site / "_sources" / "book" / "scaling.ipynb").read_text())
    assert re.search(r"after +30000 steps", json.dumps(notebook)), "after the rebuild, the .ipynb offered has no outputs"


def _text_outputs(notebook) -> str:
    return "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                   for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", []))


def test_a_downloaded_chapter_runs_as_a_plain_notebook_with_the_scale_knob(site, tmp_path, monkeypatch):
    """A reader's run: the chapter's .ipynb from the download menu, in a fresh kernel outside
    the book, on the CPU, with COURSEKIT_SCALE (here 0.5, a quick run: the knob works both ways)."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(site / "_sources" / "book" / "scaling.ipynb", as_version=4)
    assert re.search(r"after +30000 steps", _text_outputs(notebook))   # the book's run, at scale 1
    source = jupytext.read(ROOT / "book" / "scaling.md")           # the .md converts to the same notebook
    code = [c.source for c in notebook.cells if c.cell_type == "code"]
    assert [c.source for c in source.cells if c.cell_type == "code"] == code
    monkeypatch.setenv("COURSEKIT_SCALE", "0.5")
    monkeypatch.setenv("COURSEKIT_DEVICE", "cpu")
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5
    text = _text_outputs(notebook)
    assert re.search(r"after +15000 steps", text) and not re.search(r"after +30000 steps", text), \
        "COURSEKIT_SCALE=0.5 was not applied"


# ---------------------------------------------------------------------------------------------
# The downloadable notebooks, as readers open them in Jupyter: each output once, and Markdown
# without MyST syntax (citations as author–year text, with a References list)

def _downloaded(site, name):
    import nbformat
    return nbformat.read(site / "_sources" / f"{name}.ipynb", as_version=4)


def _markdown(notebook) -> list[str]:
    return [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]


@pytest.mark.parametrize("name", CHAPTERS)
def test_downloaded_notebook_markdown_has_no_myst_syntax(site, name):
    for source in _markdown(_downloaded(site, name)):
        for pattern in (r"\{[a-z:]+\}`", r"```\{", r":::\{", r"^\([\w-]+\)=\s*$"):
            found = re.search(pattern, source, flags=re.M)
            assert not found, f"the downloadable {name}.ipynb shows MyST syntax as text: {found[0]!r} in\n{source[:400]}"


def _author_year(entry) -> tuple[str, str]:
    """("Ioffe and Szegedy", "2015"): last names as the book cites them (independent of
    tools/sphinx_course.py): one author, two joined by "and", else the first "et al."."""
    persons = entry.persons.get("author") or entry.persons.get("editor")
    last = [" ".join(str(n) for n in p.rich_prelast_names + p.rich_last_names) for p in persons]
    names = last[0] if len(last) == 1 else " and ".join(last) if len(last) == 2 else f"{last[0]} et al."
    return names, entry.fields["year"]


@pytest.mark.parametrize("name", CHAPTERS)
def test_downloaded_notebook_cites_by_author_and_year_and_lists_its_references(site, name):
    import pybtex.database

    bib = pybtex.database.parse_file(str(ROOT / "references.bib"))
    cited = cited_keys((ROOT / f"{name}.md").read_text())
    markdown = _markdown(_downloaded(site, name))
    text = " ".join(" ".join(markdown[:-1]).split())
    references = markdown[-1]
    assert references.startswith("## References\n"), f"{name}.ipynb does not end with its References"
    items = [line for line in references.splitlines() if line.startswith("- ")]
    assert len(items) == len(cited), f"{name}.ipynb lists {len(items)} references for {len(cited)} works cited"
    page = " ".join(re.sub(r"<[^>]+>", "", (site / f"{name}.html").read_text()).split())
    for key in sorted(cited):
        names, year = _author_year(bib.entries[key])
        assert f"{names} ({year})" in text or f"{names}, {year}" in text, \
            f"{name}.ipynb does not cite {key} as {names} ({year}) or ({names}, {year})"
        assert names in page, f"the page {name} does not cite {key} as {names}: update this test"
        first = names.split(" and ")[0].removesuffix(" et al.")
        assert any(first in item and year in item for item in items), f"{name}.ipynb lists no reference for {key}"


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


@pytest.mark.parametrize("name", CHAPTERS)
def test_downloaded_notebook_prints_each_line_once(site, name):
    """The download's printed text of each cell is the run's, as nbclient recorded it in the
    execution cache (myst-nb's merge_streams merges it for the page, in place, and used to
    leave the originals after the merged text); over the chapter, each line appears as many
    times as on the page."""
    import importlib.util

    import nbformat
    from jupyter_cache import get_cache

    spec = importlib.util.spec_from_file_location("sphinx_course", ROOT / "tools" / "sphinx_course.py")
    course = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(course)
    download = _downloaded(site, name)
    executed = nbformat.read(site.parent / "jupyter_execute" / f"{name}.ipynb", as_version=4)
    for cell in executed.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    _, run = get_cache(site.parent / ".jupyter_cache").merge_match_into_notebook(executed)
    code = [c for c in download.cells if c.cell_type == "code"]
    ran = [c for c in run.cells if c.cell_type == "code"]
    assert [c.source for c in code] == [c.source for c in ran]
    for cell, reference in zip(code, ran):
        assert _stdout(cell) == course.overwrite_chars(_stdout(reference)), \
            f"{name}.ipynb: the printed text of a cell differs from the run's:\n{cell.source[:300]}"
        streams = [o.get("name") for o in cell.outputs if o.get("output_type") == "stream"]
        assert all(a != b for a, b in zip(streams, streams[1:])), f"{name}.ipynb: a stream split in two"
    html = (site / f"{name}.html").read_text()
    shown = "".join(html_unescape(re.sub(r"<[^>]+>", "", block)) + "\n" for block in
                    re.findall(r'<div class="output stream[^"]*"><div class="highlight"><pre>(.*?)</pre>', html, flags=re.S))
    lines = lambda text: sorted(line.rstrip() for line in text.splitlines() if line.strip())  # noqa: E731
    assert lines("".join(_stdout(c) + "\n" for c in code)) == lines(shown), \
        f"{name}.ipynb does not print what its page shows, each line as many times"


def html_unescape(text: str) -> str:
    import html as html_module
    return html_module.unescape(text)


def _check_chapter():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_chapter", ROOT / "tools" / "check_chapter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", CHAPTERS)
def test_printouts_and_figures_of_the_run_fit_the_column(site, name):
    """Every printed line fits the page's output area (88 characters) and every figure is at
    most 845 px wide (shown at 80 % or more of its width in the 676-px column;
    test_browser.py measures it as rendered)."""
    check = _check_chapter()
    notebook = _downloaded(site, name)
    long = [line for _, line in check.printout_lines(notebook) if len(line) > check.MAX_LINE]
    assert not long, f"{name}: {len(long)} printout line(s) over {check.MAX_LINE} characters:\n" + "\n".join(long[:10])
    widths = [w for _, w in check.figure_widths(notebook)]
    assert len(widths) >= 5 and max(widths) <= check.MAX_FIGURE_PX, f"{name}: figure widths {widths}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_glued_values_and_the_claims_table_reach_the_page_and_the_download(site, name):
    """The text's glued numbers are filled in from the run (none left as a role), and the
    papers' claims against this run show as a table on the page and in the download."""
    check = _check_chapter()
    source = (ROOT / f"{name}.md").read_text()
    uses = check.glue_uses(source)
    assert len({n for kind, n, _ in uses if kind == "text"}) >= 10, f"{name} glues fewer than 10 numbers"
    html = (site / f"{name}.html").read_text()
    assert "{glue" not in html, f"{name}: a glue role is shown as text"
    header = re.compile(r"<th[^>]*>\s*(?:<p>)?Claim(?:</p>)?\s*</th>\s*<th[^>]*>\s*(?:<p>)?Paper")
    assert header.search(html), f"{name}: the page shows no table of its papers' claims"
    markdown = "\n".join(_markdown(_downloaded(site, name)))
    assert "| Claim | Paper | This run | Reproduced |" in markdown, f"{name}.ipynb has no claims table"
