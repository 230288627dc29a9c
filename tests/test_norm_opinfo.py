"""coursekit.norm against torch.nn.functional on the samples of PyTorch's own operator tests.

PyTorch describes the test inputs of each operator in its OpInfo database
(``torch.testing._internal.common_methods_invocations.op_db``, shipped with torch): for
``nn.functional.batch_norm``, ``layer_norm``, ``instance_norm`` and ``group_norm`` they
include odd eps and momenta (negative ones too), single channels, missing affine
parameters, running statistics, and empty batches. For every sample, in float32 and
float64, coursekit's function and torch's must agree on the forward value, on the gradients
of every input that requires grad (one random ``grad_output`` for both), and on the running
statistics that the call updates in place.

The samples are made in a child process and loaded here: importing torch's internal test
suite changes the process that imports it (it freezes the ``torch.backends`` flags, which
``coursekit.train`` sets, and needs the ``expecttest`` package), and a test must not do
that to the rest of the suite.
"""
from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from coursekit import norm

pytestmark = pytest.mark.slow   # see pyproject.toml's markers: `make test-fast` leaves these out

# OpInfo name -> (coursekit's function, torch's function). The batch_norm entry has a
# second variant, "without_cudnn", which disables cuDNN around F.batch_norm: on the CPU its
# samples and its function are those of the first one, and both variants are run.
OPS = {
    "nn.functional.batch_norm": (norm.batch_norm, F.batch_norm),
    "nn.functional.layer_norm": (norm.layer_norm, F.layer_norm),
    "nn.functional.instance_norm": (norm.instance_norm, F.instance_norm),
    "nn.functional.group_norm": (norm.group_norm, F.group_norm),
}
DTYPES = [torch.float32, torch.float64]

# The samples or options that cannot apply, each with its reason:
# (op, test, which samples, predicate on the bound arguments, reason). Every rule must
# match at least one sample, so that the table stays true when torch's samples change.
# The parity test itself (forward, backward, running statistics) runs every sample.
NOT_APPLICABLE = [
    ("nn.functional.batch_norm", "batch_norm_backward", "training=False",
     lambda a: not a["training"],
     "batch_norm_backward is the gradient of training mode, through the batch statistics; "
     "in evaluation mode batch norm is an affine map of the input, covered by the parity test"),
    ("nn.functional.batch_norm", "batch_norm_backward", "the 1-D empty input of shape (0,)",
     lambda a: a["input"].dim() < 2,
     "batch_norm_backward takes an (N, C) or (N, C, *) input; a 1-D input has no channel "
     "dimension (F.batch_norm returns it as it is, and so does coursekit.batch_norm: the "
     "parity test runs it)"),
]


_MAKE_SAMPLES = r"""
import sys
import torch
from torch.testing._internal.common_methods_invocations import op_db

names, path = sys.argv[1].split(","), sys.argv[2]
torch.manual_seed(0)
samples = {}
for opinfo in op_db:
    if opinfo.name in names:
        for dtype in (torch.float32, torch.float64):
            key = f"{opinfo.name}|{opinfo.variant_test_name}|{dtype}"
            samples[key] = [(s.input, tuple(s.args), dict(s.kwargs))
                            for s in opinfo.sample_inputs(device="cpu", dtype=dtype, requires_grad=True)]
torch.save(samples, path)
"""


