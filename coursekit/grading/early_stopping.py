"""Checks for the ``early_stopping`` assignment: the student's ``EarlyStopping`` class.

Each check feeds hand-made sequences of validation values to the student's class and to
:class:`coursekit.regularization.EarlyStopping`, and compares the attributes ``best``,
``best_epoch`` and ``num_bad_epochs`` right after construction, then, after every ``step``,
the returned decision and the attributes. At the first difference it replays the sequence
with the classic mistakes (patience off by one, a stop on an improving step with
``patience=0``, ``min_delta`` ignored or applied the wrong way, ``"max"`` treated as
``"min"``, the counter not reset, ``best_epoch`` not updated or counted from 1, NaN taken as
an improvement or as the first best, a sentinel such as ``inf`` shown instead of ``None``)
and names the one that explains the student's answers, in the words of the mode at hand::

    check_patience(EarlyStopping, points=4)
    check_min_delta(EarlyStopping, points=3)

Fairness: the sequences hold numbers and NaN only (never ±inf), and no value sits within
rounding error of the ``min_delta`` boundary unless all its numbers are exact binary
fractions, so ``value < best - min_delta``, ``best - value > min_delta`` and
``value + min_delta < best`` always agree (:func:`_audit` enforces it on every sequence).
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import torch
from torch import nn

from coursekit import regularization as _reference
from coursekit.grading import CheckFailure, call, check_own_work, expect_value_error

__all__ = ["check_patience", "check_min_delta", "check_mode_max", "check_best", "check_restore_best",
           "check_arguments", "check_random_sequences"]

_Reference = _reference.EarlyStopping
_READY_MADE = [(_reference, "EarlyStopping"), (_reference.early_stopping, "EarlyStopping")]


def _checks(fn):
    return check_own_work("EarlyStopping", _READY_MADE, what="early stopping (coursekit's EarlyStopping)")(fn)


NAN = float("nan")

# ---- the classic mistakes, as a plain re-implementation with switches

_RULE = {"min": "value < best - min_delta", "max": "value > best + min_delta"}
_WRONG_WAY = {"min": "value < best + min_delta", "max": "value > best - min_delta"}

# explanations; {mode}, {rule} (the mode's improvement test) and {wrong} are filled in
MISTAKES = {
    "late": "it stops one step late: a step without improvement adds 1 to num_bad_epochs, and step() "
            "returns True as soon as num_bad_epochs >= patience (after exactly `patience` such steps), "
            "not when num_bad_epochs exceeds patience.",
    "early": "it stops one step early: a step without improvement adds 1 to num_bad_epochs, and step() "
             "returns True when num_bad_epochs >= patience (after exactly `patience` such steps), not "
             "patience - 1.",
    "stops_on_improvement": "with patience=0 it stopped on a step that improved: an improving step never "
                            "stops training. Compare num_bad_epochs with patience only after a step "
                            "without improvement; then patience=0 stops at the first step that does not "
                            "improve, exactly like patience=1 (as in Keras and PyTorch Lightning).",
    "no_delta": "min_delta is ignored: in mode {mode!r} a value improves only if {rule}.",
    "delta_wrong_way": "min_delta is applied in the wrong direction: in mode {mode!r} an improvement must "
                       "beat best by more than min_delta ({rule}), not {wrong}.",
    "max_as_min": "mode 'max' is treated like 'min': in mode 'max' larger values are better ({rule}).",
    "no_reset": "num_bad_epochs is not reset to 0 after an improvement.",
    "best_epoch_stale": "best_epoch is not updated when a new best value is found.",
    "best_epoch_from_1": "best_epoch counts from 1; it is the 0-based index of the step call that set "
                         "best (the first call is epoch 0).",
    "nan_improves": "a NaN value is taken as an improvement (or replaces best); NaN is never an "
                    "improvement: math.isnan(value) must count as a step without improvement.",
    "nan_first_is_best": "a NaN first value became best: NaN is never an improvement, not even as the "
                         "first value. best and best_epoch stay None until a value that is a number "
                         "arrives, and the NaN step counts as a step without improvement (test "
                         "math.isnan(value) before `best is None`).",
}


def _explain(mistake: str, mode: str) -> str:
    return MISTAKES[mistake].format(mode=mode, rule=_RULE[mode], wrong=_WRONG_WAY[mode])


def _simulate(values, patience, min_delta, mode, mistake=None):
    """The trace ``[(stop, best, best_epoch, num_bad_epochs), ...]``, with one mistake or none."""
    best, best_epoch, bad, trace = None, None, 0, []
    for i, value in enumerate(values):
        if best is None and mistake == "nan_first_is_best":
            improved = True
        elif math.isnan(value):
            improved = mistake == "nan_improves"
        elif best is None or (mistake == "nan_improves" and math.isnan(best)):
            improved = True
        else:
            delta = 0.0 if mistake == "no_delta" else min_delta
            if mode == "max" and mistake != "max_as_min":
                improved = value > (best - delta if mistake == "delta_wrong_way" else best + delta)
            else:
                improved = value < (best + delta if mistake == "delta_wrong_way" else best - delta)
        if improved:
            best = value
            if mistake != "best_epoch_stale" or best_epoch is None:
                best_epoch = i + (mistake == "best_epoch_from_1")
            bad = bad if mistake == "no_reset" else 0
        else:
            bad += 1
        limit = {"late": patience + 1, "early": patience - 1}.get(mistake, patience)
        stop = bad >= limit and (not improved or mistake == "stops_on_improvement")
        trace.append((stop, best, best_epoch, bad))
    return trace


def _exact(x: float) -> bool:
    return math.isfinite(x) and (x * 1024).is_integer()


def _audit(values, patience, min_delta, mode) -> None:
    """Refuse (as a bug in the check) a sequence on which correct ways of writing the rule could
    disagree: an infinite value, or a value within rounding error of the min_delta boundary
    whose numbers are not all exact binary fractions."""
    best = None
    for value in values:
        if math.isinf(value):
            raise RuntimeError(f"check bug: the sequence {values} holds an infinite value")
        if math.isnan(value):
            continue
        if best is not None and min_delta > 0:
            gain = best - value if mode == "min" else value - best
            if abs(gain - min_delta) < 1e-9 and not all(map(_exact, (value, best, min_delta))):
                raise RuntimeError(f"check bug: {value} is on the min_delta={min_delta} boundary of "
                                   f"best={best} in {values}")
        if best is None or (value < best - min_delta if mode == "min" else value > best + min_delta):
            best = value


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


_ATTRIBUTES = ("best", "best_epoch", "num_bad_epochs")


def _state(stopper, what: str, when: str):
    state = []
    for attribute in _ATTRIBUTES:
        if not hasattr(stopper, attribute):
            raise CheckFailure(f"{what}: {when} the object has no attribute {attribute!r}; set best = None, "
                               f"best_epoch = None and num_bad_epochs = 0 in __init__, and keep them "
                               f"up to date in step().")
        state.append(getattr(stopper, attribute))
    best = state[0]
    if isinstance(best, torch.Tensor):
        best = best.item()
    if best is not None and not isinstance(best, bool):
        try:
            best = float(best)
        except (TypeError, ValueError):
            pass
    return (best, state[1], state[2])


def _student_trace(cls, values, what, **options):
    stopper = call(cls, **options, what=what)
    initial = _state(stopper, what, "right after construction")
    trace = []
    for i, value in enumerate(values):
        stop = call(stopper.step, value, what=f"step({value}) (call number {i})")
        if not isinstance(stop, bool):
            raise CheckFailure(f"{what}: step({value}) returned {stop!r}; it should return True or False.")
        trace.append((stop, *_state(stopper, what, f"after step({value})")))
    return initial, trace


def _sentinel_hint(got, expected) -> str | None:
    """A number shown where ``None`` is expected: a starting sentinel (inf, -1, ...) leaked out."""
    for name, g, e in zip(_ATTRIBUTES, got, expected):
        if e is None and g is not None:
            return (f"{name} must be None until a value improves (right after construction, and after "
                    f"a NaN first value), not {g!r}. A starting value such as math.inf or -1 inside "
                    f"your class is fine, but the attribute {name} must read None until the first "
                    f"improvement.")
    return None


def _differences(got, expected, names) -> str:
    return "; ".join(f"{n} {g!r} (expected {e!r})" for n, g, e in zip(names, got, expected) if not _same(g, e))


def _compare(cls, values: Sequence[float], *, patience=5, min_delta=0.0, mode="min") -> None:
    options = {"patience": patience, "min_delta": min_delta, "mode": mode}
    _audit(values, **options)
    what = "EarlyStopping(" + ", ".join(f"{k}={v!r}" for k, v in options.items()) + ")"
    initial, got = _student_trace(cls, values, what, **options)
    reference = _Reference(**options)
    expected_initial = (reference.best, reference.best_epoch, reference.num_bad_epochs)
    if not all(_same(a, b) for a, b in zip(initial, expected_initial)):
        lines = [f"{what}, right after construction (before any step()): "
                 + _differences(initial, expected_initial, _ATTRIBUTES)]
        hint = _sentinel_hint(initial, expected_initial)
        raise CheckFailure("\n".join(lines + [f"Likely mistake: {hint}"] * bool(hint)))
    expected = [(reference.step(v), reference.best, reference.best_epoch, reference.num_bad_epochs)
                for v in values]
    for i, (g, e) in enumerate(zip(got, expected)):
        if all(_same(a, b) for a, b in zip(g, e)):
            continue
        shown = ", ".join(f"{v:g}" for v in values[:i + 1])
        names = ("step() returned", *_ATTRIBUTES)
        lines = [f"{what}, values fed to step(): [{shown}]",
                 "  after the last one: " + _differences(g, e, names)]
        for mistake in MISTAKES:
            wrong = _simulate(values, patience, min_delta, mode, mistake)
            if all(_same(a, b) for x, y in zip(got, wrong) for a, b in zip(x, y)):
                lines.append(f"Likely mistake: {_explain(mistake, mode)}")
                break
        else:
            hint = _sentinel_hint(g[1:], e[1:])
            if hint:
                lines.append(f"Likely mistake: {hint}")
        raise CheckFailure("\n".join(lines))


@_checks
def check_patience(EarlyStopping) -> None:
    """Stop after exactly ``patience`` steps without improvement, never on an improving step;
    an improvement resets the count; ``patience=0`` stops at the first step that does not improve."""
    _compare(EarlyStopping, [1.0, 0.8, 0.9, 0.85, 0.81, 0.95], patience=3)
    _compare(EarlyStopping, [2.0, 2.5, 2.4], patience=1)
    _compare(EarlyStopping, [5.0, 4.0, 4.5, 4.4, 3.0, 3.5, 3.6, 3.7, 3.8], patience=3)
    _compare(EarlyStopping, [1.0, 1.0, 1.0, 1.0], patience=2)
    _compare(EarlyStopping, [3.0, 2.0, 1.0, 1.5, 0.5, 0.7], patience=0)
    _compare(EarlyStopping, [0.2, 0.4, 0.4, 0.5], patience=0, mode="max")


@_checks
def check_min_delta(EarlyStopping) -> None:
    """An improvement must beat the best by *more* than ``min_delta``, in the mode's direction."""
    _compare(EarlyStopping, [1.0, 1.01, 0.95, 0.85, 0.8], patience=4, min_delta=0.1)
    _compare(EarlyStopping, [1.0, 0.95, 0.93, 0.85, 0.84, 0.7], patience=4, min_delta=0.1)
    _compare(EarlyStopping, [1.0, 1.05, 0.97, 0.965, 0.955], patience=2, min_delta=0.02)
    _compare(EarlyStopping, [2.0, 1.75, 1.5, 1.25, 1.0], patience=3, min_delta=0.25)   # exactly 0.25 is not more
    _compare(EarlyStopping, [0.5, 0.54, 0.62, 0.6, 0.7, 0.71], patience=3, min_delta=0.05, mode="max")
    _compare(EarlyStopping, [0.5, 0.75, 0.8, 1.0, 1.25, 1.3], patience=2, min_delta=0.25, mode="max")


