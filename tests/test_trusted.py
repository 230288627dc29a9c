"""The trusted checker: the wire's plain data, the proxies' semantics across the process
boundary, and correct solutions in other styles scoring every point when the score is
computed outside the student's process (coursekit.classroom.checker, worker, wire)."""
from __future__ import annotations

import json
import math
import os
import struct
import time

import pytest
import torch
from torch import nn

from coursekit import course as registry
from coursekit.classroom import checker, sandbox, wire
from conftest import trusted_spec

pytestmark = pytest.mark.slow   # sandboxed workers: `make test-fast` leaves these out

# --------------------------------------------------------------------------- the wire


def roundtrip(value):
    blobs: list = []
    data = wire.encode(value, blobs)
    return wire.decode(json.loads(json.dumps(data)), blobs)


@pytest.mark.parametrize("dtype", list(wire.DTYPES.values()))
def test_a_tensor_crosses_exactly_in_every_dtype(dtype):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 0 if dtype == torch.bool else 4, generator=gen) * 100)
    for t in (x, torch.randn(2, 3, 5, generator=gen) * 3, torch.tensor(2.5), torch.randn(7, generator=gen)[::2]):
        t = t.to(dtype)
        got = roundtrip(t)
        assert type(got) is torch.Tensor and got.dtype == t.dtype and got.shape == t.shape
        assert torch.equal(got, t) or (got.is_floating_point() and torch.equal(got.isnan(), t.isnan()))


def test_plain_values_keep_their_types():
    value = (None, True, 3, -2.5, math.nan, math.inf, -math.inf, "é", [1, (2, 3)], {"a": 1, 2: [None]},
             torch.float16, ())
    got = roundtrip(value)
    assert type(got) is tuple and got[0] is None and got[1] is True and type(got[2]) is int
    assert math.isnan(got[4]) and got[5] == math.inf and got[6] == -math.inf and got[7] == "é"
    assert got[8] == [1, (2, 3)] and got[9] == {"a": 1, 2: [None]} and got[10] is torch.float16 and got[11] == ()


def test_meta_tensors_and_requires_grad_cross():
    got = roundtrip([torch.empty(4, 5, device="meta"), torch.ones(2, requires_grad=True)])
    assert got[0].device.type == "meta" and got[0].shape == (4, 5)
    assert got[1].requires_grad and got[1].is_leaf


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", nn.Linear(2, 2), torch.zeros(2, dtype=torch.uint16),
                                   nn.Parameter(torch.ones(2))])
def test_anything_else_is_refused_by_the_encoder(value):
    with pytest.raises(wire.WireError):
        wire.encode(value, [])


@pytest.mark.parametrize("data, blobs, words", [
    ({"tensor": 0, "dtype": "float32", "shape": [2, 2]}, [b"\0" * 15], "needs 16 bytes, got 15"),
    ({"tensor": 0, "dtype": "object", "shape": [1]}, [b"\0"], "unknown dtype"),
    ({"tensor": 3, "dtype": "float32", "shape": [1]}, [b"\0" * 4], "malformed"),
    ({"tensor": 0, "dtype": "float32", "shape": [-1]}, [b""], "malformed"),
    ({"pickle": "cos\nsystem\n(S'echo hi'\ntR."}, [], "unknown value tag 'pickle'"),
    ({"dict": [[[1], 2]]}, [], "cannot be hashed"),
    ({"dict": [[1]]}, [], "pair"),
    ({}, [], "not an encoded value"),
])
def test_a_hostile_value_is_refused_with_what_was_wrong(data, blobs, words):
    with pytest.raises(wire.WireError, match=words.replace("(", r"\(")):
        wire.decode(data, blobs)


