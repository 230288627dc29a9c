"""Collect: submissions from a folder or an LMS zip into ``submitted/<student>/<assignment>/``."""
from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

from .common import nbgrader_bin as _nbgrader_bin, release_notebooks as _release_notebooks, tool_env as _env

def collect(course: Path, assignment: str, source: Path, progress=lambda line: None) -> list[str]:
    """Put submissions at ``submitted/<student>/<assignment>/``: from a folder laid out as
    ``<student>/<assignment>/*.ipynb`` (or ``<student>/*.ipynb``), or from an LMS zip whose
    files are named ``<student>_<anything>_<notebook>.ipynb`` (``alice_12345_attempt_scaling.ipynb``),
    through ``nbgrader zip_collect``. Returns the students."""
    course, source = Path(course).resolve(), Path(source).resolve()
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise ValueError(f"{source} is neither a folder nor a zip file")
        archive = course / "downloaded" / assignment / "archive"
        archive.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, archive)
        names = "|".join(re.escape(name) for name in _release_notebooks(course, assignment))
        regexp = rf".*/(?P<student_id>[^_/]+)_[^/]*?(?P<file_id>{names})$"   # matched on the whole path
        subprocess.run([_nbgrader_bin(), "zip_collect", assignment, "--force",
                        f"--FileNameCollectorPlugin.named_regexp={regexp}"],
                       cwd=course, env=_env(), check=True)
        return sorted(p.parent.name for p in (course / "submitted").glob(f"*/{assignment}"))
    students = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        inner = folder / assignment if (folder / assignment).is_dir() else folder
        target = course / "submitted" / folder.name / assignment
        target.mkdir(parents=True, exist_ok=True)
        for path in inner.glob("*.ipynb"):
            shutil.copy(path, target / path.name)
        students.append(folder.name)
    return students