@_checks
def check_mode_max(EarlyStopping) -> None:
    """In mode ``"max"`` larger values are better (accuracies)."""
    _compare(EarlyStopping, [0.5, 0.6, 0.55, 0.58, 0.7, 0.65, 0.6], patience=2, mode="max")
    _compare(EarlyStopping, [0.9, 0.8, 0.95, 0.94], patience=3, mode="max")


@_checks
def check_best(EarlyStopping) -> None:
    """``best`` and ``best_epoch`` (0-based) follow the improvements, ``None`` before the first;
    NaN never improves, not even as the first value."""
    _compare(EarlyStopping, [3.0, 2.0, 2.5, 1.0, 1.5], patience=10)
    _compare(EarlyStopping, [1.0, NAN, 0.9, NAN, NAN], patience=2)
    _compare(EarlyStopping, [0.2, NAN, 0.1, 0.3], patience=3, mode="max")
    _compare(EarlyStopping, [NAN, 2.0, NAN, 1.5, 1.6], patience=3)
    _compare(EarlyStopping, [NAN, NAN, 0.5], patience=4, mode="max")
    _compare(EarlyStopping, [NAN, 1.0], patience=1)


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(3, 2)


@_checks
def check_restore_best(EarlyStopping) -> None:
    """``step(value, model)`` keeps a *copy* of the best ``state_dict``; ``restore(model)`` loads it."""
    model = _tiny_model()
    stopper = call(EarlyStopping, patience=5, restore_best=True, what="EarlyStopping(patience=5, restore_best=True)")
    weights = []
    for value in (1.0, 0.5, 0.7, 0.9):
        with torch.no_grad():
            model.weight.add_(1.0)
        weights.append(model.weight.detach().clone())
        call(stopper.step, value, model, what=f"step({value}, model)")
    call(stopper.restore, model, what="restore(model)")
    if torch.equal(model.weight, weights[-1]):
        raise CheckFailure("after restore(model) the model still has its latest weights, not those of "
                           "the best step (the second). Keep a copy of the state at each improvement: "
                           "{k: v.clone() for k, v in model.state_dict().items()} (state_dict() returns "
                           "references to the live tensors, which keep changing).")
    if not torch.equal(model.weight, weights[1]):
        raise CheckFailure("after restore(model) the model's weights are not those of the best step "
                           "(the second value, 0.5).")