@pytest.fixture(scope="module")
def opinfo_samples(tmp_path_factory):
    """{(op name, dtype): [(variant, index, (input, args, kwargs)), ...]} from torch's op_db."""
    path = tmp_path_factory.mktemp("opinfo") / "samples.pt"
    proc = subprocess.run([sys.executable, "-c", _MAKE_SAMPLES, ",".join(OPS), str(path)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        pytest.fail("could not make the OpInfo samples in a child process (torch's test suite "
                    "needs the `expecttest` package, listed in requirements.in):\n" + proc.stderr[-3000:])
    by_op = {}
    for key, samples in torch.load(path, weights_only=True).items():
        name, variant, dtype = key.split("|")
        by_op.setdefault((name, dtype), []).extend((variant or "default", i, s) for i, s in enumerate(samples))
    return by_op


def _samples(opinfo_samples, name, dtype):
    samples = opinfo_samples.get((name, str(dtype)), [])
    assert samples, f"torch's op_db has no samples for {name} in {dtype}"
    return samples


def _copy(v):
    """An independent leaf copy of a sample's tensor (requires_grad kept); anything else as is."""
    return v.detach().clone().requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) else v


def _twin(sample):
    inp, args, kwargs = sample
    return _copy(inp), tuple(_copy(a) for a in args), {k: _copy(v) for k, v in kwargs.items()}


def _tensors(inp, args, kwargs):
    return [t for t in (inp, *args, *kwargs.values()) if isinstance(t, torch.Tensor)]


def _describe(sample):
    def short(v):
        if isinstance(v, torch.Tensor):
            return f"tensor{tuple(v.shape)}" + (" requires_grad" if v.requires_grad else "")
        return repr(v)
    inp, args, kwargs = sample
    return ", ".join([short(inp), *map(short, args), *(f"{k}={short(v)}" for k, v in kwargs.items())])


def _bind(fn, sample):
    """The sample's arguments by name, defaults included (as torch's function reads them)."""
    inp, args, kwargs = sample
    bound = inspect.signature(fn).bind(inp, *args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def _grad_output(out, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)


def _grad_tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else {}


def _not_applicable(name, test, arguments, used):
    for i, (op, t, _, applies, _) in enumerate(NOT_APPLICABLE):
        if op == name and t == test and applies(arguments):
            used.add(i)
            return True
    return False


def _assert_every_rule_used(name, test, used):
    for i, (op, t, which, _, _) in enumerate(NOT_APPLICABLE):
        if op == name and t == test:
            assert i in used, f"the rule for {which} ({op}, {test}) matches no sample any more: remove it"


def _leaves(inp, args, kwargs):
    """The tensors that require grad, with the argument each one is."""
    named = [("input", inp), *((f"args[{i}]", a) for i, a in enumerate(args)), *kwargs.items()]
    return [(k, t) for k, t in named if isinstance(t, torch.Tensor) and t.requires_grad]


def _run(fn, sample, grad_seed):
    """Call fn on a copy of the sample: (output, {argument: gradient}, the copy's tensors)."""
    inp, args, kwargs = _twin(sample)
    out = fn(inp, *args, **kwargs)
    leaves = _leaves(inp, args, kwargs)
    grads = torch.autograd.grad(out, [t for _, t in leaves], _grad_output(out, grad_seed), allow_unused=True)
    return out.detach(), dict(zip([k for k, _ in leaves], grads)), _tensors(inp, args, kwargs)


def _in_float64(sample):
    def up(v):
        return v.detach().double().requires_grad_(v.requires_grad) if isinstance(v, torch.Tensor) else v
    inp, args, kwargs = sample
    return up(inp), tuple(up(a) for a in args), {k: up(v) for k, v in kwargs.items()}


def _assert_close_to_torch(ours, theirs, theirs_in_float64, tolerance, what):
    """ours against torch's in the same dtype. In float32, torch's fused kernels round
    differently from plain tensor ops, and where 1/sqrt(var + eps) is large (a single value
    normalized, var = 0) torch's own float32 result is off by more than the tolerance; ours
    then has to agree with torch's result computed in float64."""
    try:
        torch.testing.assert_close(ours, theirs, **tolerance, msg=lambda m: f"{what}:\n{m}")
    except AssertionError:
        if ours.dtype == torch.float64:
            raise
        torch.testing.assert_close(ours, theirs_in_float64().to(ours.dtype), **tolerance,
                                   msg=lambda m: f"{what}, against torch in float32 and in float64:\n{m}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(OPS))
def test_matches_torch_on_opinfo_samples(opinfo_samples, name, dtype):
    ours, theirs = OPS[name]
    ran, running_stats_checked, used = 0, 0, set()
    for variant, index, sample in _samples(opinfo_samples, name, dtype):
        if _not_applicable(name, "parity", _bind(theirs, sample), used):
            continue
        what = f"{name} ({variant} #{index}, {dtype}): {_describe(sample)}"
        out_a, grads_a, tensors_a = _run(ours, sample, grad_seed=index)
        out_b, grads_b, tensors_b = _run(theirs, sample, grad_seed=index)
        in_float64 = lambda: _run(theirs, _in_float64(sample), grad_seed=index)  # noqa: E731

        assert (out_a.shape, out_a.dtype) == (out_b.shape, out_b.dtype), what
        _assert_close_to_torch(out_a, out_b, lambda: in_float64()[0], {}, f"forward of {what}")
        for arg, grad in grads_a.items():
            assert (grad is None) == (grads_b[arg] is None), f"gradient of {arg} in {what}: {grad} against {grads_b[arg]}"
            if grad is not None:
                _assert_close_to_torch(grad, grads_b[arg], lambda: in_float64()[1][arg], _grad_tolerance(dtype),
                                       f"gradient of {arg} in {what}")
        # the tensors that do not require grad are the running statistics: updated in place alike
        for ta, tb in zip(tensors_a, tensors_b):
            if not ta.requires_grad:
                torch.testing.assert_close(ta, tb, equal_nan=True,
                                           msg=lambda m: f"running statistics after {what}:\n{m}")
                running_stats_checked += 1
        ran += 1
    _assert_every_rule_used(name, "parity", used)
    assert ran > 0, f"no OpInfo sample of {name} ran in {dtype}"
    if name in ("nn.functional.batch_norm", "nn.functional.instance_norm"):
        assert running_stats_checked > 0, f"no OpInfo sample of {name} had running statistics"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_batch_norm_backward_matches_autograd_on_opinfo_samples(opinfo_samples, dtype):
    name, ran, used = "nn.functional.batch_norm", 0, set()
    for variant, index, sample in _samples(opinfo_samples, name, dtype):
        arguments = _bind(F.batch_norm, _twin(sample))
        if _not_applicable(name, "batch_norm_backward", arguments, used):
            continue
        what = f"batch_norm_backward on {name} ({variant} #{index}, {dtype}): {_describe(sample)}"
        x, weight, bias = arguments["input"], arguments["weight"], arguments["bias"]
        out = F.batch_norm(**arguments)
        grad = _grad_output(out, seed=index)
        parts = [(part, t) for part, t in (("input", x), ("weight", weight), ("bias", bias)) if t is not None]
        expected = dict(zip([part for part, _ in parts], torch.autograd.grad(out, [t for _, t in parts], grad)))
        got = norm.batch_norm_backward(grad, x.detach(), None if weight is None else weight.detach(),
                                       eps=arguments["eps"])
        for part, value in zip(("input", "weight", "bias"), got):
            if part in expected:
                torch.testing.assert_close(value, expected[part], **_grad_tolerance(dtype),
                                           msg=lambda m: f"grad_{part} of {what}:\n{m}")
            else:
                assert value is None, f"grad_{part} of {what} must be None without weight"
        ran += 1
    _assert_every_rule_used(name, "batch_norm_backward", used)
    assert ran > 0, f"no OpInfo sample of {name} ran through batch_norm_backward in {dtype}"
