"""coursekit.norm against PyTorch: forward and backward, train and eval, float32 and float64."""
import pytest
import torch
import torch.nn.functional as F

from coursekit.norm import BatchRenorm, batch_norm, batch_norm_backward

SHAPES = [(8, 3), (4, 3, 5), (2, 3, 4, 5), (3, 2, 2, 2, 2)]


def make(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    view = (1, C) + (1,) * (len(shape) - 2)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * (0.5 + torch.rand(C, generator=g, dtype=torch.float64)).view(view)
         + torch.randn(C, generator=g, dtype=torch.float64).view(view) * 3)
    w = 0.5 + torch.rand(C, generator=g, dtype=torch.float64)
    b = torch.randn(C, generator=g, dtype=torch.float64)
    rm, rv = torch.randn(C, generator=g, dtype=torch.float64), 0.5 + torch.rand(C, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (x, w, b, rm, rv)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_forward_and_running_stats_match_torch(shape, dtype, training, affine):
    x, w, b, rm, rv = make(shape, dtype)
    w, b = (w, b) if affine else (None, None)
    rm2, rv2 = rm.clone(), rv.clone()
    for momentum, eps in [(0.1, 1e-5), (0.7, 0.3)]:
        ours = batch_norm(x, rm, rv, w, b, training=training, momentum=momentum, eps=eps)
        theirs = F.batch_norm(x, rm2, rv2, w, b, training=training, momentum=momentum, eps=eps)
        assert ours.dtype == dtype and ours.shape == x.shape
        torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(rm, rm2)
        torch.testing.assert_close(rv, rv2)


@pytest.mark.parametrize("shape", SHAPES)
def test_autograd_through_forward_matches_torch(shape):
    x, w, b, _, _ = make(shape, torch.float64)
    inputs = [t.clone().requires_grad_() for t in (x, w, b)]
    twins = [t.clone().requires_grad_() for t in (x, w, b)]
    g = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    batch_norm(inputs[0], None, None, inputs[1], inputs[2], training=True).backward(g)
    F.batch_norm(twins[0], None, None, twins[1], twins[2], training=True).backward(g)
    for a, t in zip(inputs, twins):
        torch.testing.assert_close(a.grad, t.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_hand_derived_backward_matches_autograd(shape, dtype, seed):
    x, w, b, _, _ = make(shape, dtype, seed)
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 10)).to(dtype)
    F.batch_norm(xr, None, None, wr, br, training=True, eps=1e-3).backward(g)
    gx, gw, gb = batch_norm_backward(g, x, w, eps=1e-3)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else {}
    torch.testing.assert_close(gx, xr.grad, **tol)
    torch.testing.assert_close(gw, wr.grad, **tol)
    torch.testing.assert_close(gb, br.grad, **tol)
    gx_none, gw_none, gb_none = batch_norm_backward(g, x, None, eps=1e-3)
    assert gw_none is None and gb_none is None
    xr2 = x.clone().requires_grad_()
    F.batch_norm(xr2, None, None, None, None, training=True, eps=1e-3).backward(g)
    torch.testing.assert_close(gx_none, xr2.grad, **tol)


@pytest.mark.parametrize("shape", [(5, 2), (3, 2, 3)])
def test_backward_passes_gradcheck(shape):
    """The hand-derived backward is the exact derivative: gradcheck the function
    x -> batch_norm(x) whose backward is batch_norm_backward, against finite differences."""
    class HandDerived(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b):
            ctx.save_for_backward(x, w)
            return batch_norm(x, None, None, w, b, training=True)

        @staticmethod
        def backward(ctx, grad):
            x, w = ctx.saved_tensors
            return batch_norm_backward(grad, x, w)

    x, w, b, _, _ = make(shape, torch.float64)
    assert torch.autograd.gradcheck(HandDerived.apply, tuple(t.requires_grad_() for t in (x, w, b)))


ERRORS = [
    (lambda: batch_norm(torch.ones(4, 3), None, None), ValueError, r"must be given in evaluation mode"),
    (lambda: batch_norm(torch.ones(1, 3), None, None, training=True), ValueError,
     r"more than 1 value per channel when training, got input of shape \(1, 3\)"),
    (lambda: batch_norm(torch.ones(5), torch.zeros(5), torch.ones(5)), ValueError,
     r"shape \(N, C\) or \(N, C, \*\), got shape \(5,\)"),
    (lambda: batch_norm(torch.ones(4, 3), torch.zeros(2), torch.ones(3)), ValueError,
     r"running_mean must have shape \(C,\) = \(3,\) for input of shape \(4, 3\), got shape \(2,\)"),
    (lambda: batch_norm(torch.ones(4, 3), None, None, torch.ones(3, 1), training=True), ValueError,
     r"weight must have shape \(C,\) = \(3,\).*got shape \(3, 1\)"),
    (lambda: batch_norm([[1.0]], None, None), TypeError, r"input must be a torch.Tensor, got list"),
    (lambda: batch_norm_backward(torch.ones(4, 2), torch.ones(4, 3)), ValueError,
     r"grad_output must have the shape of input \(4, 3\), got \(4, 2\)"),
    (lambda: BatchRenorm(3, r_max=0.5), ValueError, r"r_max >= 1 .* got r_max=0.5"),
]


