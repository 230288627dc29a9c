"""Grade: preflight, then autograde the class in parallel shards, every kernel sandboxed.

The students are split across ``jobs`` shards. A shard is a private course folder (the
configuration, a copy of the gradebook, its students' submissions) in which
``nbgrader autograde`` runs; each notebook's kernel starts in its own bubblewrap sandbox
(:mod:`.sandbox`) that sees none of it. After a shard's nbgrader ends, the trusted checker
(:mod:`.checker`) scores its students again, in a process no student code ran in, calling
each student's functions in a sandboxed worker. Each student is then checked outside the
kernel (:mod:`.integrity`); the complete students' rows are merged into ``gradebook.db``
(one transaction per shard) with the **trusted** scores. A student whose in-notebook score
differs from the trusted one, who called a ready-made function or imported what a solution
may not, or whom the integrity checks caught, is *flagged* for review, with the trusted
score recorded; a student the trusted checker could not score *failed*.

Crash safety: the gradebook is backed up before each run; SIGINT or SIGTERM stops the
shards, keeps the students merged so far, records every other student as "failed: grading
was interrupted", and removes the temporary folders; a lock keeps two runs apart, and a
run removes what a killed run left behind.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from . import gradebook, sandbox
from .common import (DEFAULT_TIMEOUT, NBGRADER_DONE, REPORTS_DIR, graded_students, nbgrader_bin,
                     release_notebooks, reports_dir, tool_env)
from .integrity import integrity_cells, verify
from .preflight import Submission, preflight
from .status import write_status

WORK = ".work"   # reports/.work: shards of a running grading (removed at the end)
TRUSTED = "trusted.json"   # in a shard: the trusted checker's scores
NO_SANDBOX_NOTE = "graded without a sandbox (--no-sandbox)"

_KNOWN_FAILURES = [
    ("DeadKernelError", "the kernel died while running the notebook (os._exit, a crash, or out of memory)"),
    ("CellTimeoutError", "a cell ran longer than the time limit"),
    ("MemoryError", "the notebook ran out of memory"),
]
# what a limit of the sandbox looks like when code hits it
_LIMIT_MARKERS = [
    ("memory", ("MemoryError", "can't allocate memory", "Cannot allocate memory", "std::bad_alloc")),
    ("scratch", ("No space left on device",)),
    ("file_size", ("File too large",)),
    ("processes", ("can't start new thread", "Resource temporarily unavailable")),
    ("open_files", ("Too many open files",)),
]


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while grading: raised by :func:`grade` after the clean-up
    (``signum`` is the signal's number; the command line exits with 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _make_shard(course: Path, root: Path, assignment: str, students: list[str], *, checks: bool = True) -> Path:
    """A private course folder: the config, a copy of the gradebook, these students' submissions
    (with the integrity cells around each notebook's own cells)."""
    root.mkdir(parents=True)
    shutil.copy(course / "nbgrader_config.py", root)
    shutil.copy(gradebook.db_path(course), root / "gradebook.db")
    start, end = integrity_cells()
    for student in students:
        target = root / "submitted" / student / assignment
        shutil.copytree(course / "submitted" / student / assignment, target, symlinks=True,
                        ignore=shutil.ignore_patterns(".*"))
        for path in target.glob("*.ipynb"):
            nb = json.loads(path.read_text())
            if checks:
                nb["cells"] = [start, *nb["cells"], end]
            path.write_text(json.dumps(nb))
    return root


def _student_log(log: str, student: str) -> str:
    """The lines of nbgrader's log that belong to this student's notebook."""
    mention = re.compile(r"/(?:submitted|autograded)/([^/\s]+)/|student '([^']+)'")
    current, text = None, []
    for line in log.splitlines():
        found = mention.search(line)
        if found:
            current = found.group(1) or found.group(2)
        if current == student:
            text.append(line)
    return "\n".join(text)


def _limit_hit(text: str, limits: sandbox.Limits) -> str | None:
    words = limits.describe()
    for name, markers in _LIMIT_MARKERS:
        if any(m in text for m in markers):
            return f"{words[name]} reached"
    return None


def _failure_reason(log: str, student: str, limits: sandbox.Limits | None) -> str:
    """The reason nbgrader's log gives for a student's failed notebook, in words."""
    text = _student_log(log, student)
    limit = _limit_hit(text, limits) if limits else None
    for marker, reason in _KNOWN_FAILURES:
        if marker in text:
            return f"{limit}: {reason}" if limit else reason
    if limit:
        return limit
    errors = [line.strip() for line in text.splitlines() if re.match(r"\s*[\w.]+(Error|Exception)\b", line)]
    return (errors[-1] if errors else f"autograding failed (see the log in {REPORTS_DIR}/)")[:300]


def _outputs_text(path: Path) -> str:
    """Every error and stream output of a graded notebook, as text."""
    parts = []
    for cell in json.loads(path.read_text()).get("cells", []):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                parts.append(f"{output.get('ename')}: {output.get('evalue')}")
            elif output.get("output_type") == "stream":
                text = output.get("text", "")
                parts.append(text if isinstance(text, str) else "".join(text))
    return "\n".join(parts)


def _prepare_read_only() -> list[Path]:
    """What the kernels will only read, made complete before grading: coursekit's bytecode
    (a kernel cannot write ``__pycache__``, and would compile every module each time) and the
    generated-data cache, whose folder is returned."""
    import compileall

    import coursekit
    from coursekit.data import cache_dir, load_mnist1d
    compileall.compile_dir(Path(coursekit.__file__).parent, quiet=2)
    load_mnist1d()
    return [cache_dir().resolve()]


class _Lock:
    """One grading run at a time per course; what a killed run left in reports/.work is removed."""

    def __init__(self, course: Path):
        self.folder = course / REPORTS_DIR / WORK
        self.folder.mkdir(parents=True, exist_ok=True)
        self.file = open(self.folder / "lock", "w")

    def __enter__(self):
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise RuntimeError(f"another grading run holds {self.folder / 'lock'}: wait for it to finish") from None
        for leftover in self.folder.glob("grade-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _on_signal(signum, frame):
    raise Interrupted(signum)


def _threads_asked() -> int | None:
    """``$OMP_NUM_THREADS`` when it is set: the threads of torch in every kernel and checker.

    Raises:
        ValueError: if it is set to anything but a positive integer.
    """
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"OMP_NUM_THREADS must be a positive integer (the threads of torch in each kernel), "
                         f"got {value!r}; unset it to share the CPU cores among the jobs")
    return int(value)


def grade(course: Path, assignment: str, *, jobs: int | None = None, timeout: int | None = None,
          students: list[str] | None = None, progress=print, sandboxed: bool = True,
          limits: sandbox.Limits | None = None) -> list[Submission]:
    """Preflight, then autograde every submission of ``assignment`` in ``jobs`` parallel
    shards, each student's kernel in its own sandbox; merge the grades into ``gradebook.db``
    and write ``reports/<assignment>/status.csv``.

    Args:
        course: the course root.
        assignment: e.g. ``"scaling"``.
        jobs: worker processes; default the number of CPU cores. Each kernel and checker runs
            torch with ``$OMP_NUM_THREADS`` threads when it is set (on a machine that also runs
            other work, 1 keeps threads from waiting on each other), else with the cores
            divided among the jobs.
        timeout: seconds a single cell may run (nbgrader's ``Execute.timeout``); default
            the course's configuration.
        students: only these students; default every folder in ``submitted/``.
        progress: called with a line of text as grading advances.
        sandboxed: run each kernel in bubblewrap (default). ``False`` runs kernels as the
            instructor's user, and every student's status records it.
        limits: the sandbox's :class:`~coursekit.classroom.sandbox.Limits`; default 4 GiB of
            memory and the other defaults.

    Returns:
        one :class:`Submission` per student, with ``status`` "graded", "rejected", "failed"
        or "flagged" (the trusted checker or the integrity checks found something to review;
        the trusted score is recorded).

    Raises:
        RuntimeError: bubblewrap is missing (and ``sandboxed``), or another run is in progress.
        FileNotFoundError, ValueError: no gradebook or release for ``assignment``.
        ValueError: ``$OMP_NUM_THREADS`` is set to anything but a positive integer.
    """
    course = Path(course).resolve()
    limits = limits or sandbox.Limits()
    threads = _threads_asked()
    gradebook.check_released(course, assignment)
    notebooks = list(release_notebooks(course, assignment))
    bwrap = sandbox.require() if sandboxed else None
    with _Lock(course) as lock:
        old_handlers = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        work = Path(tempfile.mkdtemp(prefix=f"grade-{assignment}-", dir=lock.folder))
        # the kernels' sockets: a short path (a socket's path has at most 107 bytes)
        kernels = Path(tempfile.mkdtemp(prefix="coursekit-kernels-"))
        results: list[Submission] = []
        interrupted = None
        try:
            gradebook.backup(course)
            results = [s for s in preflight(course, assignment) if students is None or s.student in students]
            _grade(course, assignment, results, notebooks, work, kernels, jobs=jobs, threads=threads,
                   timeout=timeout, progress=progress, bwrap=bwrap, limits=limits)
        except Interrupted as e:
            for s in results:
                if s.status == "ok":   # interrupted before its shard started
                    s.status, s.reason = "failed", f"grading was interrupted ({e}) before this student was graded"
            progress(f"interrupted ({e}): the students graded so far are kept; run `make grade` again for the rest")
            interrupted = e
        finally:
            for s, handler in old_handlers.items():
                signal.signal(s, handler)
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(kernels, ignore_errors=True)
            if results:
                if not sandboxed:
                    for s in results:
                        s.review.insert(0, NO_SANDBOX_NOTE)
                write_status(course, assignment, results)
    if interrupted is not None:
        raise interrupted
    graded = sum(s.status == "graded" for s in results)
    counts = ", ".join(f"{sum(s.status == k for s in results)} {k}" for k in ("rejected", "failed", "flagged"))
    progress(f"{assignment}: {graded} graded, {counts}; see {REPORTS_DIR}/{assignment}/status.csv")
    return results


def _grade(course: Path, assignment: str, results: list[Submission], notebooks: list[str], work: Path,
           kernels: Path, *, jobs, threads, timeout, progress, bwrap, limits) -> None:
    for s in results:
        if s.status == "rejected":
            progress(f"{s.student}: rejected, {s.reason}")
    gradebook.remove_grades(course, assignment, [s.student for s in results if s.status == "rejected"])
    todo = [s.student for s in results if s.status == "ok"]
    if not todo:
        return
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    shards = [todo[i::jobs] for i in range(jobs)]
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    env = {**tool_env(), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    args_common = [nbgrader_bin(), "autograde", assignment, "--force"]
    if timeout is not None:
        args_common.append(f"--Execute.timeout={timeout}")
    if bwrap:
        jupyter = sandbox.write_kernelspec(work / "jupyter", limits, _prepare_read_only())
        env["JUPYTER_PATH"] = os.pathsep.join([str(jupyter), *filter(None, [os.environ.get("JUPYTER_PATH")])])
        args_common.append(f"--Execute.kernel_name={sandbox.KERNEL_NAME}")
        env[sandbox.KERNELS_DIR_ENV] = str(kernels)
    running, checkers, interrupted = [], {}, None
    try:
        for i, shard_students in enumerate(shards):
            shard = _make_shard(course, work / f"shard{i}", assignment, shard_students)
            log = open(shard / "autograde.log", "w")
            proc = subprocess.Popen(args_common, cwd=shard, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            running.append((i, shard, shard_students, log, proc))
            # the trusted checker follows nbgrader: it scores each student nbgrader has finished
            checkers[i] = _start_checker(course, assignment, shard, shard_students, env, bwrap=bwrap,
                                         limits=limits, timeout=timeout, threads=threads)
        total, reported = len(todo), 0
        while any(p.poll() is None for *_, p in running) or any(c.poll() is None for c in checkers.values()):
            time.sleep(0.2)
            for i, shard, _, _, proc in running:
                if proc.poll() is not None and not (shard / NBGRADER_DONE).exists():
                    (shard / NBGRADER_DONE).touch()   # the checker stops once it has caught up
            done = sum(len(graded_students(shard, assignment, notebooks) & set(_trusted(shard)))
                       for _, shard, *_ in running)
            if done > reported:
                reported = done
                progress(f"graded {done}/{total}")
    except Interrupted as e:
        interrupted = e
    finally:
        # a second signal must not cut the clean-up short: the shards are stopped, and the
        # students they finished are still verified and merged below
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        for *_, log, proc in running:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)   # nbgrader; its kernels' sandboxes die with it
            proc.wait()
            log.close()
        for proc in checkers.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)   # a checker and its workers
            proc.wait()
        made = kernels / sandbox.CGROUPS   # the cgroups of kernels whose clean-up did not run
        for line in (made.read_text().splitlines() if made.exists() else []):
            sandbox.remove_cgroup(Path(line), seconds=5)
    by_student = {s.student: s for s in results}
    for i, shard, shard_students, _, _ in running:
        _collect_shard(course, assignment, notebooks, i, shard, shard_students, by_student, progress, limits,
                       _memory_killed(kernels, shard))
    if interrupted is not None:
        for s in results:
            if s.status == "failed" and s.student in todo:
                s.reason = f"grading was interrupted ({interrupted}) before this student was graded"
        raise interrupted


def _start_checker(course: Path, assignment: str, shard: Path, students: list[str], env: dict, *,
                   bwrap, limits, timeout, threads) -> subprocess.Popen:
    """The trusted checker of a shard (:mod:`.checker`), in a process of its own."""
    job = {"course": str(course), "assignment": assignment, "shard": str(shard), "students": students,
           "submitted": str(course / "submitted"), "bwrap": bwrap, "limits": asdict(limits),
           "timeout": float(timeout or DEFAULT_TIMEOUT), "threads": threads,
           "output": str(shard / TRUSTED)}
    (shard / "trusted-job.json").write_text(json.dumps(job))
    log = open(shard / "checker.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "coursekit.classroom.checker", str(shard / "trusted-job.json")],
                            cwd=shard, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


def _trusted(shard: Path) -> dict:
    """The trusted checker's results of a shard (empty when it did not finish)."""
    try:
        return json.loads((shard / TRUSTED).read_text())
    except (OSError, ValueError):
        return {}


def _compare(trusted: dict, in_notebook: dict[str, dict[str, float | None]]) -> tuple[list[str], list[str]]:
    """What the trusted results say against nbgrader's: (reasons to flag, reasons it failed)."""
    flags, failures = [], []
    for name, result in trusted.items():
        if "error" in result:
            failures.append(f"{name}: the trusted checker failed ({result['error']})")
            continue
        scores, ours = result["scores"], in_notebook.get(name, {})
        differ = [gid for gid in scores if abs(float(ours.get(gid) or 0.0) - scores[gid]) > 1e-9]
        if differ:
            kernel, total = sum(float(ours.get(g) or 0.0) for g in scores), sum(scores.values())
            cells = ", ".join(f"{g} {float(ours.get(g) or 0.0):g} -> {scores[g]:g}" for g in differ[:6])
            flags.append(f"{name}: the in-notebook score {kernel:g} differs from the trusted score {total:g} "
                         f"({cells}); the trusted score is recorded")
        for graded, hits in result.get("forbidden", {}).items():
            flags.append(f"{name}: {graded} calls a ready-made function ({', '.join(hits[:3])}): it scores 0")
        if result.get("blocked"):
            flags.append(f"{name}: the code imports what a solution may not use ({', '.join(result['blocked'][:4])})")
    return flags, failures


def _memory_killed(kernels: Path, shard: Path) -> set[str]:
    """The students of a shard some of whose kernel's processes the memory cgroup killed
    (the sandbox's provisioner writes them down: it ran in nbgrader, outside the kernel)."""
    events = kernels / sandbox.EVENTS
    if not events.exists():
        return set()
    killed = set()
    for line in events.read_text().splitlines():
        cwd = Path(json.loads(line)["cwd"])   # <shard>/autograded/<student>/<assignment>
        if cwd.parent.parent.parent == shard:
            killed.add(cwd.parent.name)
    return killed


def _collect_shard(course, assignment, notebooks, i, shard, shard_students, by_student, progress, limits,
                   memory_killed=frozenset()):
    """Verify a finished shard's students outside the kernel, merge the complete ones."""
    log_text = (shard / "autograde.log").read_text(errors="replace")
    log_dir = reports_dir(course, assignment) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"autograde-{i}.log").write_text(log_text)
    if (shard / "checker.log").exists():
        shutil.copy(shard / "checker.log", log_dir / f"checker-{i}.log")
    done = sorted(graded_students(shard, assignment, notebooks) & set(shard_students))
    trusted = _trusted(shard)
    flagged, untrusted = {}, {}
    for student in done:
        problems = [f"integrity: {p}" for p in verify(course, shard, assignment, student, notebooks)]
        results = trusted.get(student)
        if results is None:
            untrusted[student] = (f"the trusted checker did not grade this submission (see "
                                  f"{REPORTS_DIR}/{assignment}/logs/checker-{i}.log)")
        else:
            in_notebook = {name: gradebook.auto_scores(shard / "gradebook.db", assignment, name[:-len(".ipynb")],
                                                       student) for name in notebooks}
            flags, failures = _compare(results, in_notebook)
            if failures:
                untrusted[student] = "; ".join(failures)
            problems += flags
            by_student[student].review += [f"trusted checker: {p}" for name in notebooks
                                           for p in results.get(name, {}).get("problems", [])[:3]]
        if problems:
            flagged[student] = "; ".join(problems)
        outputs = "\n".join(_outputs_text(shard / "autograded" / student / assignment / n) for n in notebooks)
        limit = _limit_hit(outputs, limits)
        if student in memory_killed:
            limit = limits.describe()["memory"] + " reached (processes of the kernel were killed)"
        if limit:
            by_student[student].reason = f"{limit} while running the notebook"
    ok = [student for student in done if student not in untrusted]
    for student in ok:   # the score recorded is the trusted one
        for name in notebooks:
            gradebook.set_auto_scores(shard / "gradebook.db", assignment, name[:-len(".ipynb")], student,
                                      trusted[student][name]["scores"])
    gradebook.merge(gradebook.db_path(course), shard / "gradebook.db", assignment, ok)
    for student in ok:
        target = course / "autograded" / student / assignment
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(shard / "autograded" / student / assignment, target)
    failed = [s for s in shard_students if s not in ok]
    gradebook.remove_grades(course, assignment, failed)
    for student in shard_students:
        sub = by_student[student]
        if student in flagged and student in ok:
            sub.status, sub.reason = "flagged", flagged[student]
            progress(f"{student}: flagged for review, {sub.reason}")
        elif student in ok:
            sub.status = "graded"
        else:
            sub.status = "failed"
            sub.reason = untrusted.get(student) or _failure_reason(log_text, student, limits)
            if student in memory_killed and "memory limit" not in sub.reason:
                sub.reason = f"{limits.describe()['memory']} reached: {sub.reason}"
            progress(f"{student}: failed, {sub.reason}")
