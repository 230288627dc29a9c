"""Feedback: nbgrader's HTML per student, with hidden tests reduced to pass/fail, points and message.

A hidden-test cell shows a note instead of its code and, instead of its outputs (which a
student's hook could have printed into), one line: passed or failed, the points, and the
check's teaching message. Lines of hidden-test code are also removed from every other
output, where a student's hook could have printed them.
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


class HideHiddenTests(_Base):
    """Feedback preprocessor (after nbgrader's ``GetGrades``): hidden-test cells show only a
    note, pass/fail, points and the check's message; no hidden code in any output."""

    def preprocess(self, nb, resources):
        nb.cells = [c for c in nb.cells if not c.get("metadata", {}).get(INTEGRITY_TAG)]
        self._secrets = _secret_lines(nb.cells)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if cell.get("cell_type") != "code":
            return cell, resources
        source = cell.get("source", "")
        if HIDDEN_BEGIN not in source:
            for output in cell.get("outputs", []):
                self._scrub_output(output)
            return cell, resources
        before, _, rest = source.partition(HIDDEN_BEGIN)
        after = rest.partition(HIDDEN_END)[2]
        cell["source"] = (before + after).rstrip() + "\n# (hidden tests: they ran here, their code is not shown)"
        meta = cell.get("metadata", {}).get("nbgrader", {})
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        score, points = meta.get("score"), meta.get("points")
        earned = f" ({score:g} of {points:g} points)" if score is not None and points is not None else ""
        if errors:
            message = _ANSI.sub("", f"{errors[-1].get('ename', 'Error')}: {errors[-1].get('evalue', '')}")
            text = f"hidden tests failed{earned}: {scrub(message, self._secrets)[:MESSAGE_CHARS]}\n"
        else:
            text = f"hidden tests passed{earned}\n"
        cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": text}]
        return cell, resources

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