@pytest.mark.parametrize("fn, exc, pattern", ERRORS)
def test_errors(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


def test_batch_renorm_with_no_clipping_room_is_batch_norm():
    torch.manual_seed(0)
    renorm, bn = BatchRenorm(4, momentum=0.1, r_max=1.0, d_max=0.0), torch.nn.BatchNorm1d(4, momentum=0.1)
    x = torch.randn(16, 4) * 3 + 1
    torch.testing.assert_close(renorm(x), bn(x))
    torch.testing.assert_close(renorm.running_mean, bn.running_mean)
    torch.testing.assert_close(renorm.running_var, bn.running_var)
    renorm.eval(), bn.eval()
    torch.testing.assert_close(renorm(x), bn(x))


def test_batch_renorm_unclipped_equals_the_inference_transform():
    torch.manual_seed(1)
    renorm = BatchRenorm(3, momentum=0.0, r_max=1e6, d_max=1e6)
    renorm.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
    renorm.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
    x = torch.randn(8, 3, 5) * 2
    train_out = renorm(x)
    renorm.eval()
    torch.testing.assert_close(train_out, renorm(x))


def test_batch_renorm_no_gradient_through_r_and_d():
    torch.manual_seed(2)
    renorm = BatchRenorm(2, r_max=3.0, d_max=5.0)
    renorm.running_var.fill_(9.0)
    x = torch.randn(6, 2, dtype=torch.float32, requires_grad=True)
    renorm(x).sum().backward()
    # the normalized batch (x - mean_B) / std_B sums to zero per channel, and r, d are constants:
    # d(sum y)/dx = gamma * r * d/dx sum((x - mean_B)/std_B) = 0
    torch.testing.assert_close(x.grad, torch.zeros_like(x), atol=1e-6, rtol=0)


# --- the rest of the family ---------------------------------------------------------------------

from coursekit.norm import group_norm, instance_norm, layer_norm, weight_norm  # noqa: E402

FAMILY_SHAPES = [(3, 4, 5), (2, 6, 3, 4), (2, 4, 2, 2, 3)]


def family_case(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + torch.randn(shape[1:], generator=g, dtype=torch.float64)
    return x.to(dtype), g


def assert_same_forward_and_backward(ours, theirs, inputs, dtype):
    """Forward outputs and the gradients of every input agree with PyTorch's."""
    a = [t.clone().requires_grad_() if t is not None else None for t in inputs]
    b = [t.clone().requires_grad_() if t is not None else None for t in inputs]
    out_a, out_b = ours(*a), theirs(*b)
    assert out_a.dtype == dtype
    torch.testing.assert_close(out_a, out_b)
    grad = torch.randn(out_a.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64).to(dtype)
    out_a.backward(grad), out_b.backward(grad)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else {}
    for ta, tb in zip(a, b):
        if ta is not None:
            torch.testing.assert_close(ta.grad, tb.grad, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", FAMILY_SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_family_matches_torch_forward_and_backward(shape, dtype, affine):
    x, g = family_case(shape, dtype)
    C = shape[1]
    w = (0.5 + torch.rand(C, generator=g, dtype=torch.float64)).to(dtype) if affine else None
    b = torch.randn(C, generator=g, dtype=torch.float64).to(dtype) if affine else None
    assert_same_forward_and_backward(lambda x, w, b: instance_norm(x, weight=w, bias=b, eps=1e-3),
                                     lambda x, w, b: F.instance_norm(x, weight=w, bias=b, eps=1e-3), [x, w, b], dtype)
    for G in [1, 2, C]:
        assert_same_forward_and_backward(lambda x, w, b: group_norm(x, G, w, b),
                                         lambda x, w, b: F.group_norm(x, G, w, b), [x, w, b], dtype)
    for k in range(1, len(shape)):
        normalized = shape[-k:]
        lw = (0.5 + torch.rand(normalized, generator=g, dtype=torch.float64)).to(dtype) if affine else None
        lb = torch.randn(normalized, generator=g, dtype=torch.float64).to(dtype) if affine else None
        assert_same_forward_and_backward(lambda x, w, b: layer_norm(x, normalized, w, b, eps=0.1),
                                         lambda x, w, b: F.layer_norm(x, normalized, w, b, eps=0.1), [x, lw, lb], dtype)


@pytest.mark.parametrize("shape", FAMILY_SHAPES)
def test_group_norm_identities(shape):
    x, _ = family_case(shape, torch.float64, seed=3)
    C = shape[1]
    torch.testing.assert_close(group_norm(x, 1), layer_norm(x, shape[1:]))   # G = 1: layer norm over (C, *)
    torch.testing.assert_close(group_norm(x, C), instance_norm(x))           # G = C: instance norm


def test_layer_norm_does_not_depend_on_the_batch():
    x, _ = family_case((8, 4, 5), torch.float64)
    torch.testing.assert_close(layer_norm(x, (4, 5))[:1], layer_norm(x[:1], (4, 5)))
    torch.testing.assert_close(instance_norm(x)[:1], instance_norm(x[:1]))


@pytest.mark.parametrize("dim", [0, 1, -1, None])
def test_weight_norm_matches_torch(dim):
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(3, 5, 4)
    param = torch.nn.utils.parametrizations.weight_norm(conv, dim=dim)
    g, v = param.parametrizations.weight.original0, param.parametrizations.weight.original1
    torch.testing.assert_close(weight_norm(v, g, dim), param.weight)
    if dim in (0, 1):  # g given as a flat vector works too (-1, like None, means the whole tensor)
        torch.testing.assert_close(weight_norm(v, g.reshape(-1), dim), param.weight)


def test_weight_norm_decouples_length_and_direction():
    torch.manual_seed(1)
    v, g = torch.randn(4, 6, dtype=torch.float64), torch.rand(4, dtype=torch.float64) + 0.5
    w = weight_norm(v, g)
    torch.testing.assert_close(w.norm(dim=1), g)                  # the length is g
    torch.testing.assert_close(weight_norm(3.7 * v, g), w)        # scaling v changes nothing


FAMILY_ERRORS = [
    (lambda: group_norm(torch.ones(2, 10, 3), 3), ValueError, r"num_channels \(10\) must be divisible by num_groups \(3\)"),
    (lambda: group_norm(torch.ones(2, 4, 3), 0), ValueError, r"num_groups must be a positive integer, got 0"),
    (lambda: group_norm(torch.ones(2, 4, 3), 2, torch.ones(2)), ValueError, r"weight must have shape \(C,\) = \(4,\)"),
    (lambda: layer_norm(torch.ones(2, 3, 4), (3,)), ValueError,
     r"normalized_shape \[3\] must be the trailing shape of the input; got input of shape \(2, 3, 4\)"),
    (lambda: layer_norm(torch.ones(2, 3, 4), (2, 3, 4, 5)), ValueError, r"trailing shape"),
    (lambda: layer_norm(torch.ones(2, 3, 4), 4, torch.ones(3)), ValueError, r"weight must have shape normalized_shape \(4,\), got \(3,\)"),
    (lambda: instance_norm(torch.ones(2, 3)), ValueError, r"at least one position dimension.*got shape \(2, 3\)"),
    (lambda: instance_norm(torch.ones(2, 3, 1)), ValueError, r"more than 1 position per channel"),
    (lambda: weight_norm(torch.ones(3, 4), torch.ones(4), dim=0), ValueError, r"g must have 3 elements"),
    (lambda: weight_norm(torch.ones(3, 4), torch.ones(3), dim=2), ValueError, r"dim must be in \[-2, 1\] .* got 2"),
]


@pytest.mark.parametrize("fn, exc, pattern", FAMILY_ERRORS)
def test_family_errors(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()


# --- empty batches -----------------------------------------------------------------------------

import coursekit.norm as norm_module  # noqa: E402

# How each norm is called on (x, running_mean, running_var, weight, bias): m is coursekit.norm
# or torch.nn.functional, whose functions have the same names and signatures.
EMPTY_CALLS = {
    "batch_norm, training": lambda m, x, rm, rv, w, b: m.batch_norm(x, rm, rv, w, b, training=True, momentum=0.3),
    "batch_norm, training, no running stats": lambda m, x, rm, rv, w, b: m.batch_norm(x, None, None, w, b, training=True),
    "batch_norm, evaluation": lambda m, x, rm, rv, w, b: m.batch_norm(x, rm, rv, w, b, training=False),
    "instance_norm": lambda m, x, rm, rv, w, b: m.instance_norm(x, weight=w, bias=b),
    "instance_norm, running stats": lambda m, x, rm, rv, w, b: m.instance_norm(x, rm, rv, weight=w, bias=b, momentum=0.3),
    "instance_norm, use_input_stats=False": lambda m, x, rm, rv, w, b: m.instance_norm(
        x, rm, rv, weight=w, bias=b, use_input_stats=False),
    "group_norm": lambda m, x, rm, rv, w, b: m.group_norm(x, 2, w, b),
    "layer_norm": lambda m, x, rm, rv, w, b: m.layer_norm(
        x, x.shape[1:], None if w is None else w.view(w.shape + (1,) * (x.dim() - 2)).expand(x.shape[1:]),
        None if b is None else b.view(b.shape + (1,) * (x.dim() - 2)).expand(x.shape[1:])),
}
# Where torch itself fails on an empty batch, and coursekit returns the empty output instead
# (the test checks that torch still fails there): (case, affine) -> (torch's error, why).
TORCH_FAILS_ON_EMPTY = {
    (case, True): (IndexError, "F.instance_norm repeats weight and bias N = 0 times, then takes "
                               "element 0 of the empty result")
    for case in EMPTY_CALLS if case.startswith("instance_norm")
}
# What happens to the running statistics on an empty batch, as in torch (checked against it below).
RUNNING_STATS_ON_EMPTY = {
    "batch_norm, training": "unchanged",
    "batch_norm, evaluation": "unchanged",
    "instance_norm, running stats": "nan",        # torch averages the updated copies over no instances
    "instance_norm, use_input_stats=False": "unchanged",
}


def _empty_batch_inputs(spatial, dtype, affine, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = 4
    x = torch.randn(0, C, *spatial, generator=g, dtype=torch.float64)
    w, b = (0.5 + torch.rand(C, generator=g, dtype=torch.float64), torch.randn(C, generator=g, dtype=torch.float64))
    rm, rv = torch.randn(C, generator=g, dtype=torch.float64), 0.5 + torch.rand(C, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (x, rm, rv)] + ([w.to(dtype), b.to(dtype)] if affine else [None, None])


def _leaf(t):
    return None if t is None else t.clone().requires_grad_()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("case, spatial", [
    (case, spatial) for case in EMPTY_CALLS for spatial in [(), (3,), (2, 2)]
    # instance norm with its own statistics needs a position dimension (an error, tested above)
    if spatial or not case.startswith("instance_norm") or "use_input_stats=False" in case])
def test_empty_batch_gives_an_empty_output_as_torch(case, spatial, affine, dtype):
    x, rm, rv, w, b = _empty_batch_inputs(spatial, dtype, affine)
    call = EMPTY_CALLS[case]
    ours_args = [_leaf(x), rm.clone(), rv.clone(), _leaf(w), _leaf(b)]
    out = call(norm_module, *ours_args)
    assert out.shape == x.shape and out.dtype == dtype and out.numel() == 0
    out.backward(torch.randn(out.shape, dtype=dtype))
    leaves = [ours_args[i] for i in (0, 3, 4) if ours_args[i] is not None]
    for t in leaves:
        torch.testing.assert_close(t.grad, torch.zeros_like(t))          # nothing depends on them
    expected_stats = RUNNING_STATS_ON_EMPTY.get(case)
    if expected_stats == "unchanged":
        assert torch.equal(ours_args[1], rm) and torch.equal(ours_args[2], rv)
    elif expected_stats == "nan":
        assert ours_args[1].isnan().all() and ours_args[2].isnan().all()

    torch_args = [_leaf(x), rm.clone(), rv.clone(), _leaf(w), _leaf(b)]
    fails = TORCH_FAILS_ON_EMPTY.get((case, affine))
    if fails:  # keep the table true: torch still fails there
        with pytest.raises(fails[0]):
            call(F, *torch_args)
        return
    theirs = call(F, *torch_args)
    assert (theirs.shape, theirs.dtype) == (out.shape, out.dtype)
    theirs.backward(torch.randn(theirs.shape, dtype=dtype))
    for ours_t, torch_t in zip(ours_args, torch_args):
        if ours_t is not None and ours_t.requires_grad:
            torch.testing.assert_close(ours_t.grad, torch_t.grad)
        elif ours_t is not None:
            torch.testing.assert_close(ours_t, torch_t, equal_nan=True)  # the running statistics


def test_batch_norm_returns_an_empty_1d_input_as_torch():
    x = torch.zeros(0, requires_grad=True)
    for training in (True, False):
        out = batch_norm(x, torch.zeros(0), torch.ones(0), training=training)
        assert out.shape == (0,) and out.dtype == x.dtype
        assert F.batch_norm(x, torch.zeros(0), torch.ones(0), training=training).shape == (0,)


# --- instance norm's running statistics ----------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", FAMILY_SHAPES)
@pytest.mark.parametrize("momentum", [0.1, 0.7, 0.0])  # negative ones: in the OpInfo samples
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_running_stats_match_torch(shape, dtype, momentum, affine):
    x, g = family_case(shape, dtype)
    C = shape[1]
    w = (0.5 + torch.rand(C, generator=g, dtype=torch.float64)).to(dtype) if affine else None
    b = torch.randn(C, generator=g, dtype=torch.float64).to(dtype) if affine else None
    rm, rv = torch.randn(C, generator=g, dtype=torch.float64).to(dtype), (0.5 + torch.rand(C, generator=g, dtype=torch.float64)).to(dtype)
    rm2, rv2 = rm.clone(), rv.clone()
    for use_input_stats in (True, False):   # updated, then used
        ours = instance_norm(x, rm, rv, w, b, use_input_stats, momentum, 1e-3)
        theirs = F.instance_norm(x, rm2, rv2, w, b, use_input_stats, momentum, 1e-3)
        assert ours.dtype == dtype
        torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(rm, rm2)
        torch.testing.assert_close(rv, rv2)
    before = rm.clone(), rv.clone()
    instance_norm(x, rm, rv, use_input_stats=False)
    assert torch.equal(rm, before[0]) and torch.equal(rv, before[1])


def test_instance_norm_running_stats_are_averaged_unbiased_instance_statistics():
    x, _ = family_case((4, 3, 5), torch.float64)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    instance_norm(x, rm, rv, momentum=0.25)
    torch.testing.assert_close(rm, 0.25 * x.mean(dim=2).mean(dim=0))
    torch.testing.assert_close(rv, 0.75 + 0.25 * x.var(dim=2, correction=1).mean(dim=0))


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 1), (2, 3, 4)])
def test_instance_norm_with_running_stats_is_batch_norm_in_evaluation(shape):
    """use_input_stats=False: the running statistics normalize, also (N, C) and one position."""
    x, g = family_case(shape, torch.float64)
    rm, rv = torch.randn(3, generator=g, dtype=torch.float64), 0.5 + torch.rand(3, generator=g, dtype=torch.float64)
    xr, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = instance_norm(xr, rm, rv, use_input_stats=False)
    torch.testing.assert_close(ours, F.instance_norm(xt, rm, rv, use_input_stats=False))
    torch.testing.assert_close(ours, batch_norm(x, rm, rv))
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    ours.backward(grad), F.instance_norm(xt, rm, rv, use_input_stats=False).backward(grad)
    torch.testing.assert_close(xr.grad, xt.grad)


def test_instance_norm_with_no_positions_leaves_the_running_stats_as_torch():
    x = torch.zeros(2, 3, 0)
    rm, rv = torch.randn(3), torch.rand(3) + 0.5
    rm2, rv2 = rm.clone(), rv.clone()
    out = instance_norm(x, rm, rv)
    assert out.shape == x.shape
    F.instance_norm(x, rm2, rv2)
    torch.testing.assert_close(rm, rm2)
    torch.testing.assert_close(rv, rv2)


INSTANCE_NORM_ERRORS = [
    (lambda: instance_norm(torch.ones(2, 3, 4), torch.zeros(3)), ValueError,
     r"running_mean and running_var must both be given or both be None, got running_mean=a tensor "
     r"and running_var=None"),
    (lambda: instance_norm(torch.ones(2, 3, 4), use_input_stats=False), ValueError,
     r"running_mean and running_var must be given when use_input_stats=False"),
    (lambda: instance_norm(torch.ones(2, 3, 4), torch.zeros(2), torch.ones(2)), ValueError,
     r"running_mean must have shape \(C,\) = \(3,\) for input of shape \(2, 3, 4\), got shape \(2,\)"),
    (lambda: instance_norm(torch.ones(2, 3, 1), torch.zeros(3), torch.ones(3)), ValueError,
     r"more than 1 position per channel, got input of shape \(2, 3, 1\)"),
    (lambda: instance_norm(torch.ones(0, 3, 1)), ValueError, r"more than 1 position per channel"),
]


@pytest.mark.parametrize("fn, exc, pattern", INSTANCE_NORM_ERRORS)
def test_instance_norm_errors(fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        fn()
