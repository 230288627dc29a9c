"""Collect: submissions from a folder or an LMS zip into ``submitted/<student>/<assignment>/``.

Every input file is accounted for, and nothing in the input stops the batch: each file is
*collected* (the newest attempt of a student's notebook), *superseded* (an older attempt),
*skipped* (it cannot be taken, with the reason) or *ignored* (system litter and symlinks).
The report is returned, written to ``reports/<assignment>/collect.csv`` and summed up.

Where a file goes comes from its place in the folder or zip:

- ``<student>/<notebook>`` or ``<student>/<assignment>/<notebook>``;
- any other place: a file named ``<student>_<anything>_<notebook>`` as an LMS names it
  (Canvas, Moodle: ``alice_12345_attempt_scaling.ipynb``), where ``<anything>`` may hold
  the LMS's timestamp (``alice_LATE_123_2026-11-03-14-05-09_scaling.ipynb``).

``<notebook>`` is matched to a released notebook ignoring case and the suffixes that
downloads and LMSs add (``Scaling (1).ipynb``, ``scaling-1.ipynb``, ``scaling copy.ipynb``),
and stored under the released name. Zip members are never extracted by their path: their
bytes are read and written to a target made of the checked student id and released name.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import unicodedata
import zipfile
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import count
from pathlib import Path
from typing import Callable, NamedTuple

from .common import ALLOWED_ID, name_problem, release_notebooks, reports_dir
from .status import write_csv

MAX_NOTEBOOK_BYTES = 100 * 2**20
IGNORED_FOLDERS = {".ipynb_checkpoints", "__MACOSX"}
IGNORED_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}
REPORT_COLUMNS = ["source", "student", "outcome", "reason"]
#: ``downloaded/<assignment>/collected.json``: when each collected notebook was submitted
#: (grading rewrites the files, so their modification time cannot tell)
RECORD = "collected.json"
LMS_TIMESTAMP = re.compile(r"(\d{4})-(\d{2})-(\d{2})[-T ](\d{2})[-:.](\d{2})[-:.](\d{2})")
#: what downloads and LMSs append to a file's name: " (1)", "-1", "_1", " copy", " - Copy"
RENAME_SUFFIX = re.compile(r"(\s*\(\d+\)|[-_ ]\d+|[-_ ]+copy)$")
UNKNOWN_TIME = datetime(1980, 1, 1)   # the earliest date a zip can hold


@dataclass
class Entry:
    """What became of one input file.

    Args:
        source: the file: ``<folder name>/<path>`` or ``<zip name>:<member>``.
        student: the student it belongs to, or None where that is unknown or not allowed.
        outcome: ``"collected"``, ``"superseded"``, ``"skipped"`` or ``"ignored"``.
        reason: why, in words.
    """
    source: str
    student: str | None
    outcome: str
    reason: str


@dataclass
class CollectReport:
    """Every input file of one collect, with its outcome (see :class:`Entry`)."""
    entries: list[Entry]

    @property
    def students(self) -> list[str]:
        """The students with a notebook collected, sorted."""
        return sorted({e.student for e in self.entries if e.outcome == "collected"})

    def count(self, outcome: str) -> int:
        """How many input files had this outcome."""
        return sum(e.outcome == outcome for e in self.entries)

    def summary(self) -> list[str]:
        """One line of counts, then one line per superseded or skipped file."""
        n, files = len(self.students), self.count("collected")
        lines = [f"collected {n} student{'' if n == 1 else 's'} ({files} file{'' if files == 1 else 's'}): "
                 f"{self.count('superseded')} superseded, {self.count('skipped')} skipped, "
                 f"{self.count('ignored')} ignored"]
        lines += [f"  {e.outcome}: {e.source}: {e.reason}" for e in self.entries
                  if e.outcome in ("superseded", "skipped")]
        return lines


@dataclass
class _Attempt:
    """One file that is a student's notebook; the newest attempt of each notebook is kept."""
    source: str
    student: str
    notebook: str                   # the released name it is stored under
    named: str                      # the notebook's name as the file gives it
    time: datetime
    timed_by: str                   # "LMS timestamp", "zip date" or "file date"
    read: Callable[[], bytes] | None
    order: int                      # place in the input: a later one wins a tie
    earlier: bool = False           # the notebook already in submitted/, not an input file


