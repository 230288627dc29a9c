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
