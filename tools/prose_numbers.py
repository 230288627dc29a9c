"""Numbers typed into a chapter's prose that the run should provide instead.

A chapter's outputs differ between machines, so a result typed into the text goes stale:
every number that a cell computes reaches the prose through myst-nb's glue
(``{glue:text}`name:.3f```). This tool lists the numbers of three or more significant
digits that a chapter's prose (its Markdown, math included) still types, leaving out

- the glue roles themselves, citations, cross-references and inline code;
- numbers that appear in the page's own code (fixed settings: ``batch_size=256``);
- years (whole numbers from 1950 to 2039);
- the paper facts listed for the chapter in ``tools/paper_facts.yml`` (each with its source).

Significant digits: leading zeros never count; the trailing zeros of a whole number do not
count either (``1000`` has one, ``1024`` four), those after a decimal point do (``0.50`` has
two). ``tests/test_book.py`` fails on any number this finds. Run it on chapters::

    python tools/prose_numbers.py book/*.md
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FACTS = ROOT / "tools" / "paper_facts.yml"

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
# roles (``{name}`content```) and inline code: their text is not prose
_ROLE_OR_CODE = re.compile(r"\{[A-Za-z0-9_+.:-]+\}(`+).+?(?<!`)\1(?!`)|(`+).+?(?<!`)\2(?!`)", re.S)
_LINK_TARGET = re.compile(r"\]\([^)]*\)|^\([^()\s]+\)=\s*$|<https?://[^>]*>|https?://\S+", re.M)
_NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w])")


def significant_digits(number: str) -> int:
    """``0.606`` → 3, ``91.5`` → 3, ``0.05`` → 1, ``1000`` → 1, ``1024`` → 4, ``12,000`` → 2."""
    digits = number.replace(",", "")
    if "." in digits:
        return len(digits.replace(".", "").lstrip("0"))
    return len(digits.lstrip("0").rstrip("0"))


@dataclass(frozen=True)
class Typed:
    """A typed number: its line in the chapter's source and the text around it."""
    line: int
    number: str
    context: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.number}  … {self.context} …"


def split(source: str) -> tuple[list[tuple[int, str]], str]:
    """``(prose, code)``: the prose lines with their numbers (front matter, code cells, code
    blocks and glue directives left out), and the text of every code cell and code block."""
    lines = source.splitlines()
    prose, code = [], []
    i = 0
    if lines and lines[0].strip() == "---":                 # front matter
        i = next((j for j in range(1, len(lines)) if lines[j].strip() == "---"), len(lines)) + 1
    while i < len(lines):
        match = _FENCE.match(lines[i].lstrip())
        if match:
            fence, info = match["fence"], match["info"].strip()
            end = next((j for j in range(i + 1, len(lines))
                        if lines[j].strip().startswith(fence) and not lines[j].strip().strip(fence[0])),
                       len(lines))
            body = lines[i + 1:end]
            is_code = (not info.startswith("{") or info.startswith(("{code-cell}", "{code}", "{code-block}"))
                       or info.startswith("{glue"))
            if fence[0] != ":" and is_code:
                code.extend(body)
            else:                                             # an admonition, figure, ...: prose
                prose.extend((i + 2 + k, line) for k, line in enumerate(body)
                             if not line.lstrip().startswith(":"))
            i = end + 1
            continue
        if not lines[i].lstrip().startswith("%"):             # a MyST comment
            prose.append((i + 1, lines[i]))
        i += 1
    return prose, "\n".join(code)


def facts(chapter: str) -> set[str]:
    """The numbers ``tools/paper_facts.yml`` allows in a chapter (``book/scaling`` or ``scaling``)."""
    listed = yaml.safe_load(FACTS.read_text()) or {} if FACTS.is_file() else {}
    entries = listed.get(Path(chapter).stem) or []
    return {str(entry["number"]) for entry in entries}


def typed_numbers(path: Path) -> list[Typed]:
    """The numbers of three or more significant digits typed into the chapter's prose."""
    path = Path(path)
    prose, code = split(path.read_text())
    code_numbers = {n.rstrip(",") for n in _NUMBER.findall(code)}   # "128," in `batch_size=128,`
    allowed = facts(path.stem)
    found = []
    for lineno, line in prose:
        text = _LINK_TARGET.sub(" ", _ROLE_OR_CODE.sub(" ", line))
        for match in _NUMBER.finditer(text):
            number = match.group().rstrip(",")
            if significant_digits(number) < 3 or number in code_numbers or number in allowed:
                continue
            if re.fullmatch(r"19[5-9]\d|20[0-3]\d", number):   # a year
                continue
            context = text[max(0, match.start() - 40):match.end() + 30].strip()
            found.append(Typed(lineno, number, " ".join(context.split())))
    return found


def main(paths: list[str]) -> int:
    total = 0
    for path in paths:
        found = typed_numbers(Path(path))
        total += len(found)
        print(f"{path}: {len(found)} typed number(s)")
        for typed in found:
            print(f"  {typed}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or sorted(str(p) for p in (ROOT / "book").glob("*.md"))))