def collect(course: Path, assignment: str, source: Path, progress=lambda line: None) -> CollectReport:
    """Put the newest submission of each student at ``submitted/<student>/<assignment>/``.

    A student's folder there is replaced, not merged, by the newest attempt of each
    notebook, whether it comes from this source or was collected earlier. The report is
    written to ``reports/<assignment>/collect.csv``; a zip is kept under
    ``downloaded/<assignment>/archive/``.

    Args:
        course: the course root (``exercises/<assignment>/`` holds the released notebooks).
        assignment: e.g. ``"scaling"``.
        source: a folder or a zip file of submissions (see the module's docstring).
        progress: called with each line of the summary. Default: nothing is printed.

    Returns:
        a :class:`CollectReport` with one entry per input file.

    Raises:
        FileNotFoundError: ``source`` does not exist, or the assignment has no released notebook.
        ValueError: ``assignment`` is not a folder name, or ``source`` is neither a folder
            nor a readable zip file.
    """
    course, source = Path(course), Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if (problem := name_problem(assignment)) is not None:
        raise ValueError(f"assignment {assignment!r} {problem}; an assignment must be a folder name")
    releases = release_notebooks(course, assignment)
    if source.is_dir():
        entries, attempts = _scan_folder(source, assignment, releases)
        entries += _store(course, assignment, attempts, releases)
    elif source.is_file() and (zipfile.is_zipfile(source) or source.suffix.lower() == ".zip"):
        with _open_zip(source) as archive:
            _keep_copy(source, course / "downloaded" / assignment / "archive")
            entries, attempts = _scan_zip(archive, source.name, assignment, releases)
            entries += _store(course, assignment, attempts, releases)
    else:
        raise ValueError(f"{source} is neither a folder nor a zip file")
    report = CollectReport(sorted(entries, key=lambda e: e.source))
    path = reports_dir(course, assignment) / "collect.csv"
    write_csv(path, REPORT_COLUMNS, [[e.source, e.student or "", e.outcome, e.reason] for e in report.entries])
    for line in report.summary() + [f"report: {path}"]:
        progress(line)
    return report


# --------------------------------------------------------------------------- names

def student_id(raw: str) -> str:
    """The student id that a folder or file name gives: NFC-normalized and stripped.

    Args:
        raw: the id as found, e.g. ``"José"`` spelled NFC or NFD.

    Returns:
        the id, otherwise as written (``"=2+3"`` is a valid id).

    Raises:
        ValueError: the id is not a safe folder name (see ``ALLOWED_ID``).
    """
    name = unicodedata.normalize("NFC", raw).strip()
    if (problem := name_problem(name)) is not None:
        raise ValueError(f"student id {raw!r} {problem}; {ALLOWED_ID}")
    return name


def _match_notebook(name: str, releases: dict) -> str | None:
    """The released notebook that a file name stands for, or None.

    Case is ignored, and rename suffixes are removed one at a time until a released name
    matches: ``"Scaling (1).ipynb"``, ``"scaling-1.ipynb"``, ``"scaling copy 2.ipynb"``.
    """
    if not name.lower().endswith(".ipynb"):
        return None
    wanted = {unicodedata.normalize("NFC", r[:-len(".ipynb")]).casefold(): r for r in releases}
    stem = unicodedata.normalize("NFC", name[:-len(".ipynb")]).casefold().strip()
    while stem not in wanted:
        shorter = RENAME_SUFFIX.sub("", stem).rstrip()
        if shorter == stem:
            return None
        stem = shorter
    return wanted[stem]


def _lms_timestamp(text: str) -> datetime | None:
    """The timestamp an LMS put in a file name (``2026-11-03-14-05-09``), or None."""
    match = LMS_TIMESTAMP.search(text)
    try:
        return datetime(*map(int, match.groups())) if match else None
    except ValueError:                 # e.g. month 13: not a timestamp
        return None


class _Place(NamedTuple):
    """Where a file belongs: the student (None: unknown), the released notebook (None: no
    match), the notebook's name as the file gives it, and the LMS's timestamp if any."""
    student: str | None
    notebook: str | None
    named: str
    timestamp: datetime | None = None


