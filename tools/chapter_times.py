"""Print how long each chapter took to execute, from the book's execution cache.

Run by `make book` after the build, so that a slow chapter is visible (budget: 90 s each).
"""
import sys
from pathlib import Path

from jupyter_cache import get_cache

import execute_chapters   # tools/execute_chapters.py: where the build's execution cache is

BUDGET_S = 90


def main(cache_path: str = str(execute_chapters.cache_path())) -> None:
    if not Path(cache_path).is_dir():
        sys.exit(f"no execution cache at {cache_path}: build the book first (make book)")
    records = get_cache(cache_path).list_cache_records()
    rows = sorted((Path(r.uri).relative_to(Path.cwd()) if Path(r.uri).is_absolute() else Path(r.uri),
                   r.data.get("execution_seconds")) for r in records)
    print(f"{'chapter':40s} {'executed in':>12s}")
    for path, seconds in rows:
        shown = "?" if seconds is None else f"{seconds:9.1f} s"
        flag = "  over the 90 s budget" if seconds is not None and seconds > BUDGET_S else ""
        print(f"{str(path):40s} {shown:>12s}{flag}")


if __name__ == "__main__":
    main(*sys.argv[1:])
