"""The book: it builds from clean with warnings as errors, every chapter executes without an
error, and the site holds no solution or hidden test."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, tool_env

pytestmark = pytest.mark.slow


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def is_notebook(path: Path) -> bool:
    """A MyST notebook: front matter with a kernelspec (plain pages have none)."""
    text = path.read_text()
    return text.startswith("---") and "kernelspec:" in text.split("---", 2)[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the book from clean in a copy of the repository (the whole tree, as a maintainer has it)."""
    src = tmp_path_factory.mktemp("book")
    ignore = shutil.ignore_patterns(".venv", "_build", ".git", "__pycache__", ".pytest_cache",
                                    "submitted", "autograded", "feedback", "gradebook.db")
    shutil.copytree(ROOT, src, ignore=ignore, dirs_exist_ok=True)
    result = subprocess.run(["jupyter-book", "build", ".", "--warningiserror"], cwd=src,
                            env=tool_env(COURSEKIT_PROGRESS="0"), capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"the book did not build:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}")
    return src / "_build" / "html"


def test_toc_lists_the_planned_chapters_in_order():
    assert toc_files() == ["book/intro", "book/scaling", "book/batchnorm", "book/normalization_family",
                           "book/initialization", "book/regularization", "book/early_stopping",
                           "book/why_batchnorm"]


def test_every_page_is_built(site):
    for name in toc_files():
        assert (site / f"{name}.html").is_file(), f"{name} was not built"
    assert (site / "index.html").is_file()


@pytest.mark.parametrize("name", [f for f in toc_files() if is_notebook(ROOT / f"{f}.md")])
def test_chapter_executed_without_errors(site, name):
    html = (site / f"{name}.html").read_text()
    assert html.count('class="cell_output') >= 3, f"{name} shows no executed outputs"
    for bad in ("Traceback (most recent call last)", 'class="output traceback', "Error:"):
        assert bad not in html, f"{name} shows an error output ({bad!r})"


ASSIGNMENT_OF = {"book/scaling": "scaling", "book/batchnorm": "batchnorm",
                 "book/normalization_family": "normalization", "book/initialization": "initialization",
                 "book/regularization": "dropout", "book/early_stopping": "early_stopping",
                 "book/why_batchnorm": "smoothness"}


@pytest.mark.parametrize("name", [f for f in toc_files() if is_notebook(ROOT / f"{f}.md")])
def test_chapter_has_figures_summary_and_exercises_linking_its_assignment(site, name):
    html = (site / f"{name}.html").read_text()
    images = set(re.findall(r'<img[^>]+src="([^"]+\.png)"', html))
    assert len(images) >= 5, f"{name}: only {len(images)} figures"
    for src in images:
        assert (site / "book" / src).resolve().stat().st_size > 1000, f"{name}: empty figure {src}"
    text = re.sub(r"<[^>]+>", " ", html)
    for heading in ("Summary", "Exercises"):
        assert heading in text, f"{name} has no {heading} section"
    assignment = ASSIGNMENT_OF[name]
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