def _parse_lms_name(name: str, releases: dict) -> _Place | None:
    """Where a file named ``<student>_<anything>_<notebook>`` belongs, or None."""
    student, sep, rest = name.partition("_")
    if not sep or not student:
        return None
    pieces = rest.split("_")
    for i in range(len(pieces)):       # the longest tail that names a notebook
        named = "_".join(pieces[i:])
        if (notebook := _match_notebook(named, releases)) is not None:
            return _Place(student, notebook, named, _lms_timestamp("_".join(pieces[:i])))
    return None


def _locate(parts: list[str], assignment: str, releases: dict) -> _Place:
    """Where the file at ``parts`` (its path in the folder or zip) belongs."""
    in_folder = len(parts) == 2 or (len(parts) == 3 and parts[1].casefold() == assignment.casefold())
    if in_folder and (notebook := _match_notebook(parts[-1], releases)) is not None:
        return _Place(parts[0], notebook, parts[-1])
    if (place := _parse_lms_name(parts[-1], releases)) is not None:
        return place
    return _Place(parts[0] if in_folder else None, None, parts[-1])


def _ignored(parts: list[str]) -> str | None:
    """Why a file is system litter (checkpoints, macOS metadata), or None."""
    for folder in parts[:-1]:
        if folder in IGNORED_FOLDERS:
            return f"inside {folder}/"
    if parts[-1].startswith("._"):
        return "macOS metadata (._*)"
    if parts[-1] in IGNORED_FILES:
        return "system file"
    return None


def _display(text: str) -> str:
    """``text`` with undecodable bytes of a file name shown as U+FFFD, so a CSV can hold it."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _when(a: _Attempt) -> str:
    return f"{a.time:%Y-%m-%d %H:%M:%S} by {a.timed_by}"


def _consider(source: str, parts: list[str], assignment: str, releases: dict, time: datetime,
              timed_by: str, read: Callable[[], bytes], order: int) -> Entry | _Attempt:
    """An attempt, or the entry saying why a file (not a symlink, at a safe path) is not one."""
    if (why := _ignored(parts)) is not None:
        return Entry(source, None, "ignored", why)
    place = _locate(parts, assignment, releases)
    try:
        student = student_id(place.student) if place.student is not None else None
    except ValueError as e:
        return Entry(source, None, "skipped", str(e))
    if place.notebook is None:
        names = ", ".join(releases)
        reason = ("not a notebook: only .ipynb files are collected" if not parts[-1].lower().endswith(".ipynb")
                  else f"names no released notebook ({names}): expected <student>/<notebook>, "
                       f"<student>/{assignment}/<notebook> or a file <student>_<anything>_<notebook>")
        return Entry(source, student, "skipped", reason)
    if place.timestamp is not None:
        time, timed_by = place.timestamp, "LMS timestamp"
    return _Attempt(source, student, place.notebook, place.named, time, timed_by, read, order)


# --------------------------------------------------------------------------- reading

def _read_limited(f) -> bytes:
    data = f.read(MAX_NOTEBOOK_BYTES + 1)
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"larger than {MAX_NOTEBOOK_BYTES // 2**20} MiB")
    return data


def _read_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return _read_limited(f)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with archive.open(info) as f:
        return _read_limited(f)


def _scan_folder(source: Path, assignment: str, releases: dict) -> tuple[list[Entry], list[_Attempt]]:
    """The entries (ignored, skipped) and attempts of every file under ``source``; symlinks
    are ignored, never followed."""
    entries, attempts, order = [], [], count()

    def unreadable(error: OSError):
        entries.append(Entry(_display(f"{source.name}/{Path(error.filename or source).relative_to(source)}"), None,
                             "skipped", f"could not be read ({error.strerror})"))

    for folder, subfolders, files in os.walk(source, onerror=unreadable):
        folder = Path(folder)
        subfolders.sort()
        for name in sorted(subfolders):
            if (folder / name).is_symlink():
                subfolders.remove(name)
                files.append(name)     # reported below, as a symlink
        for name in sorted(files):
            path = folder / name
            parts = list(path.relative_to(source).parts)
            label = _display(f"{source.name}/{'/'.join(parts)}")
            try:
                mode = path.lstat()
            except OSError as e:
                entries.append(Entry(label, None, "skipped", f"could not be read ({e.strerror})"))
                continue
            if stat.S_ISLNK(mode.st_mode):
                entries.append(Entry(label, None, "ignored", "a symbolic link (never followed)"))
            elif not stat.S_ISREG(mode.st_mode):
                entries.append(Entry(label, None, "skipped", "not a regular file"))
            else:
                found = _consider(label, parts, assignment, releases, _file_time(mode.st_mtime),
                                  "file date", partial(_read_file, path), next(order))
                (attempts if isinstance(found, _Attempt) else entries).append(found)
    return entries, attempts


def _open_zip(source: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"{source} is not a readable zip file ({e})") from e


def _unsafe_member(name: str) -> str | None:
    """Why a zip member's path is unsafe (it could leave the folder it is extracted to), or None."""
    if "\0" in name:
        return "the path contains NUL"
    if name.startswith(("/", "\\")):
        return "an absolute path"
    if re.match(r"[A-Za-z]:", name):
        return "a path with a drive letter"
    if ".." in re.split(r"[/\\]", name):
        return "a path with '..'"
    return None


