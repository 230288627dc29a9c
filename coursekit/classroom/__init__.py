"""Grading a whole class with nbgrader: one command per stage, every student accounted for,
every student's code in its own sandbox.

Run from the course root (where ``nbgrader_config.py`` is), after ``make release``::

    python -m coursekit.classroom collect scaling path/to/submissions.zip   # or a folder
    python -m coursekit.classroom grade scaling --jobs 2                    # preflight + sandboxed autograde
    python -m coursekit.classroom feedback scaling                          # HTML, hidden tests hidden
    python -m coursekit.classroom export                                    # grades.csv + reports

(the Makefile has the same as ``make collect``, ``make grade``, ``make feedback``, ``make grades``).
One module per stage:

- :mod:`.collect`: submissions from a folder or an LMS zip into ``submitted/``, every file
  accounted for (collected, superseded, skipped and why);
- :mod:`.preflight`: each submission checked and repaired where safe, or rejected with the reason;
- :mod:`.sandbox`: the bubblewrap sandbox each student's kernel runs in;
- :mod:`.grade`: parallel autograding in private shards, merged into the gradebook;
- :mod:`.checker`: the trusted score, computed in a process no student code ran in, calling
  the student's functions in a sandboxed :mod:`.worker` across a plain-data :mod:`.wire`;
- :mod:`.integrity`: what is checked beyond the scores, inside and outside the kernel;
- :mod:`.gradebook`: the gradebook's SQL, backups;
- :mod:`.status`: ``reports/<assignment>/status.csv``, every student's outcome;
- :mod:`.feedback`: HTML feedback, hidden tests reduced to pass/fail, points and message;
- :mod:`.export`: ``grades.csv`` and a report per assignment;
- :mod:`.cli`: the command line.
"""
from .collect import collect
from .export import export
from .feedback import HideHiddenTests, feedback
from .grade import grade
from .preflight import Submission, preflight
from .sandbox import Limits
from .status import read_status
from .cli import main

__all__ = ["Submission", "Limits", "preflight", "grade", "feedback", "export", "collect", "read_status",
           "HideHiddenTests", "main"]
