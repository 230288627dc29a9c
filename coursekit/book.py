"""What the book's chapters use to put the run's numbers into the text and to check the text's
claims on every build.

A chapter's outputs differ between machines (other CPUs, other floating-point kernels), so no
result is typed into the prose: a cell glues it and the text inserts it::

    glue("bn_acc", accuracy)                  # in a code cell
    BN reaches {glue:text}`bn_acc:.3f`.       # in the Markdown

and a hidden cell (tag ``remove-cell``) after the experiment checks that the run supports
what the text says about it, over every seed of the comparison::

    claim(all(b > p for b, p in zip(bn, plain)), "batch norm beats the plain network in every seed",
          bn=bn, plain=plain)

so that a build whose run no longer supports the sentence fails, naming the sentence and the
values. When that happens, change the sentence, not the check. Each chapter ends with its
papers' headline claims against this run: :func:`claims_table`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

__all__ = ["glue", "claim", "in_seeds", "Claim", "claims_table"]



def _number(value: Any) -> Any:
    """A tensor or numpy scalar of one element as a Python number (its text is then ``0.606``,
    which ``{glue:text}`` formats, not ``tensor(0.6060)`` or ``np.float64(0.606)``)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 or \
            (hasattr(value, "numel") and callable(value.numel) and value.numel() == 1):
        return value.item()
    return value


def glue(name: str, value: Any, display: bool = False) -> None:
    """Glue a value of the run under ``name`` for the text (myst-nb's ``glue``).

    Tensors and numpy scalars of one element are glued as Python numbers, so that a format
    spec applies (``{glue:text}`name:.3f```). Unlike myst-nb's default, the value is not shown
    where it is glued (``display=False``): the text shows it. Without myst-nb (a downloaded
    chapter run in plain Jupyter) nothing is glued, and the value is shown only with
    ``display=True``.

    Args:
        name: the name the text uses; letters, digits and ``_``.
        value: a number, a string, or a displayable object (``IPython.display.Markdown``).
        display: also show the value in the cell's output. Default: ``False``.
    """
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ValueError(f"a glue name is letters, digits and '_', got {name!r}")
    value = _number(value)
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show
            show(value)
        return
    myst_glue(name, value, display=display)


def _plain(value: Any) -> Any:
    """Numbers as Python numbers (tensors and numpy scalars of one element), for messages."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def claim(holds: Any, sentence: str, **values: Any) -> None:
    """Fail the build when the run does not support a sentence of the text.

    Args:
        holds: the condition, true when the run supports the sentence (a ``bool`` or
            anything with a truth value, e.g. a one-element tensor).
        sentence: what the text says, as a reader would quote it.
        **values: the values the condition was computed from, shown when it fails.

    Raises:
        AssertionError: naming the sentence and the values, e.g.
            ``the text says "batch norm beats the plain network in every seed", but the run
            gives bn=[0.91, 0.89], plain=[0.90, 0.92]: change the text``.
    """
    if not isinstance(sentence, str) or not sentence:
        raise TypeError(f"sentence must be the text's claim as a non-empty str, got {sentence!r}")
    if not bool(holds):
        shown = ", ".join(f"{k}={_plain(v)!r}" for k, v in values.items()) or "no values"
        raise AssertionError(f'the text says "{sentence}", but the run gives {shown}: '
                             "change the text to what the run shows")


def in_seeds(flags: Iterable[Any]) -> str:
    """How many of the seeds a result held in, as the text says it: ``"in every seed"``
    (also ``"in both seeds"`` for two), ``"in 2 of 3 seeds"``, ``"in no seed"``.

    Args:
        flags: one truth value per seed.

    Raises:
        ValueError: when ``flags`` is empty.
    """
    flags = [bool(f) for f in flags]
    if not flags:
        raise ValueError("in_seeds needs one truth value per seed, got none")
    k, n = sum(flags), len(flags)
    if k == n:
        return "in both seeds" if n == 2 else "in every seed" if n > 1 else "in the one seed"
    if k == 0:
        return "in neither seed" if n == 2 else "in no seed"
    return f"in {k} of {n} seeds"


@dataclass(frozen=True)
class Claim:
    """One headline claim of a paper, side by side with this run.

    Args:
        claim: the claim, in a few words.
        paper: what the paper reports (its figure, typed: a cited fact).
        ours: what this run gives (from the run, formatted).
        reproduced: whether this run supports the claim: ``True``, ``False``, or a word
            such as ``"partly"``.
    """
    claim: str
    paper: str
    ours: str
    reproduced: bool | str

    def verdict(self) -> str:
        if self.reproduced is True:
            return "yes"
        if self.reproduced is False:
            return "no"
        return str(self.reproduced)


def claims_table(rows: Sequence[Claim]):
    """The chapter's closing table, as Markdown to glue (``glue("claims", claims_table(rows),
    display=False)``, shown by the ``{glue:md}`` directive): claim, the paper's figure, this
    run's, reproduced or not.

    Raises:
        TypeError: when a row is not a :class:`Claim`.
        ValueError: when there is no row.
    """
    from IPython.display import Markdown

    rows = list(rows)
    if not rows:
        raise ValueError("claims_table needs at least one Claim")
    for row in rows:
        if not isinstance(row, Claim):
            raise TypeError(f"each row must be a coursekit.book.Claim, got {type(row).__name__}")

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| Claim | Paper | This run | Reproduced |", "|---|---|---|---|"]
    lines += [f"| {cell(r.claim)} | {cell(r.paper)} | {cell(r.ours)} | {cell(r.verdict())} |" for r in rows]
    return Markdown("\n".join(lines))
