"""The book's own Sphinx extension: notebook downloads and launch buttons for its chapters.

Listed in ``_config.yml`` under ``sphinx: local_extensions``. It does two things:

- every chapter page offers its executed notebook for download (``.ipynb``, next to the
  ``.md`` source and the PDF in the download menu), even when no launch button is
  configured (the theme only does so when one is), and with its outputs after a rebuild
  that took the chapter from the execution cache (myst-nb then writes the notebook before
  merging the cached outputs);
- launch buttons need the course's public repository: ``repository: url:`` in
  ``_config.yml`` (``https://github.com/<org>/<repo>``). While it is empty, the book is built
  without launch buttons, instead of failing (sphinx-book-theme cannot build them without a
  repository) or pointing readers to a repository that is not the course's;
- each script is included in a page once: with Sphinx 7.4, sphinx-thebe and
  sphinx-togglebutton register theirs twice, and the second ``const THEBE_JS_URL`` is a
  JavaScript error on every page.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ConfigError

# The launch providers of sphinx-book-theme that need a repository to launch from.
_LAUNCH_KEYS = ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url")


def _check_repository(app: Sphinx, config: Config) -> None:
    """Without a repository URL, switch off the launch buttons, which need one."""
    options = config.html_theme_options
    url = (options.get("repository_url") or "").strip()
    if not url:
        options["launch_buttons"] = {k: v for k, v in options.get("launch_buttons", {}).items()
                                     if k not in _LAUNCH_KEYS}
    elif not url.startswith("https://github.com/") or len(url.rstrip("/").split("/")) != 5:
        raise ConfigError(f"repository: url: in _config.yml must look like "
                          f"https://github.com/<org>/<repo> (launch buttons need GitHub), got {url!r}")


def _executed_notebook(app: Sphinx, pagename: str) -> nbformat.NotebookNode | None:
    """The chapter as myst-nb executed it, with its outputs, or None for a page it did not."""
    path = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not path.is_file():
        return None
    notebook = nbformat.read(path, as_version=4)
    if app.config.nb_execution_mode == "cache" and not any(cell.get("outputs") for cell in notebook.cells):
        try:                                                  # taken from the cache: merge its outputs
            _, notebook = get_cache(app.config.nb_execution_cache_path or ".jupyter_cache") \
                .merge_match_into_notebook(notebook)
        except KeyError:                                      # not in the cache: a notebook without outputs
            pass
    return notebook


def _is_notebook(app: Sphinx, pagename: str) -> bool:
    return "kernelspec" in app.env.metadata.get(pagename, {})


def _offer_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Add a chapter's executed notebook (``_sources/<page>.ipynb``) to its download menu."""
    if _is_notebook(app, pagename):
        context["ipynb_source"] = f"{pagename}.ipynb"


def _write_notebooks(app: Sphinx, exception) -> None:
    """Write the executed notebooks into ``_sources/``, once every page is written (the
    theme's launch buttons copy myst-nb's file there while writing a page, outputs or not)."""
    if exception is not None or app.builder.format != "html":
        return
    for pagename in sorted(app.env.found_docs):
        notebook = _executed_notebook(app, pagename) if _is_notebook(app, pagename) else None
        if notebook is not None:
            target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, target)


def _scripts_once(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Drop the second copy of a script (same file, or same inline body) from a page."""
    unique, seen = [], set()
    for script in context.get("script_files", []):
        # the copies differ only in filename None vs "" (registered before vs after the builder)
        key = (str(getattr(script, "filename", script) or ""),
               tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _check_repository)
    app.connect("html-page-context", _scripts_once)
    app.connect("html-page-context", _offer_notebook, priority=500)   # before the theme's buttons (501)
    app.connect("build-finished", _write_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
