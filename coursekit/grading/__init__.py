"""The machinery behind every assignment's check cells.

A *check* takes the student's callable or class, runs it next to the ``coursekit``
reference on seeded random inputs of several shapes plus edge cases, and compares type,
shape, dtype and values (with :func:`torch.testing.assert_close`, never ``==``). It

- runs quietly: warnings and anything written to stderr are swallowed, because nbgrader
  scores a test cell 0 as soon as it writes to stderr;
- fails with an :class:`AssertionError` whose message teaches: what was called, what was
  expected, what came back, and the likely mistake when it recognises one; when the
  student's code raised, the error and the line of the student's own code that raised it
  (see :func:`call`)::

      batch_norm(x of shape (8, 4, 5) torch.float32, training=True, eps=1e-05) raised RuntimeError: The size of tensor a (5) must match the size of tensor b (4) at non-singleton dimension 2
      Likely cause: running_mean, running_var, weight and bias all have shape (C,): ...
      In your code, Cell In[3], line 4, in batch_norm:
          return (input - mean) * weight + bias

- returns its points, so that a test cell whose last expression is a check is worth
  exactly what the check returns (nbgrader's partial credit).

The checks of one assignment live in a module of their own (``coursekit.grading.scaling``);
this module holds what they share. A check is written as a plain function decorated with
:func:`check`::

    @check
    def check_square(student_fn, *, seed=0):
        x = torch.randn(5, generator=torch.Generator().manual_seed(seed))
        got = call(student_fn, x, what="square(x)")
        assert_tensor(got, x * x, what="square(x)")

    check_square(my_square, points=2)   # -> 2.0, or an AssertionError that teaches
"""
from __future__ import annotations

import contextlib
import functools
import io
import linecache
import os
import sys
import sysconfig
import traceback
import warnings
from typing import Callable, Mapping

import torch
from torch.testing import assert_close as _assert_close  # kept private: see integrity below

from coursekit.validate import non_negative_number

__all__ = ["check", "check_own_work", "quiet", "call", "student_line", "expect_value_error", "forbid",
           "assert_tensor", "preview", "exact", "precision_scale", "precision_mistakes",
           "normalized", "EPS_OUTSIDE_SQRT", "CheckFailure"]


class CheckFailure(AssertionError):
    """A failed check. Its message is meant for the student."""


@contextlib.contextmanager
def quiet():
    """Silence Python warnings and everything written to stderr, also by C/C++ code.

    nbgrader gives 0 points to a test cell that writes to stderr, even when every check in
    it passed, so a correct answer that triggers, say, a PyTorch ``UserWarning`` would lose
    its points. Inside this context stderr goes nowhere: at the Python level
    (``sys.stderr``) and at the file-descriptor level (fd 2), where extension modules and
    Jupyter kernels write.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()), _fd2_to_devnull():
            yield


@contextlib.contextmanager
def _fd2_to_devnull():
    try:
        sys.__stderr__ and sys.__stderr__.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 (some embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def check(fn: Callable) -> Callable:
    """Turn a function that raises on a wrong answer into a graded check.

    The decorated function gains a keyword argument ``points`` (default 1). It runs in
    :func:`quiet`, and returns ``float(points)`` when nothing failed. A :class:`CheckFailure`
    keeps its message; any other exception escaping the check is a bug in the check and
    propagates unchanged.
    """

    @functools.wraps(fn)
    def graded(*args, points: float = 1.0, **kwargs) -> float:
        non_negative_number(points, "points", what="a non-negative number")
        with quiet():
            try:
                fn(*args, **kwargs)
            except CheckFailure as failure:
                message = str(failure)
            else:
                return float(points)
        # raised outside quiet() and outside the check's frames: the student sees the message
        raise CheckFailure(message)

    return graded


def check_own_work(name: str, ready_made, *, what: str) -> Callable:
    """Like :func:`check`, for an assignment that asks students to write ``name`` themselves.

    The decorated check refuses a function that comes from ``coursekit`` or ``torch``, and
    while it runs, calling any of the ``ready_made`` functions (pairs ``(owner, attribute)``,
    see :func:`forbid`) fails with a message saying that ``what`` must be written with
    plain tensor operations.
    """
    reason = (f"your code calls a ready-made {what}; write it with plain tensor operations "
              f"(mean, var, sqrt, reshape, ...).")

    def decorate(body: Callable) -> Callable:
        @functools.wraps(body)
        def run(student_fn, *args, **kwargs):
            module = getattr(student_fn, "__module__", "") or ""
            if module.startswith(("coursekit", "torch")):
                raise CheckFailure(f"{name} must be your own function, written in the solution "
                                   f"cell; it comes from {module!r}.")
            with forbid(ready_made, reason=reason):
                body(student_fn, *args, **kwargs)
        return check(run)
    return decorate


def call(fn: Callable, *args, what: str, hint: str | None = None, **kwargs):
    """Call student code; an exception it raises becomes a :class:`CheckFailure` naming the
    call, the error, the likely cause (``hint``, when given) and the line of the student's
    own code where it was raised (see :func:`student_line`)."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailure(f"{what} raised NotImplementedError: replace the "
                           f"`raise NotImplementedError()` line with your implementation.") from None
    except CheckFailure as e:   # raised by a check's guard inside the student's code (forbid)
        raise CheckFailure(f"{what}: {e}" + student_line(e)) from None
    except Exception as e:  # noqa: BLE001 - any error in student code is reported, not raised
        message = f"{what} raised {type(e).__name__}: {e}"
        raise CheckFailure(message + (f"\nLikely cause: {hint}" if hint else "") + student_line(e)) from None


