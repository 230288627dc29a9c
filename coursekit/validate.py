"""Argument checks shared by coursekit's functions: each raises ``ValueError`` naming the
argument, what is allowed and the actual value, e.g.
``ValueError("epochs must be a positive integer, got 0")``.

They are exceptions, not ``assert`` (which ``python -O`` strips), and they return the value,
so a check reads as an assignment: ``k = positive_int(k, "k")``.
"""
from __future__ import annotations

import math
import numbers

__all__ = ["positive_int", "positive_number", "non_negative_number", "probability", "non_negative_int"]


def _is_real(value) -> bool:
    """A real number that is not a bool (``True`` is an ``int`` to Python)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(value, name: str, *, what: str = "a positive integer"):
    """``value`` if it is an ``int`` ≥ 1 (not a bool), else ``ValueError`` naming ``name``.

    ``what`` words the requirement in the message (e.g. ``"a positive number of steps"``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def positive_number(value, name: str, *, what: str = "positive"):
    """``value`` if it is a finite real number > 0, else ``ValueError`` naming ``name``."""
    if not (_is_real(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def non_negative_number(value, name: str, *, what: str = "a number >= 0"):
    """``value`` if it is a real number ≥ 0 (not NaN), else ``ValueError`` naming ``name``."""
    if not (_is_real(value) and value >= 0):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def probability(value, name: str, *, what: str = "a number in [0, 1]"):
    """``value`` if it is a real number in ``[0, 1]``, else ``ValueError`` naming ``name``."""
    if not (_is_real(value) and 0 <= value <= 1):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def non_negative_int(value, name: str, *, what: str = "an integer >= 0"):
    """``value`` if it is an ``int`` ≥ 0 (not a bool), else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value
