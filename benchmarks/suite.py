"""Where the test suite's time goes, part by part, and the least wall time that any
scheduling of it could reach on this machine's cores.

`make test` runs the suite on pytest-xdist, one worker per core, with the book built in the
background: the parts overlap, so its own timings do not say what each part costs. This
script runs the parts one after the other, as the suite runs them (one data cache and one
set of released assignments for all, `tests/conftest.py`'s settings):

- ``fast``: the unit tests (``pytest -m "not slow"``), in one process;
- each test module that holds slow tests, alone, in one process, the book's two excepted;
- ``book``: the book built from clean as the suite builds it (``_start_book_build`` of
  `tests/conftest.py`: the chapters executed side by side, then jupyter-book);
- ``book tests``: `tests/test_book.py` and `tests/test_browser.py` on that build.

For each part it prints the wall time and the CPU time: user + system time of every process
the part started, sandboxed kernels and detached builds included (this process is their
child subreaper, so each one's time comes back here when it ends); for a pytest part also
its *start*, the CPU time of the same command with ``--collect-only`` (Python, torch,
conftest, collection), which `make test` pays instead once per worker, collecting the
whole suite. Run it on a quiet machine. pytest-xdist can overlap the parts but not shrink
them: their CPU time less their starts, plus one whole collection per worker, divided by
the cores is a floor of `make test`'s wall time here (the suite's own waits, such as a
cell that runs into its time limit, come on top).

Usage::

    .venv/bin/python benchmarks/suite.py                    # every part (about the suite's CPU time)
    .venv/bin/python benchmarks/suite.py --only fast,test_nbgrader,book
    .venv/bin/python benchmarks/suite.py --cores 4          # the floor on 4 cores

The last line is ``cpu_s=<the parts' CPU, started once per worker> floor_s=<cpu_s / cores>
cores=<N> book_cpu_s=<the book's build> parts=<how many>``.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402  (tests/conftest.py: the suite's folders and its book build)
from hardware import hardware  # noqa: E402  (benchmarks/hardware.py)

PYTEST = [sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider"]
BOOK_TESTS = ["test_book", "test_browser"]   # they need the built book: run on the "book" part's build
PR_SET_CHILD_SUBREAPER = 36                  # prctl(2)


def become_subreaper() -> None:
    """Orphaned descendants (a build started in a session of its own, a sandbox's processes)
    are re-parented to this process, so that their CPU time is counted when they end."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed: CPU times would miss orphans")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reap(grace: float = 5.0) -> int:
    """Wait up to ``grace`` seconds for the descendants left over (re-parented here) to end,
    so their time counts in this part; returns how many are still running."""
    deadline = time.monotonic() + grace
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 0
        if pid == 0:
            if time.monotonic() > deadline:
                return len([p for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == os.getpid()])
            time.sleep(0.1)


def _parent(proc: Path) -> int:
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return -1
    return int(stat[stat.rfind(")") + 2:].split()[1])


def slow_modules() -> list[str]:
    """The test modules with tests marked slow, in the suite's order (tests/conftest.py)."""
    listing = subprocess.run([*PYTEST, "--collect-only", "-m", "slow"], cwd=ROOT, capture_output=True,
                             text=True, env=conftest.tool_env()).stdout
    modules = sorted({Path(m).stem for m in re.findall(r"^(tests/test_\w+\.py)::", listing, re.M)})
    long = [m for m in conftest.LONG_FILES if m in modules]
    return long + [m for m in modules if m not in long and m not in BOOK_TESTS]


def run_part(command: list[str], env: dict) -> tuple[float, float, str]:
    """Run one part; its wall time, CPU time and pytest's summary line."""
    cpu, start = children_cpu(), time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    left = reap()
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    if result.returncode != 0:
        summary = f"FAILED (exit {result.returncode}): {summary}"
    if left:
        summary += f"; {left} processes still running, counted later"
    return wall, children_cpu() - cpu, summary