@_checks
def check_arguments(EarlyStopping) -> None:
    """``ValueError`` naming the value for an unknown mode, a negative patience or min_delta."""
    for options, value in (({"mode": "maximum"}, "maximum"), ({"patience": -1}, "-1"),
                           ({"min_delta": -0.5}, "-0.5")):
        text = ", ".join(f"{k}={v!r}" for k, v in options.items())
        expect_value_error(EarlyStopping, **options, what=f"EarlyStopping({text})", names=(value,),
                           why="a mistake in the arguments must not pass silently.")


@_checks
def check_random_sequences(EarlyStopping, *, seed: int = 0, runs: int = 30) -> None:
    """Random walks of validation values (with plateaus and NaNs) under random settings,
    patience 0 included. The values move on a grid of 0.01 and ``min_delta`` is 0, 0.025 or
    0.075, so no value is within rounding error of the ``min_delta`` boundary."""
    rng = random.Random(seed)
    for _ in range(runs):
        mode = rng.choice(["min", "max"])
        value, values = 1.0, []
        for _ in range(rng.randint(5, 25)):
            r = rng.random()
            if r < 0.1:
                values.append(NAN)
                continue
            if r > 0.8:
                value = value            # a plateau: equal values do not improve
            else:
                value = round(value + rng.choice([-1, 1]) * rng.choice([0.01, 0.05, 0.1, 0.2]), 2)
            values.append(value)
        _compare(EarlyStopping, values, patience=rng.randint(0, 4),
                 min_delta=rng.choice([0.0, 0.0, 0.025, 0.075]), mode=mode)
