"""tools/sphinx_course.py, the book's Sphinx extension, on a one-page book: the notebook is
offered for download with or without a repository, launch buttons appear only with one, a
repository that is not on GitHub is refused with its value, and no script is included twice."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, tool_env

pytestmark = pytest.mark.slow


def build(tmp_path: Path, repository_url: str) -> subprocess.CompletedProcess:
    (tmp_path / "_config.yml").write_text(f"""\
title: one page
repository:
  url: "{repository_url}"
  branch: main
launch_buttons:
  binderhub_url: https://mybinder.org
html:
  use_download_button: true
sphinx:
  local_extensions:
    sphinx_course: {ROOT / "tools"}
""")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    header = (ROOT / "book" / "scaling.md").read_text().split("---")[1]      # jupytext + kernelspec
    (tmp_path / "page.md").write_text(f"---{header}---\n# A page\n\n```{{code-cell}} ipython3\n6 * 7\n```\n")
    return subprocess.run(["jupyter-book", "build", ".", "--warningiserror"], cwd=tmp_path,
                          env=tool_env(), capture_output=True, text=True, timeout=300)


def test_without_a_repository_the_notebook_is_offered_and_no_launch_button(tmp_path):
    result = build(tmp_path, "")
    assert result.returncode == 0, result.stdout[-3000:]
    html = (tmp_path / "_build" / "html" / "page.html").read_text()
    assert 'href="_sources/page.ipynb"' in html
    notebook = json.loads((tmp_path / "_build" / "html" / "_sources" / "page.ipynb").read_text())
    outputs = [o for cell in notebook["cells"] for o in cell.get("outputs", [])]
    assert "".join(outputs[0]["data"]["text/plain"]) == "42", "the notebook offered is not the executed one"
    assert "mybinder.org" not in html
    scripts = re.findall(r"<script[^>]*>[^<]*</script>", html)
    assert len(scripts) == len(set(scripts)), "a script is included twice"
    assert html.count("const THEBE_JS_URL") == 1


def test_with_a_github_repository_the_chapter_gets_a_binder_button(tmp_path):
    result = build(tmp_path, "https://github.com/some-org/some-course")
    assert result.returncode == 0, result.stdout[-3000:]
    html = (tmp_path / "_build" / "html" / "page.html").read_text()
    assert "https://mybinder.org/v2/gh/some-org/some-course/main?urlpath=tree/page.md" in html
    assert 'href="_sources/page.ipynb"' in html


def test_a_repository_not_on_github_is_refused_with_its_value(tmp_path):
    result = build(tmp_path, "https://example.org/course")
    assert result.returncode != 0
    assert "must look like https://github.com/<org>/<repo>" in result.stdout + result.stderr
    assert "'https://example.org/course'" in result.stdout + result.stderr
