"""tools/sphinx_course.py, the book's Sphinx extension, on a one-page book: the notebook is
offered for download with or without a repository, launch buttons appear only with one, a
repository that is not on GitHub is refused with its value, and no script is included twice;
``tools/execute_chapters.py`` (``make book``'s parallel execution) on a two-page book.
Then, without a build, the conversions that make the downloaded notebook one a reader can
trust in Jupyter: each output once, and Markdown without MyST roles or directives
(``test_book.py`` checks them on the built chapters)."""
from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from conftest import ROOT, tool_env


def build(tmp_path: Path, repository_url: str, body: str = "```{code-cell} ipython3\n6 * 7\n```\n") \
        -> subprocess.CompletedProcess:
    (tmp_path / "_config.yml").write_text(f"""\
title: one page
execute:
  execute_notebooks: cache       # as the book (_config.yml)
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
  config:
    nb_execution_raise_on_error: true     # as the book: a failing cell stops the build
    nb_execution_show_tb: true            # with the error (a claim: the sentence and values)
""")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    header = (ROOT / "book" / "scaling.md").read_text().split("---")[1]      # jupytext + kernelspec
    (tmp_path / "page.md").write_text(f"---{header}---\n# A page\n\n{body}")
    return subprocess.run(["jupyter-book", "build", ".", "--warningiserror"], cwd=tmp_path,
                          env=tool_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
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


CLAIMED = """```{code-cell} ipython3
from coursekit.book import claim, glue
accuracy = 0.875
```

```{code-cell} ipython3
:tags: [remove-cell]
glue("accuracy", accuracy)
claim(accuracy > %s, "the network scores above %s", accuracy=accuracy)
```

The network scores {glue:text}`accuracy:.2f`.
"""


@pytest.mark.slow
def test_a_claim_the_run_supports_builds_and_the_text_shows_the_run_s_number(tmp_path):
    result = build(tmp_path, "", CLAIMED % (0.5, "one half"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = (tmp_path / "_build" / "html" / "page.html").read_text()
    assert "The network scores 0.88." in " ".join(re.sub(r"<[^>]+>", "", html).split())
    assert "claim(" not in html                                   # the check is not shown
    notebook = json.loads((tmp_path / "_build" / "html" / "_sources" / "page.ipynb").read_text())
    assert "The network scores 0.88." in "".join(notebook["cells"][-1]["source"])


@pytest.mark.slow
def test_a_claim_the_run_no_longer_supports_fails_the_build_naming_the_sentence(tmp_path):
    result = build(tmp_path, "", CLAIMED % (0.9, "0.9"))
    assert result.returncode != 0, "the book built although its run contradicts its text"
    assert 'the text says "the network scores above 0.9", but the run gives accuracy=0.875' in \
        result.stdout + result.stderr


@pytest.mark.slow
def test_parallel_execution_caches_what_ran_and_leaves_a_failing_chapter_to_the_build(tmp_path, capsys):
    """tools/execute_chapters.py (`make book`'s first step) on a book of two chapters, one
    failing: the other is cached and the build renders it without running it again; the
    failing one is named, left out of the cache, and the build runs it and stops with its error."""
    assert build(tmp_path, "").returncode == 0          # the one-page book of build(), then:
    header = (ROOT / "book" / "scaling.md").read_text().split("---")[1]
    (tmp_path / "bad.md").write_text(f"---{header}---\n# Bad\n\n```{{code-cell}} ipython3\n"
                                     f"raise RuntimeError('the bad chapter broke')\n```\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: page\nchapters:\n  - file: bad\n")
    (tmp_path / "page.md").write_text((tmp_path / "page.md").read_text().replace("6 * 7", "6 * 8"))
    shutil.rmtree(tmp_path / "_build")
    spec = importlib.util.spec_from_file_location("execute_chapters", ROOT / "tools" / "execute_chapters.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.execution_timeout(tmp_path) == 30        # jupyter-book's default when _config.yml sets none
    assert tool.main(root=tmp_path) == 0
    out = capsys.readouterr().out
    assert "executing 2 of 2 chapters in parallel" in out and "executed page.md" in out, out
    assert "FAILED bad.md" in out, out
    assert tool.main(root=tmp_path) == 0                 # the cached page is not run again; bad.md is
    assert "executing 1 of 2 chapters" in capsys.readouterr().out
    def jupyter_book():
        return subprocess.run(["jupyter-book", "build", ".", "--warningiserror"], cwd=tmp_path,
                              env=tool_env(), capture_output=True, text=True, timeout=300)
    result = jupyter_book()
    assert result.returncode != 0 and "the bad chapter broke" in result.stdout + result.stderr
    # mended, the chapter is executed by the tool alone; the build runs nothing
    (tmp_path / "bad.md").write_text((tmp_path / "bad.md").read_text().replace(
        "raise RuntimeError('the bad chapter broke')", "6 * 9"))
    assert tool.main(root=tmp_path) == 0
    assert "executing 1 of 2 chapters" in capsys.readouterr().out
    result = jupyter_book()
    assert result.returncode == 0, result.stdout[-3000:]
    for page in ("page.md", "bad.md"):
        assert f"{page}: Using cached notebook" in result.stdout, result.stdout[-3000:]
    assert "Executing notebook" not in result.stdout
    assert "</span>48\n</pre>" in (tmp_path / "_build" / "html" / "page.html").read_text()   # the run of page.md


@pytest.mark.slow
def test_with_a_github_repository_the_chapter_gets_a_binder_button(tmp_path):
    result = build(tmp_path, "https://github.com/some-org/some-course")
    assert result.returncode == 0, result.stdout[-3000:]
    html = (tmp_path / "_build" / "html" / "page.html").read_text()
    assert "https://mybinder.org/v2/gh/some-org/some-course/main?urlpath=tree/page.md" in html
    assert 'href="_sources/page.ipynb"' in html


@pytest.mark.slow
def test_a_repository_not_on_github_is_refused_with_its_value(tmp_path):
    result = build(tmp_path, "https://example.org/course")
    assert result.returncode != 0
    assert "must look like https://github.com/<org>/<repo>" in result.stdout + result.stderr
    assert "'https://example.org/course'" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# The downloadable notebook, without a build

_spec = importlib.util.spec_from_file_location("sphinx_course", ROOT / "tools" / "sphinx_course.py")
sc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sc)


def stream(text: str, name: str = "stdout") -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name=name, text=text)


def figure() -> nbformat.NotebookNode:
    return nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})


