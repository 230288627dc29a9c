"""Execute the book's chapters in parallel, into the execution cache that the build reads.

    .venv/bin/python tools/execute_chapters.py

`make book` runs this before `jupyter-book build`. The build executes the chapters one after
the other, and a chapter's run uses about one core; here jupyter-cache's ``local-parallel``
executor runs one chapter per core, and the build then finds every chapter in the cache
(``execute_notebooks: cache`` in _config.yml), exactly as on a rebuild. The notebooks are read
with myst-nb's own reader, so the cache keys are the ones the build looks up. A chapter
already in the cache (its code unchanged) is not run again. A chapter that fails here is left
out of the cache: the build then runs it itself and stops with its traceback.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml
from jupyter_cache import get_cache
from jupyter_cache.executors import load_executor
from myst_nb.core.read import is_myst_markdown_notebook
from sphinx_external_toc.parsing import parse_toc_yaml

ROOT = Path(__file__).resolve().parents[1]
READER = {"name": "myst_nb_md", "type": "plugin"}   # myst-nb's reader, registered for jupyter-cache


def toc_files(root: Path = ROOT) -> list[Path]:
    """Every MyST Markdown page of the book's table of contents (``root/_toc.yml``, read by
    sphinx-external-toc as Jupyter Book reads it: parts, chapters, sections), in its order."""
    pages = (root / f"{name}.md" for name in parse_toc_yaml(str(root / "_toc.yml")).keys())
    return [page for page in pages if page.is_file()]


def chapters(root: Path = ROOT) -> list[Path]:
    """The pages that are notebooks (a MyST notebook's front matter): the ones the build executes."""
    return [page for page in toc_files(root) if is_myst_markdown_notebook(page.read_text())]


# Jupyter Book's defaults (its default_config.yml) for what _config.yml's `execute:` leaves out
JUPYTER_BOOK_TIMEOUT = 30
JUPYTER_BOOK_CACHE = "_build/.jupyter_cache"


def _execute_settings(root: Path) -> dict:
    """The ``execute:`` section of ``root/_config.yml`` (empty if there is none)."""
    config = yaml.safe_load((root / "_config.yml").read_text()) or {}
    return config.get("execute") or {}


def execution_timeout(root: Path = ROOT) -> int:
    """The per-cell timeout of ``root/_config.yml`` (``execute: timeout:``), in seconds."""
    return int(_execute_settings(root).get("timeout", JUPYTER_BOOK_TIMEOUT))


def cache_path(root: Path = ROOT) -> Path:
    """The execution cache the build reads (``execute: cache:`` of ``root/_config.yml``)."""
    return root / (_execute_settings(root).get("cache") or JUPYTER_BOOK_CACHE)


def main(root: Path = ROOT) -> int:
    """Execute the chapters of the book at ``root`` that are not in its execution cache
    (:func:`cache_path`) into it, side by side. Always returns 0: a failed chapter is
    reported here and left to the build."""
    cache = get_cache(str(cache_path(root)))
    pages = chapters(root)
    for page in pages:
        cache.add_nb_to_project(str(page), read_data=READER)
    stale = [str(page) for page in pages if cache.get_cached_project_nb(str(page)) is None]
    print(f"executing {len(stale)} of {len(pages)} chapters in parallel "
          f"({len(pages) - len(stale)} already in the cache)", flush=True)
    if not stale:
        return 0
    start = time.perf_counter()
    result = load_executor("local-parallel", cache).run_and_cache(
        filter_uris=stale, timeout=execution_timeout(root))
    for uri in result.succeeded:
        print(f"  executed {Path(uri).relative_to(root)}", flush=True)
    for uri in result.excepted + result.errored:
        print(f"  FAILED {Path(uri).relative_to(root)}: the build runs it again and shows why",
              flush=True)
    print(f"in {time.perf_counter() - start:.0f} s", flush=True)
    return 0      # the build reports a failed chapter, with its traceback


if __name__ == "__main__":
    sys.exit(main())
