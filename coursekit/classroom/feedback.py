"""Feedback: nbgrader's HTML per student, with hidden tests reduced to pass/fail, points and message.

A hidden-test cell shows a note instead of its code and, instead of its outputs (which a
student's hook could have printed into), one line: passed or failed, the points, and the
check's teaching message. From the first hidden test on, no cell shows what the student's
code printed (see :class:`HideHiddenTests`).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .common import HIDDEN_BEGIN, HIDDEN_END, nbgrader_bin, tool_env
from .integrity import INTEGRITY_TAG

try:
    from nbgrader.preprocessors import NbGraderPreprocessor as _Base
except ImportError:  # nbgrader is an instructor's tool; students do not need it
    _Base = object

MESSAGE_CHARS = 1000
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def hidden_code(source: str) -> str:
    """The hidden part of a test cell's source ('' when it has none)."""
    return source.partition(HIDDEN_BEGIN)[2].partition(HIDDEN_END)[0]


def scrub(text: str, secret_lines: set[str]) -> str:
    """``text`` without the lines that contain a line of hidden-test code."""
    if not secret_lines:
        return text
    kept = [line for line in text.splitlines(keepends=True) if not any(s in line for s in secret_lines)]
    return "".join(kept)


def _secret_lines(cells) -> set[str]:
    lines = set()
    for cell in cells:
        if cell.get("cell_type") == "code":
            lines |= {line.strip() for line in hidden_code(cell.get("source", "")).splitlines()
                      if len(line.strip()) >= 8}
    return lines


def _is_test(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


class HideHiddenTests(_Base):
    """Feedback preprocessor (after nbgrader's ``GetGrades``).

    A hidden-test cell shows a note instead of its hidden code, and one line instead of its
    outputs: passed or failed, the points, the check's message. Code that ran before a
    hidden test cannot have seen it, so earlier outputs are shown (with any line of hidden
    code removed); from the first hidden-test cell on, a student's hook may have kept the
    hidden code and print it in any form, so every later test cell shows only that one
    line too, and other cells' outputs are not shown."""

    def preprocess(self, nb, resources):
        nb.cells = [c for c in nb.cells if not c.get("metadata", {}).get(INTEGRITY_TAG)]
        self._secrets = _secret_lines(nb.cells)
        self._after_hidden = False
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.get("cell_type") != "code":
            return cell, resources
        source = cell.get("source", "")
        hidden = HIDDEN_BEGIN in source
        if hidden:
            before, _, rest = source.partition(HIDDEN_BEGIN)
            after = rest.partition(HIDDEN_END)[2]
            cell["source"] = (before + after).rstrip() + "\n# (hidden tests: they ran here, their code is not shown)"
        self._after_hidden = self._after_hidden or hidden
        if not self._after_hidden:
            for output in cell.get("outputs", []):
                self._scrub_output(output)
        elif _is_test(cell):
            cell["outputs"] = [self._summary(cell, "hidden tests" if hidden else "tests")]
        elif cell.get("outputs"):
            cell["outputs"] = [{"output_type": "stream", "name": "stdout",
                                "text": "(outputs after the first hidden test are not shown in feedback)\n"}]
        return cell, resources

    def _summary(self, cell, what: str) -> dict:
        """One line: passed or failed, the points earned, and the check's message."""
        meta = cell.get("metadata", {}).get("nbgrader", {})
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        score, points = meta.get("score"), meta.get("points")
        earned = f" ({score:g} of {points:g} points)" if score is not None and points is not None else ""
        if errors:
            message = _ANSI.sub("", f"{errors[-1].get('ename', 'Error')}: {errors[-1].get('evalue', '')}")
            text = f"{what} failed{earned}: {scrub(message, self._secrets)[:MESSAGE_CHARS]}\n"
        else:
            text = f"{what} passed{earned}\n"
        return {"output_type": "stream", "name": "stdout", "text": text}

    def _scrub_output(self, output) -> None:
        if "text" in output:
            output["text"] = scrub(output["text"], self._secrets)
        for key, value in list(output.get("data", {}).items()):
            if isinstance(value, str):
                output["data"][key] = scrub(value, self._secrets)
        if output.get("output_type") == "error":
            output["traceback"] = [scrub(line, self._secrets) for line in output.get("traceback", [])]
            output["evalue"] = scrub(output.get("evalue", ""), self._secrets)


def feedback(course: Path, assignment: str) -> None:
    """``nbgrader generate_feedback`` for the graded students (hidden tests hidden)."""
    course = Path(course).resolve()
    subprocess.run([nbgrader_bin(), "generate_feedback", assignment, "--force"], cwd=course,
                   env=tool_env(), check=True, capture_output=True)