def test_merge_streams_keeps_each_printed_line_once_and_in_order():
    outputs = [stream("a\n"), stream("b\n"), stream("warn\n", "stderr"), stream("c"), figure(), stream("d\n")]
    before = copy.deepcopy(outputs)
    merged = sc.merge_streams(outputs)
    assert [(o.output_type, o.get("name"), o.get("text")) for o in merged] == [
        ("stream", "stdout", "a\nb\n"), ("stream", "stderr", "warn\n"), ("stream", "stdout", "c"),
        ("display_data", None, None), ("stream", "stdout", "d\n")]
    assert outputs == before, "merge_streams changed the outputs it was given"
    assert sc.merge_streams([]) == []


def test_merge_streams_shows_carriage_returns_and_backspaces_as_jupyter_does():
    merged = sc.merge_streams([stream("epoch 1  10%\r"), stream("epoch 1  50%\r"), stream("epoch 1 100%\n"),
                               stream("ab\bc\n")])
    assert merged[0].text == "epoch 1 100%\nac\n"
    assert sc.overwrite_chars("long line\rshort\n") == "shortline\n"       # a terminal overwrites
    assert sc.overwrite_chars("a\r\nb\n") == "a\nb\n"
    assert sc.overwrite_chars("plain\n") == "plain\n"


def test_drop_coalesced_copies_undoes_myst_nbs_merge_in_place():
    """myst-nb's merge_streams merges a cell's text into the first stream output *in place*
    and leaves the originals after it: the notebook it writes shows the text twice."""
    from myst_nb.core.utils import coalesce_streams

    outputs = [stream("x = 1\ny = 2\n"), figure(), stream("z = 3\n"), stream("done\n"), stream("oops\n", "stderr")]
    written = copy.deepcopy(outputs)
    coalesce_streams(written)                       # what myst-nb does to the notebook it then writes
    assert sum(o.get("text", "").count("z = 3") for o in written) == 2     # the reader's report
    fixed = sc.drop_coalesced_copies(written)
    text = "".join(o.get("text", "") for o in fixed if o.get("name") == "stdout")
    assert text == "x = 1\ny = 2\nz = 3\ndone\n"
    assert [o.output_type for o in fixed] == ["stream", "display_data", "stream"]
    # outputs that myst-nb did not merge are left as they are
    pristine = [stream("a\n"), stream("b\n")]
    assert sc.drop_coalesced_copies(pristine) == pristine


def test_convert_roles_resolves_roles_and_leaves_code_spans_alone():
    calls = []

    def resolve(name, content):
        calls.append((name, content))
        return f"<{name}|{content}>"

    text, count = sc.convert_roles("As {cite:t}`a2015` showed, write `{cite:p}` in ``code {x}`y` ``; "
                                   "see {doc}`the intro <intro>` and {cite:p}`a2015,b2016`.", resolve)
    assert count == 3
    assert calls == [("cite:t", "a2015"), ("doc", "the intro <intro>"), ("cite:p", "a2015,b2016")]
    assert "`{cite:p}`" in text and "``code {x}`y` ``" in text
    assert sc.split_title_target("the intro <intro>") == ("the intro", "intro")
    assert sc.split_title_target("intro") == (None, "intro")