def _zip_time(info: zipfile.ZipInfo) -> datetime:
    try:
        return datetime(*info.date_time)
    except ValueError:                 # e.g. day 0
        return UNKNOWN_TIME


def _file_time(seconds: float) -> datetime:
    try:
        return datetime.fromtimestamp(seconds)
    except (OverflowError, OSError, ValueError):
        return UNKNOWN_TIME


def _scan_zip(archive: zipfile.ZipFile, label: str, assignment: str,
              releases: dict) -> tuple[list[Entry], list[_Attempt]]:
    """The entries (ignored, skipped) and attempts of every member of ``archive``."""
    entries, attempts = [], []
    for order, info in enumerate(archive.infolist()):
        source = f"{label}:{info.filename}"
        symlink = stat.S_ISLNK(info.external_attr >> 16)
        if info.is_dir() and not symlink:
            continue
        if (problem := _unsafe_member(info.filename)) is not None:
            entries.append(Entry(source, None, "skipped", f"{problem}: not extracted"))
        elif symlink:
            entries.append(Entry(source, None, "ignored", "a symbolic link (never followed)"))
        elif not (parts := [p for p in re.split(r"[/\\]", info.filename) if p not in ("", ".")]):
            entries.append(Entry(source, None, "skipped", "an empty path"))
        else:
            found = _consider(source, parts, assignment, releases, _zip_time(info), "zip date",
                              partial(_read_member, archive, info), order)
            (attempts if isinstance(found, _Attempt) else entries).append(found)
    return entries, attempts


def _keep_copy(source: Path, archive: Path) -> Path:
    """Copy ``source`` into ``archive`` under a name no other file has there."""
    archive.mkdir(parents=True, exist_ok=True)
    for n in count():
        target = archive / (source.name if n == 0 else f"{source.stem}-{n}{source.suffix}")
        try:
            with open(source, "rb") as src, open(target, "xb") as dst:
                shutil.copyfileobj(src, dst)
            return target
        except FileExistsError:
            continue


# --------------------------------------------------------------------------- storing