def test_a_value_nested_too_deep_is_refused():
    deep: list = []
    for _ in range(wire.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(wire.WireError, match="deeper"):
        wire.encode(deep, [])
    with pytest.raises(wire.WireError, match="deeper"):
        wire.decode(json.loads(json.dumps(deep)), [])


def _pipe_with(data: bytes) -> wire.Reader:
    read, write = os.pipe()
    os.write(write, data)
    os.close(write)
    return wire.Reader(read)


def test_messages_are_framed_and_a_broken_frame_is_an_error():
    read, write = os.pipe()
    header, blobs = {"op": "call", "x": [1.5]}, [b"abc", b""]
    wire.write_message(write, header, blobs)
    assert wire.Reader(read).read(timeout=5) == (header, blobs)
    os.close(write)
    with pytest.raises(wire.WireClosed):
        wire.Reader(read).read(timeout=5)
    with pytest.raises(wire.WireError, match="larger than"):   # a claimed size is not believed
        _pipe_with(struct.pack("<QI", wire.MAX_MESSAGE + 1, 0)).read(timeout=5)
    with pytest.raises(wire.WireError, match="not JSON"):
        _pipe_with(struct.pack("<QI", 3, 0) + b"{x}").read(timeout=5)
    with pytest.raises(wire.WireError, match="not a JSON object"):
        _pipe_with(struct.pack("<QI", 2, 0) + b"[]").read(timeout=5)
    read, write = os.pipe()   # nothing comes: a deadline, not a hang
    with pytest.raises(wire.WireTimeout):
        wire.Reader(read).read(timeout=0.2)
    os.close(write)


# --------------------------------------------------------------------------- proxies

TOY = '''
import torch

class Counter:
    def __init__(self, start=0):
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.count = start

    def add(self, n=1):
        self.count += n
        return self

    def weird(self):
        return {1, 2}


def bump_(t, by=1.0):
    with torch.no_grad():
        t.add_(by)
    return t


def square(x):
    return x * x


def fails(x):
    y = x + 1
    return y.reshape(7, 7)


def keeps(model, value):
    with torch.no_grad():
        model.weight.mul_(value)
    model.eval()
    return model.weight.sum().item()


def draws(gen):
    return torch.rand(3, generator=gen)


def uses_ready_made(x):
    f = getattr(torch.nn.functional, "batch" + "_norm")
    return f(x, None, None, training=True)


def uses_aten(x):
    return torch.ops.aten.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)[0]


def imports_sklearn():
    import sklearn.preprocessing
    return 1
'''
NAMES = ["Counter", "bump_", "square", "fails", "keeps", "draws", "uses_ready_made", "uses_aten", "imports_sklearn"]


@pytest.fixture(scope="module")
def toy():
    """The toy functions, defined in a worker in the sandbox (a plain process without bubblewrap)."""
    worker = checker.WorkerProcess(bwrap=sandbox.bwrap_path(), limits=sandbox.Limits())
    session = checker.Session(worker)
    session.deadline = time.monotonic() + 600
    reply, _ = session.request({"op": "exec", "cells": [["Cell In[1]", TOY, True]], "graded": NAMES,
                                "blocked": list(checker.BLOCKED), "allowed": checker.ALLOWED,
                                "forbidden": ["batch_norm", "native_batch_norm"], "timeout": 30})
    assert reply["errors"] == [] and reply["defined"] == NAMES
    names = {}
    for name in NAMES:
        got, blobs = session.request({"op": "get", "name": name})
        names[name] = session.decode(got["value"], blobs, name)
    yield session, names
    worker.close()


def test_a_function_computes_in_the_worker_and_keeps_dtype_and_gradients(toy):
    session, f = toy
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = f["square"](x)
    assert type(y) is torch.Tensor and y.dtype == torch.float64 and torch.equal(y.detach(), (x * x).detach())
    assert y.grad_fn is not None
    g = torch.randn(4, 3, dtype=torch.float64)
    y.backward(g)                       # the backward pass runs in the worker
    assert torch.allclose(x.grad, 2 * x.detach() * g)
    with torch.no_grad():
        assert not f["square"](x).requires_grad


def test_in_place_changes_and_identity_come_back(toy):
    session, f = toy
    t = torch.zeros(3, requires_grad=True)
    got = f["bump_"](t, by=2.0)
    assert got is t and torch.equal(t.detach(), torch.full((3,), 2.0)) and t.is_leaf and t.requires_grad
    model = nn.Linear(3, 2)
    before = model.weight.detach().clone()
    total = f["keeps"](model, 3.0)
    assert torch.allclose(model.weight.detach(), 3 * before) and not model.training
    assert total == pytest.approx(model.weight.sum().item(), rel=1e-6)
    f["keeps"](model, 0.5)              # the worker's copy of the same model is updated, not remade
    assert torch.allclose(model.weight.detach(), 1.5 * before)
    gen = torch.Generator().manual_seed(5)
    first = f["draws"](gen)
    second = f["draws"](gen)            # the generator's state came back after the first call
    reference = torch.Generator().manual_seed(5)
    assert torch.equal(first, torch.rand(3, generator=reference)) and torch.equal(second, torch.rand(3, generator=reference))


def test_a_class_makes_objects_that_live_in_the_worker(toy):
    session, f = toy
    counter = f["Counter"](start=2)
    assert type(counter).__name__ == "Counter" and counter.count == 2
    assert counter.add(3) is counter and counter.count == 5     # a method returning self
    counter.count = 10
    assert counter.add().count == 11
    assert not hasattr(counter, "missing")
    weird = counter.weird()           # not plain data: only the type's name crossed
    assert type(weird).__name__ == "set" and weird != {1, 2}


def test_an_exception_comes_back_with_type_message_and_line(toy):
    session, f = toy
    with pytest.raises(ValueError, match="start must be >= 0, got -1") as raised:
        f["Counter"](-1)
    assert "in __init__" in raised.value.student_line
    with pytest.raises(RuntimeError, match="shape '\\[7, 7\\]' is invalid") as raised:
        f["fails"](torch.ones(3))
    assert "Cell In[1], line" in raised.value.student_line and "y.reshape(7, 7)" in raised.value.student_line
    from coursekit.grading import student_line
    assert student_line(raised.value) == raised.value.student_line


@pytest.mark.parametrize("name", ["uses_ready_made", "uses_aten"])
def test_a_forbidden_function_by_any_route_fails_the_call_and_is_remembered(toy, name):
    session, f = toy
    from coursekit.grading import CheckFailure
    with pytest.raises(CheckFailure, match="ready-made"):
        f[name](torch.randn(4, 3))
    assert session.forbidden[name]
    with pytest.raises(CheckFailure):   # the name stays refused
        f[name](torch.randn(4, 3))


def test_an_import_of_what_a_solution_may_not_use_is_refused_and_noted(toy):
    session, f = toy
    with pytest.raises(ModuleNotFoundError, match="sklearn is not available to a solution: a solution may use torch"):
        f["imports_sklearn"]()
    assert "sklearn" in session.blocked or "sklearn.preprocessing" in session.blocked


# --------------------------------------------------------------------------- correct solutions


def with_answers(nb: dict, answers: dict[str, str]) -> dict:
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        gid = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell["source"] = answers[gid]
    return nb


def _styles():
    import test_fairness
    import test_fairness_scaling
    import test_grading_early_stopping
    rows = [(a, s, answers) for a, s, answers in test_fairness.STYLES]
    rows += [("scaling", s, answers) for s, answers in test_fairness_scaling.STYLES]
    rows += [("early_stopping", s, {"early_stopping": source}) for s, source in test_grading_early_stopping.FAIR.items()]
    by_assignment: dict = {}
    for assignment, style, answers in rows:
        by_assignment.setdefault(assignment, []).append((style, answers))
    return by_assignment


@pytest.mark.slow
@pytest.mark.parametrize("assignment", list(registry.ASSIGNMENTS))
def test_every_correct_style_gets_every_point_from_the_trusted_checker(assignment):
    """The fairness tables' correct solutions in other styles (and the instructor's own),
    scored outside the student's process: every autograded cell, hidden tests included,
    gets its full points, as in the notebook."""
    spec, solution = trusted_spec(assignment)
    styles = [("solution", {})] + _styles().get(assignment, [])
    worker = checker.WorkerProcess(bwrap=sandbox.bwrap_path(), limits=sandbox.Limits())
    try:
        for style, answers in styles:
            result = checker.check_notebook(spec, with_answers(solution, answers), bwrap=sandbox.bwrap_path(),
                                            worker=worker)
            full = {gid: points for gid, _, points in spec.tests}
            assert result.scores == full, (style, result.messages, result.problems)
            assert not result.forbidden and not result.blocked, (style, result.forbidden, result.blocked)
    finally:
        worker.close()