# Frames in these folders are not the student's: the checks and PyTorch.
_NOT_STUDENT = tuple(os.path.join(os.path.dirname(os.path.abspath(m.__file__)), "")
                     for m in (sys.modules[__name__.split(".")[0]], torch))
# Frames in the Python installation and its packages are the student's only if no other is.
_LIBRARIES = tuple(os.path.join(os.path.abspath(path), "")
                   for path in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})


def student_line(error: BaseException) -> str:
    """Where the student's code raised ``error``, as lines to append to a message::

        In your code, Cell In[3], line 4, in batch_norm:
            return (input - mean) * weight + bias

    from the last frame of its traceback that is the student's: not in ``coursekit`` or
    ``torch``, and in the Python installation or an installed package only when no other
    frame is left. A Jupyter cell is named as IPython names it (``Cell In[3]``), any other
    file by its path; the source line comes from :mod:`linecache` (where IPython keeps the
    cells) and is left out when unknown. Empty when no frame is the student's. An error
    raised in the trusted grader's worker carries its line already (``student_line``)."""
    remote = getattr(error, "student_line", None)
    if isinstance(remote, str):
        return remote
    try:
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if not os.path.abspath(f.filename).startswith(_NOT_STUDENT)]
    except Exception:  # noqa: BLE001 - a strange traceback must not hide the student's error
        return ""
    own = [f for f in frames if not f.filename.startswith("<frozen")
           and not os.path.abspath(f.filename).startswith(_LIBRARIES)]
    frame = (own or frames or [None])[-1]
    if frame is None:
        return ""
    source = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
    where = f"\nIn your code, {_place(frame.filename)}, line {frame.lineno}, in {frame.name}"
    if not source:
        return where + "."
    return where + ":\n    " + (source if len(source) <= 200 else source[:197] + "...")