def _read_record(path: Path) -> dict:
    """``{student: {notebook: {"time", "timed_by", "source"}}}``; empty when missing or unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _earlier(path: Path, student: str, recorded) -> _Attempt | None:
    """The notebook collected earlier at ``path`` as an attempt, timed by the record (else
    by the file's date), or None when there is none."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        time, source = _file_time(path.stat().st_mtime), f"{path} (collected earlier)"
    except OSError:
        return None
    timed_by = "file date"
    if isinstance(recorded, dict):
        try:
            time, timed_by = datetime.fromisoformat(recorded["time"]), str(recorded["timed_by"])
            source = f"{recorded['source']} (collected earlier)"
        except (KeyError, TypeError, ValueError):
            pass
    return _Attempt(source, student, path.name, path.name, time, timed_by, None, -1, earlier=True)


def _pick_newest(attempts: list[_Attempt]) -> tuple[_Attempt | None, bytes | None, list[Entry]]:
    """The newest readable attempt of one notebook with its bytes, and the entries of the
    other input files (superseded, or skipped when unreadable)."""
    winner, data, entries = None, None, []
    for a in sorted(attempts, key=lambda a: (a.time, a.order), reverse=True):
        if winner is not None:
            if not a.earlier:
                entries.append(Entry(a.source, a.student, "superseded",
                                     f"older than {winner.source} ({_when(a)}; that one {_when(winner)})"))
            continue
        if a.earlier:
            winner = a
            continue
        try:
            data = a.read()
        except Exception as e:        # a bad CRC, encryption, a vanished file: this file only
            entries.append(Entry(a.source, a.student, "skipped", f"could not be read ({type(e).__name__}: {e})"))
            continue
        winner = a
    return winner, data, entries


def _unsafe_target(target: Path) -> str | None:
    """Why ``submitted/<student>/<assignment>`` cannot be written (a symlink, a file), or None."""
    for path in (target.parent, target):
        if path.is_symlink():
            return f"{path} is a symlink, never written through: remove it and collect again"
        if path.exists() and not path.is_dir():
            return f"{path} is a file, not a folder: remove it and collect again"
    return None


def _replace_folder(target: Path, new: dict[str, bytes], keep: set[str]) -> None:
    """Make ``target`` hold the ``new`` notebooks and the kept ones, and nothing else."""
    target.mkdir(parents=True, exist_ok=True)
    for path in target.iterdir():
        if path.name not in keep or not stat.S_ISREG(path.lstat().st_mode):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for name, data in new.items():
        tmp = target / f".{name}.collecting"
        tmp.write_bytes(data)
        os.replace(tmp, target / name)


def _store_student(target: Path, attempts: list[_Attempt], previous: dict, releases: dict) -> list[Entry]:
    """Store the newest attempt of each of one student's notebooks at ``target``, and
    record when it was submitted in ``previous`` (``{notebook: {"time", "timed_by", "source"}}``).

    Raises:
        OSError: the folder could not be written (nothing is recorded then).
    """
    student = attempts[0].student
    if (problem := _unsafe_target(target)) is not None:
        return [Entry(a.source, student, "skipped", problem) for a in attempts]
    entries, new, record = [], {}, {}
    for notebook in sorted({a.notebook for a in attempts}):
        theirs = [a for a in attempts if a.notebook == notebook]
        earlier = _earlier(target / notebook, student, previous.get(notebook))
        winner, data, more = _pick_newest(theirs + ([earlier] if earlier else []))
        entries += more
        if winner is None or winner.earlier:
            continue
        new[notebook] = data
        record[notebook] = {"time": winner.time.isoformat(), "timed_by": winner.timed_by, "source": winner.source}
        reason = f"as {notebook}" + (f" (named {winner.named!r})" if winner.named != notebook else "")
        reason += f", {_when(winner)}"
        if len(theirs) > 1:
            reason += f", newest of {len(theirs)} attempts"
        if earlier is not None:
            reason += ", replaces the one collected earlier"
        entries.append(Entry(winner.source, student, "collected", reason))
    if new:
        _replace_folder(target, new, keep=set(releases))
        previous.update(record)
    return entries


def _store(course: Path, assignment: str, attempts: list[_Attempt], releases: dict) -> list[Entry]:
    """Store each student's newest attempts under ``submitted/``; the entries of all attempts."""
    submitted = course / "submitted"
    record_path = course / "downloaded" / assignment / RECORD
    record = _read_record(record_path)
    entries = []
    for student in sorted({a.student for a in attempts}):
        theirs = [a for a in attempts if a.student == student]
        target = submitted / student / assignment
        if not isinstance(record.get(student), dict):
            record[student] = {}
        try:
            entries += _store_student(target, theirs, record[student], releases)
        except OSError as e:           # a full disk, a permission: this student only, reported
            entries += [Entry(a.source, student, "skipped", f"could not be stored at {target} ({e})")
                        for a in theirs]
    _write_record(record_path, record)
    return entries
