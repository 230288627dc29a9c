"""The command line: ``python -m coursekit.classroom collect|grade|feedback|export``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .collect import collect
from .export import export
from .feedback import feedback
from .grade import Interrupted, grade
from .sandbox import Limits


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 when the step ran (rejected, failed or flagged students are results,
    listed in status.csv), 2 when it could not run (the message says why), 128 + the
    signal's number when grading was interrupted (the students graded so far are kept)."""
    parser = argparse.ArgumentParser(prog="python -m coursekit.classroom",
                                     description="Grade a class with nbgrader, each student's code in a sandbox.")
    parser.add_argument("--course", default=".", help="the course root (default: the current directory)")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("collect", help="put submissions (a folder or an LMS zip) into submitted/")
    p.add_argument("assignment")
    p.add_argument("source")
    p = commands.add_parser("grade", help="preflight and autograde every submission of an assignment")
    p.add_argument("assignment")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU cores)")
    p.add_argument("--timeout", type=int, default=None, help="seconds a cell may run")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run the kernels without bubblewrap, as your own user (recorded in every status)")
    defaults = Limits()
    p.add_argument("--memory", default=defaults.memory, help=f"memory of a kernel (default {defaults.memory})")
    p.add_argument("--processes", type=int, default=defaults.processes,
                   help=f"processes and threads of a kernel (default {defaults.processes})")
    p.add_argument("--file-size", default=defaults.file_size,
                   help=f"largest file a kernel may write (default {defaults.file_size})")
    p.add_argument("--scratch", default=defaults.scratch,
                   help=f"size of a kernel's scratch folder (default {defaults.scratch})")
    p = commands.add_parser("feedback", help="HTML feedback for the graded submissions")
    p.add_argument("assignment")
    p = commands.add_parser("export", help="grades.csv and a report per assignment")
    p.add_argument("--output", default="grades.csv")
    args = parser.parse_args(argv)
    course = Path(args.course)
    try:
        if args.command == "collect":
            collect(course, args.assignment, Path(args.source), progress=print)
        elif args.command == "grade":
            limits = Limits(memory=args.memory, processes=args.processes, file_size=args.file_size,
                            scratch=args.scratch)
            grade(course, args.assignment, jobs=args.jobs, timeout=args.timeout, sandboxed=not args.no_sandbox,
                  limits=limits)
        elif args.command == "feedback":
            feedback(course, args.assignment)
        else:
            print(f"wrote {export(course, args.output)}")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        return 128 + e.signum
    return 0
