"""Execute the book's chapters in parallel, into the execution cache that the build reads.

    .venv/bin/python tools/execute_chapters.py [cache folder]     # default: _build/.jupyter_cache

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

ROOT = Path(__file__).resolve().parents[1]
READER = {"name": "myst_nb_md", "type": "plugin"}   # myst-nb's reader, registered for jupyter-cache


def toc_files(toc: Path = ROOT / "_toc.yml") -> list[Path]:
    """Every page of the table of contents, in its order."""
    data = yaml.safe_load(toc.read_text())
    names = [data["root"]]
    for part in data.get("parts", []):
        names += [chapter["file"] for chapter in part.get("chapters", [])]
    return [ROOT / f"{name}.md" for name in names]


def chapters() -> list[Path]:
    """The pages that are notebooks (a MyST notebook's front matter): the ones the build executes."""
    return [page for page in toc_files() if is_myst_markdown_notebook(page.read_text())]


def execution_timeout(config: Path = ROOT / "_config.yml") -> int:
    return int(yaml.safe_load(config.read_text())["execute"]["timeout"])


def main(cache_path: str = str(ROOT / "_build" / ".jupyter_cache")) -> int:
    cache = get_cache(cache_path)
    pages = chapters()
    for page in pages:
        cache.add_nb_to_project(str(page), read_data=READER)
    stale = [str(page) for page in pages if cache.get_cached_project_nb(str(page)) is None]
    print(f"executing {len(stale)} of {len(pages)} chapters in parallel "
          f"({len(pages) - len(stale)} already in the cache)", flush=True)
    if not stale:
        return 0
    start = time.perf_counter()
    result = load_executor("local-parallel", cache).run_and_cache(
        filter_uris=stale, timeout=execution_timeout())
    for uri in result.succeeded:
        print(f"  executed {Path(uri).relative_to(ROOT)}", flush=True)
    for uri in result.excepted + result.errored:
        print(f"  FAILED {Path(uri).relative_to(ROOT)}: the build runs it again and shows why",
              flush=True)
    print(f"in {time.perf_counter() - start:.0f} s", flush=True)
    return 0      # the build reports a failed chapter, with its traceback


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