def plain(name, content):
    return f"[{name}:{content}]"


def test_markdown_for_jupyter_turns_directives_into_plain_markdown():
    source = ("(sec-label)=\n## A section\n\n% a MyST comment\n"
              "```{note}\nRead {doc}`intro` first.\n```\n\n"
              ":::{admonition} Why $\\gamma$?\n:class: tip\nBecause.\n\n"
              "````{warning}\nNested:\n```{tip}\nInner.\n```\n````\n:::\n\n"
              "```python\nprint({cite:t}`kept`)\n```\n\n"
              "```{math}\nx^2\n```\n\n$$\ny = 1\n$$ (eq-y)\n")
    text, count = sc.markdown_for_jupyter(source, plain, _counted=True)
    assert count == 1
    assert '<a id="sec-label"></a>\n\n## A section' in text
    assert "MyST comment" not in text
    assert "> **Note**\n>\n> Read [doc:intro] first." in text
    assert "> **Why $\\gamma$?**\n>\n> Because.\n>\n> > **Warning**\n> >\n> > Nested:\n> >\n> > > **Tip**" in text
    assert ":class:" not in text
    assert "```python\nprint({cite:t}`kept`)\n```" in text          # code is code
    assert "$$\nx^2\n$$" in text and "$$ (eq-y)" not in text and "$$\ny = 1\n$$" in text
    assert not re.search(r"```\{|:::\{|\(sec-label\)=", text)


def test_citations_are_author_year_text_as_the_book_formats_them():
    citations = sc.Citations.from_bibfile(ROOT / "references.bib")
    assert citations.text("t", "ioffe2015batch") == "Ioffe and Szegedy (2015)"
    assert citations.text("p", "ioffe2015batch") == "(Ioffe and Szegedy, 2015)"
    assert citations.text("", "ioffe2015batch") == "(Ioffe and Szegedy, 2015)"        # {cite}
    assert citations.text("p", "hinton2012improving,srivastava2014dropout") == \
        "(Hinton et al., 2012; Srivastava et al., 2014)"
    # several works in the order of the book's bibliography, as the page shows them
    assert citations.text("p", "kohler2019exponential; arora2019theoretical") == \
        "(Arora et al., 2019; Kohler et al., 2019)"
    assert citations.text("t", "kohler2019exponential,arora2019theoretical") == \
        "Arora et al. (2019) and Kohler et al. (2019)"
    assert citations.text("t", "muller2019when") == "Müller et al. (2019)"          # LaTeX accents
    with pytest.raises(KeyError):
        citations.text("t", "nosuchkey2099")
    refs = citations.references(["srivastava2014dropout", "ioffe2015batch", "ioffe2015batch"])
    items = [line for line in refs.splitlines() if line.startswith("- ")]
    assert refs.startswith("## References\n") and len(items) == 2
    assert items[0].startswith("- Sergey Ioffe and Christian Szegedy") and "2015" in items[0]
    assert "Dropout" in items[1] and "*Journal of Machine Learning Research*" in items[1]


class _Builder:
    def get_target_uri(self, docname):
        return f"{docname}.html"

    def get_relative_uri(self, fromdoc, todoc):
        from sphinx.util.osutil import relative_uri
        return relative_uri(self.get_target_uri(fromdoc), self.get_target_uri(todoc))


def fake_app(baseurl: str = "") -> SimpleNamespace:
    """What the resolver reads of Sphinx: config, builder and environment."""
    std = SimpleNamespace(labels={"chapter-scaling": ("book/scaling", "chapter-scaling", "Feature scaling")},
                          anonlabels={"fig-loss": ("book/scaling", "fig-loss")})
    math = SimpleNamespace(equations={"eq-bn": ("book/batchnorm", 3)})
    env = SimpleNamespace(titles={"book/intro": SimpleNamespace(astext=lambda: "Introduction")},
                          get_domain=lambda name: {"std": std, "math": math}[name],
                          toc_fignumbers={"book/scaling": {"figure": {"fig-loss": (2,)}}}, dlfiles={})
    config = SimpleNamespace(html_baseurl=baseurl, math_eqref_format=None, numfig_format={"figure": "Fig. %s"})
    return SimpleNamespace(config=config, builder=_Builder(), env=env)