def build_book(folder: Path) -> tuple[float, float, str]:
    """The book's build from clean, started exactly as the suite starts it."""
    cpu, start = children_cpu(), time.monotonic()
    (folder / "claimed").mkdir()             # the book tests then use this build
    conftest._start_book_build(folder)
    while not (folder / "returncode").exists():
        time.sleep(0.5)
    wall = time.monotonic() - start
    reap()
    code = (folder / "returncode").read_text().strip()
    if code != "0":    # the folder goes at the end: show the log's end now
        log = (folder / "src" / "build.log").read_text(errors="replace")
        return wall, children_cpu() - cpu, f"FAILED (exit {code}); the end of its log:\n{log[-3000:]}"
    return wall, children_cpu() - cpu, "built"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1,
                        help="cores of the floor (default: this machine's, %(default)s)")
    parser.add_argument("--only", default="", help="comma-separated parts: fast, book, or module names (test_nbgrader)")
    args = parser.parse_args()
    if args.cores < 1:
        parser.error(f"--cores must be a positive number of cores, got {args.cores}")
    become_subreaper()

    modules = slow_modules()
    parts = ["fast", *modules, "book", "book tests"]
    if args.only:
        wanted = [p.strip() for p in args.only.split(",") if p.strip()]
        unknown = [p for p in wanted if p not in parts]
        if unknown:
            parser.error(f"--only: no part named {', '.join(unknown)}; the parts are {', '.join(parts)}")
        parts = [p for p in parts if p in wanted or (p == "book tests" and "book" in wanted)]

    import torch
    print(f"hardware: {hardware(torch.device('cpu'))}")
    print(f"parts, one after the other: {', '.join(parts)}", flush=True)
    session = Path(tempfile.mkdtemp(prefix="coursekit-suite-"))
    # as under `make test`: the session's folders (book, releases, data cache) shared by every
    # part, and each worker's (and its kernels') torch on one core's share
    for name in conftest.SESSION_FOLDERS:
        os.environ[name] = str(session / name)
        (session / name).mkdir()
    env = conftest.tool_env(COURSEKIT_PROGRESS="0", OMP_NUM_THREADS="1")
    book = session / conftest.BOOK_DIR_ENV
    rows = []    # (part, wall, CPU, start)
    try:
        _, collect, summary = run_part([*PYTEST, "--collect-only"], env)
        print(f"{'a worker collecting':>24}: CPU {collect:7.1f} s   {summary}", flush=True)
        for part in parts:
            start = 0.0
            if part == "book":
                wall, cpu, summary = build_book(book)
            else:
                if part == "fast":
                    command = [*PYTEST, "-m", "not slow"]
                elif part == "book tests":
                    command = [*PYTEST, "-m", "slow", *(f"tests/{m}.py" for m in BOOK_TESTS)]
                else:
                    command = [*PYTEST, "-m", "slow", f"tests/{part}.py"]
                _, start, _ = run_part([*command, "--collect-only"], env)
                wall, cpu, summary = run_part(command, env)
            rows.append((part, wall, cpu, start))
            started = f"(start {start:4.1f} s)" if part != "book" else " " * 16
            print(f"{part:>24}: wall {wall:7.1f} s   CPU {cpu:7.1f} s {started}   {summary}", flush=True)
    finally:
        shutil.rmtree(session, ignore_errors=True)

    starts = sum(start for *_, start in rows)
    total = sum(cpu for _, _, cpu, _ in rows) - starts + args.cores * collect
    book_cpu = sum(cpu for part, _, cpu, _ in rows if part == "book")
    print(f"{'all':>24}: wall {sum(r[1] for r in rows):7.1f} s   CPU {sum(r[2] for r in rows):7.1f} s "
          f"(starts {starts:.1f} s; instead, {args.cores} workers collecting: {args.cores * collect:.1f} s)")
    if total:
        largest = sorted(rows, key=lambda r: -r[2])[:6]
        print("largest CPU: " + ", ".join(f"{p} {c:.0f} s ({c / total:.0%})" for p, _, c, _ in largest))
    print(f"floor of make test on {args.cores} cores (that CPU / cores): "
          f"{total / args.cores / 60:.1f} min")
    print(f"cpu_s={total:.0f} floor_s={total / args.cores:.0f} cores={args.cores} book_cpu_s={book_cpu:.0f} parts={len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