def _place(filename: str) -> str:
    """A Jupyter cell as IPython shows it (``Cell In[5]``); any other file by its name."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython else None
        count = shell.compile._filename_map.get(filename) if shell else None
    except Exception:  # noqa: BLE001 - IPython internals differ between versions
        count = None
    return f"Cell In[{count}]" if count is not None else filename


def expect_value_error(fn: Callable, *args, what: str, why: str, names: tuple[str, ...] = (),
                       example: str | None = None, **kwargs) -> None:
    """Call student code that must reject its input with a ``ValueError`` whose message
    contains each of ``names`` (the bad value, ...); anything else is a :class:`CheckFailure`
    saying ``why`` the input is an error (and showing ``example``, a good message)."""
    try:
        result = fn(*args, **kwargs)
    except ValueError as e:
        if all(name in str(e) for name in names):
            return
        shown = f" ({', '.join(names)})" if names else ""
        raise CheckFailure(f"{what} raised ValueError({str(e)!r}); a clear message names the bad value"
                           f"{shown}" + (f", e.g. {example!r}" if example else "") + ".") from None
    except NotImplementedError:
        raise CheckFailure(f"{what} raised NotImplementedError: replace the `raise NotImplementedError()` "
                           f"line with your implementation.") from None
    except Exception as e:  # noqa: BLE001 - any other error is the wrong kind
        raise CheckFailure(f"{what} raised {type(e).__name__}: {e}; it should raise ValueError: {why}"
                           + student_line(e)) from None
    kind = type(result).__name__
    article = "an" if kind[0] in "AEIOUaeiou" else "a"
    raise CheckFailure(f"{what} returned {article} {kind} instead of raising ValueError: {why}")


@contextlib.contextmanager
def forbid(targets, *, reason: str):
    """Inside the block, calling any of ``targets`` (pairs ``(owner, attribute name)``, e.g.
    ``(torch.nn.functional, "batch_norm")``) raises a :class:`CheckFailure` with ``reason``:
    an assignment that asks students to implement a function checks that they did not call
    the ready-made one. The originals are restored on exit. This catches honest shortcuts,
    not determined cheating (see the integrity notes of the grading documentation)."""
    saved = [(owner, name, getattr(owner, name)) for owner, name in targets]

    def refuse(*args, **kwargs):
        raise CheckFailure(reason)

    try:
        for owner, name, _ in saved:
            setattr(owner, name, refuse)
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _describe(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of shape {tuple(x.shape)}, dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"[:200]


def preview(t: torch.Tensor, n: int = 6) -> str:
    """The first ``n`` values of ``t`` (flattened) for a failure message: ``"[0.5, -1.25 ...]"``."""
    flat = t.detach().reshape(-1)[:n].tolist()
    more = " ..." if t.numel() > n else ""
    return "[" + ", ".join(f"{v:.6g}" for v in flat) + more + "]"


def assert_tensor(got, expected: torch.Tensor, *, what: str,
                  mistakes: Mapping[str, torch.Tensor | Callable[[torch.Tensor, torch.Tensor], bool]]
                  | None = None,
                  scale: torch.Tensor | None = None) -> None:
    """Compare a student's result with the reference and explain any difference.

    Checks, in order: that ``got`` is exactly a ``torch.Tensor`` (an object that merely
    claims equality does not pass), its shape, its dtype, NaN/inf, then the values with
    :func:`torch.testing.assert_close` and the default tolerances of the dtype.

    Args:
        got: what the student's code returned.
        expected: the reference result.
        what: the call that produced ``got``, as the student would write it.
        mistakes: known wrong answers, ``{explanation: tensor that mistake produces}``.
            When ``got`` matches one (and it differs from ``expected``), its explanation
            is the hint. A value may also be a predicate ``(got, expected) -> bool`` (for a mistake
            whose result cannot be reproduced exactly, such as a rounding error; see
            :func:`precision_mistakes`), tried in its turn.
        scale: the magnitude that rounding errors are relative to, broadcastable to
            ``expected`` (e.g. per column). Values are compared after dividing by it, so
            a float32 result is judged by float32 precision of the numbers it came from.
    """
    if type(got) is not torch.Tensor:
        raise CheckFailure(f"{what} should return a torch.Tensor, but returned a "
                           f"{_describe(got)}.")
    if got.shape != expected.shape:
        raise CheckFailure(f"{what} returned shape {tuple(got.shape)}, expected "
                           f"{tuple(expected.shape)}. Did you reduce over the wrong dimension "
                           f"or forget to keep one?")
    if got.dtype != expected.dtype:
        raise CheckFailure(f"{what} returned dtype {got.dtype}, expected {expected.dtype}: "
                           f"the result should keep the dtype of the input (avoid creating "
                           f"float32 tensors or converting with .float()/.double()).")
    got = got.detach()
    bad = ~torch.isfinite(got) & torch.isfinite(expected)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise CheckFailure(f"{what} returned {got[idx].item()} at index {idx}, where "
                           f"{expected[idx].item():.6g} was expected. A NaN or inf usually "
                           f"means a division by zero (is some denominator 0 for this input?) "
                           f"or an overflow.")
    if _close(got, expected, scale):
        return
    diff = (got.to(expected.device) - expected).abs()
    diff = torch.where(torch.isnan(diff), torch.zeros_like(diff), diff)
    idx = tuple(int(i) for i in (diff == diff.max()).nonzero()[0])
    lines = [f"{what} returned wrong values.",
             f"  expected: {preview(expected)}",
             f"  got:      {preview(got)}",
             f"  largest difference {diff.max().item():.3g} at index {idx}"]
    for explanation, wrong in (mistakes or {}).items():
        if callable(wrong):
            if wrong(got, expected):
                lines.append(f"Likely mistake: {explanation}")
                break
            continue
        wrong = wrong.to(expected.dtype)
        if _close(got, wrong, scale) and not _close(wrong, expected, scale):
            lines.append(f"Likely mistake: {explanation}")
            break
    raise CheckFailure("\n".join(lines))


def _close(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | None) -> bool:
    if a.shape != b.shape:
        return False
    b = b.detach().to(a.device)
    if scale is not None:
        scale = scale.to(a.device, a.dtype)
        a, b = a / scale, b / scale
    try:
        _assert_close(a, b, equal_nan=True)
    except AssertionError:
        return False
    return True


def exact(fn, *args, **kwargs):
    """The reference computed in float64 and rounded to the dtype of the first tensor: the
    right answer, without the rounding errors of a float32 computation (a student's float32
    answer has its own; a float64 computation cast back has none)."""
    dtype = next(a.dtype for a in args if isinstance(a, torch.Tensor))
    as64 = [a.detach().to(torch.float64, copy=True) if isinstance(a, torch.Tensor) else a for a in args]
    out = fn(*as64, **kwargs)
    if isinstance(out, tuple):
        return tuple(o if o is None else o.to(dtype) for o in out)
    return out.to(dtype)


def precision_scale(x, dims, keepdim=True):
    """How many times a float32 result's rounding errors exceed float32's own precision,
    per channel: ``(mean**2 + var) / var``. A normalized value is computed from values of
    magnitude up to sqrt(mean**2 + var); its variance, in one pass (mean(x**2) - mean(x)**2,
    a correct formula), from squares of that size, which loses digits when a channel's mean
    is large compared with its spread. 1 in float64, where no data of the checks comes close."""
    if x.dtype == torch.float64:
        return torch.ones((), dtype=torch.float64)
    x64 = x.double()
    var, mean = torch.var_mean(x64, dim=dims, correction=0, keepdim=keepdim)
    return ((mean ** 2 + var) / (var + 1e-5)).clamp_min(1.0)


def precision_mistakes(x, dtypes, mistakes: dict) -> dict:
    """The mistakes to recognise in a result for ``x``. In a lower precision, after the same
    values passed in float64, a formula mistake is ruled out: only digits can be lost."""
    if x.dtype != torch.float64 and torch.float64 in dtypes:
        return {f"the same input in float64 gave the right values, so this {x.dtype} result lost "
                f"more digits than {x.dtype} allows. Look for a conversion to a lower precision "
                f"(.half(), .bfloat16()) or a subtraction of nearly equal large numbers.":
                lambda got, expected: True}
    return mistakes


# --- wrong variants shared by the normalization checks ---------------------------------------

EPS_OUTSIDE_SQRT = "eps is added outside the square root: use sqrt(var + eps), not sqrt(var) + eps."


def normalized(x: torch.Tensor, dims, eps: float, *, correction: int = 0,
               eps_outside: bool = False) -> torch.Tensor:
    r"""``x`` normalized over ``dims``, :math:`(x - \mu) / \sqrt{\sigma^2 + \epsilon}`, or one of
    its classic mistakes, to recognise in a student's result.

    Args:
        x: the input.
        dims: the dimensions that one mean and one variance are taken over (the wrong ones,
            for a "wrong dimensions" mistake).
        eps: :math:`\epsilon`; 0 for the "eps is missing" mistake.
        correction: 0 for the biased variance (right), 1 for the unbiased one (a mistake).
            Default: 0.
        eps_outside: the mistake :math:`\sqrt{\sigma^2} + \epsilon`. Default: ``False``.

    Returns:
        a tensor of the shape of ``x``, without scale or shift.
    """
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, correction=correction, keepdim=True)
    return (x - mean) / ((var.sqrt() + eps) if eps_outside else torch.sqrt(var + eps))