def test_book_resolver_links_to_the_online_book_and_pastes_glued_values():
    citations = sc.Citations.from_bibfile(ROOT / "references.bib")
    glue = {"acc": {"text/plain": "0.91234"}, "name": {"text/plain": "'SGD'"}}
    resolve = sc._BookResolver(fake_app(), "book/batchnorm", citations, glue)
    assert resolve("doc", "intro") == "[Introduction](intro.html)"
    assert resolve("doc", "the first page </book/intro>") == "[the first page](intro.html)"
    assert resolve("ref", "chapter-scaling") == "[Feature scaling](scaling.html#chapter-scaling)"
    assert resolve("numref", "fig-loss") == "[Fig. 2](scaling.html#fig-loss)"
    assert resolve("eq", "eq-bn") == "[(3)](batchnorm.html#equation-eq-bn)"
    assert resolve("glue:text", "acc:.2f") == "0.91"
    assert resolve("glue:text", "name") == "SGD"
    assert resolve("math", r"\sqrt{m}") == r"$\sqrt{m}$"
    assert resolve("py:func", "~torch.nn.functional.batch_norm") == "`batch_norm`"
    assert resolve("term", "internal covariate shift <ICS>") == "internal covariate shift"
    assert resolve("cite:t", "ioffe2015batch") == "Ioffe and Szegedy (2015)"
    assert resolve("cite:p", "ioffe2015batch,santurkar2018how") == \
        "(Ioffe and Szegedy, 2015; Santurkar et al., 2018)"
    assert resolve.cited == ["ioffe2015batch", "ioffe2015batch", "santurkar2018how"]
    online = sc._BookResolver(fake_app("https://example.org/course/"), "book/batchnorm", citations, {})
    assert online("ref", "chapter-scaling") == \
        "[Feature scaling](https://example.org/course/book/scaling.html#chapter-scaling)"


def test_downloadable_notebook_holds_each_output_once_and_plain_markdown():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("(top)=\n# T\n\nAs {cite:t}`ioffe2015batch` found "
                                              "{cite:p}`ioffe2015batch,santurkar2018how`."),
                nbformat.v4.new_code_cell("print('a'); print('b')", outputs=[stream("a\n"), stream("b\n")]),
                nbformat.v4.new_code_cell("glue('acc', 0.9, display=False)", outputs=[nbformat.v4.new_output(
                    "display_data", data={"application/papermill.record/text/plain": "0.9"},
                    metadata={"scrapbook": {"name": "acc", "mime_prefix": "application/papermill.record/"}})]),
                nbformat.v4.new_markdown_cell("Accuracy {glue:text}`acc:.0%`.")]
    nb.cells[2].metadata["tags"] = ["remove-cell"]
    before = copy.deepcopy(nb)
    citations = sc.Citations.from_bibfile(ROOT / "references.bib")
    resolve = sc._BookResolver(fake_app(), "book/batchnorm", citations, sc.glue_data(nb))
    download, count = sc.downloadable_notebook(nb, resolve, resolve.references)
    assert nb == before, "the executed notebook was changed"
    assert count == 3
    nbformat.validate(download)
    markdown = [c.source for c in download.cells if c.cell_type == "markdown"]
    assert markdown[0] == ('<a id="top"></a>\n\n# T\n\nAs Ioffe and Szegedy (2015) found '
                           "(Ioffe and Szegedy, 2015; Santurkar et al., 2018).")
    assert markdown[1] == "Accuracy 90%."
    assert markdown[-1].startswith("## References\n") and markdown[-1].count("\n- ") == 2
    code = [c for c in download.cells if c.cell_type == "code"]
    assert [o.text for o in code[0].outputs] == ["a\nb\n"]
    assert code[1].outputs == [] and code[1].metadata["tags"] == ["remove-cell"]   # kept, as myst-nb writes it
    # nothing to list: no References cell
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("No citations.")])
    resolve = sc._BookResolver(fake_app(), "book/intro", citations, {})
    assert [c.source for c in sc.downloadable_notebook(bare, resolve, resolve.references)[0].cells] == ["No citations."]


def test_a_glued_markdown_table_becomes_its_text_in_the_download():
    """A chapter's closing claims table is glued Markdown shown by the ``{glue:md}`` directive:
    the download shows the table itself, not the directive or nothing."""
    table = "| Claim | Paper | This run | Reproduced |\n|---|---|---|---|\n| a | b | c | yes |"
    resolve = sc._BookResolver(fake_app(), "book/batchnorm", sc.Citations.from_bibfile(ROOT / "references.bib"),
                               {"claims": {"text/plain": "<IPython.core.display.Markdown object>",
                                           "text/markdown": table}})
    text, count = sc.markdown_for_jupyter("Before.\n\n```{glue:md} claims\n:format: myst\n```\n\nAfter.",
                                          resolve, _counted=True)
    assert count == 1
    assert "Before.\n\n" + table + "\n\nAfter." == text
