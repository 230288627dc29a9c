"""coursekit.regularization's dropout, noise and augmentations: statistics within a few
standard errors, exact values where they are exact, and the errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from coursekit.regularization import (Dropout, add_noise, cutmix, cutout, dropout, mixup, random_shift,
                                      smooth_labels)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_keeps_a_fraction_1_minus_p_and_scales_by_1_over_1_minus_p(p, seed):
    n = 10 ** 6
    x = torch.rand(n, generator=gen(100 + seed)) + 0.5          # no zeros: a zero output means dropped
    y = dropout(x, p, generator=gen(seed))
    kept = y != 0
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * sigma
    assert torch.equal(y[kept], x[kept] / (1 - p))               # exactly, not approximately
    ones = torch.ones(n)
    assert abs(dropout(ones, p, generator=gen(seed)).mean().item() - 1) < 5 * math.sqrt(p / (1 - p) / n)


def test_dropout_is_the_identity_in_eval_mode_and_for_p_0():
    x = torch.randn(50, 7)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x


def test_dropout_with_p_1_drops_everything_without_nan():
    x = torch.randn(20, 5, requires_grad=True)
    y = dropout(x, 1.0)
    assert torch.equal(y, torch.zeros_like(y))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.5", True, None])
def test_invalid_p_is_rejected_naming_the_value(p):
    with pytest.raises(ValueError, match=r"\[0, 1\], got " + repr(p).replace("(", r"\(")):
        dropout(torch.ones(3), p)
    with pytest.raises(ValueError, match="got"):
        Dropout(p)


def test_dropout_rejects_integer_input():
    with pytest.raises(TypeError, match="floating-point tensor.*torch.int64"):
        dropout(torch.arange(5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_mask_is_made_on_the_inputs_device_and_dtype(dtype):
    x = torch.ones(1000, dtype=dtype)
    y = dropout(x, 0.3)
    assert y.dtype == dtype and y.device == x.device
    meta = torch.empty(4, 5, device="meta", dtype=dtype)       # a device other than the CPU
    out = dropout(meta, 0.3)
    assert out.device.type == "meta" and out.dtype == dtype and out.shape == meta.shape


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_gradient_is_zero_exactly_where_the_output_was_dropped(p):
    x = torch.randn(200, 30, dtype=torch.float64, generator=gen(1)).abs().add(0.1).requires_grad_()
    y = dropout(x, p, generator=gen(2))
    y.backward(torch.ones_like(y))
    dropped = y == 0
    assert dropped.any() and (~dropped).any()
    assert torch.equal(x.grad[dropped], torch.zeros(int(dropped.sum()), dtype=torch.float64))
    assert torch.equal(x.grad[~dropped], torch.full((int((~dropped).sum()),), 1 / (1 - p), dtype=torch.float64))


def test_same_generator_same_mask_and_another_seed_another():
    x = torch.ones(1000)
    assert torch.equal(dropout(x, generator=gen(5)), dropout(x, generator=gen(5)))
    assert not torch.equal(dropout(x, generator=gen(5)), dropout(x, generator=gen(6)))


def test_dropout_module_follows_the_training_mode():
    layer = Dropout(0.5, generator=gen(0))
    x = torch.ones(1000)
    assert (layer(x) == 0).any()
    layer.eval()
    assert layer(x) is x
    assert repr(layer) == "Dropout(p=0.5)"


# --------------------------------------------------------------------------- noise

def test_add_noise_has_the_requested_spread():
    x = torch.zeros(10 ** 5, dtype=torch.float64)
    noisy = add_noise(x, 0.3, generator=gen(0))
    assert abs(noisy.std().item() - 0.3) < 5 * 0.3 / math.sqrt(2 * len(x))
    assert torch.equal(add_noise(x, 0.0), x)
    with pytest.raises(ValueError, match="std must be >= 0, got -1"):
        add_noise(x, -1)


# --------------------------------------------------------------------------- targets

@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_smoothed_targets_give_torchs_label_smoothing_loss(smoothing):
    logits = torch.randn(32, 10, dtype=torch.float64, generator=gen(0))
    y = torch.randint(0, 10, (32,), generator=gen(1))
    soft = smooth_labels(y, 10, smoothing, dtype=torch.float64)
    torch.testing.assert_close(soft.sum(1), torch.ones(32, dtype=torch.float64))
    torch.testing.assert_close(F.cross_entropy(logits, soft), F.cross_entropy(logits, y, label_smoothing=smoothing))


def test_target_errors():
    with pytest.raises(ValueError, match="smoothing must be in"):
        smooth_labels(torch.tensor([0]), 3, 1.5)
    with pytest.raises(ValueError, match=r"class indices of shape \(N,\).*torch.float32"):
        smooth_labels(torch.tensor([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match=r"num_classes=4.*\(2, 3\)"):
        mixup(torch.randn(2, 5), torch.rand(2, 3), 4)
    with pytest.raises(ValueError, match="alpha must be positive, got 0"):
        mixup(torch.randn(2, 5), torch.tensor([0, 1]), 2, alpha=0)


@pytest.mark.parametrize("seed", range(5))
def test_mixup_mixes_inputs_and_labels_in_the_same_proportion(seed):
    N = 16
    x, y = torch.randn(N, 40, dtype=torch.float64, generator=gen(seed)), torch.arange(N)
    xm, ym = mixup(x, y, N, alpha=1.0, generator=gen(100 + seed))
    torch.testing.assert_close(ym.sum(1), torch.ones(N, dtype=torch.float64))
    for i in range(N):
        partners = [j for j in range(N) if j != i and ym[i, j] > 0]
        lam = ym[i, i].item()
        if partners:
            (j,) = partners
            torch.testing.assert_close(xm[i], lam * x[i] + (1 - lam) * x[j])
        else:  # paired with itself
            torch.testing.assert_close(xm[i], x[i])
    lams = {round(ym[i, i].item(), 9) for i in range(N) if (ym[i] > 0).sum() == 2}
    assert len({min(v, 1 - v) for v in lams}) <= 1            # one lambda per batch


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(12, 40), (12, 3, 40)])
def test_cutmix_pastes_one_segment_and_weights_labels_by_the_kept_fraction(seed, shape):
    N, L = shape[0], shape[-1]
    x, y = torch.randn(shape, generator=gen(seed)), torch.arange(N)
    xm, ym = cutmix(x, y, N, generator=gen(50 + seed))
    changed = (xm != x).reshape(N, -1, L).any(dim=1)           # (N, L)
    for i in range(N):
        positions = changed[i].nonzero().flatten()
        if len(positions):
            assert positions.max() - positions.min() + 1 == len(positions)   # contiguous
            kept = 1 - len(positions) / L
            assert ym[i, i].item() == pytest.approx(kept)
    torch.testing.assert_close(ym.sum(1), torch.ones(N))


@pytest.mark.parametrize("shape", [(10, 40), (10, 2, 40)])
def test_random_shift_rolls_each_signal_within_the_limit(shape):
    x = torch.randn(shape, generator=gen(0))
    shifted = random_shift(x, 4, generator=gen(1))
    seen = set()
    for i in range(shape[0]):
        matches = [s for s in range(-4, 5) if torch.equal(shifted[i], torch.roll(x[i], s, dims=-1))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 1
    with pytest.raises(ValueError, match=r"max_shift must be an integer in \[0, 40\).*got 40"):
        random_shift(x, 40)


# --------------------------------------------------------------------------- cutout

def patch_of(out: torch.Tensor) -> torch.Tensor:
    """Which positions of each sample are zero, checked to be the same in every channel:
    ``(N, H, W)`` for images, ``(N, L)`` for signals (inputs made without zeros)."""
    hidden = out == 0
    if out.dim() == 2:
        return hidden
    assert torch.equal(hidden, hidden[:, :1].expand_as(hidden)), "the patch differs between channels"
    return hidden[:, 0]


def covered(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(first, last)`` covered index along the last dimension of ``(N, L)`` booleans (-1 if none)."""
    L = hidden.shape[-1]
    first = torch.where(hidden.any(-1), hidden.float().argmax(-1), -1)
    last = torch.where(hidden.any(-1), L - 1 - hidden.flip(-1).float().argmax(-1), -1)
    return first, last


def centres(hidden: torch.Tensor, size: int) -> torch.Tensor:
    """The centre of each sample's patch along the last dimension, from what it covers: the
    patch starts at ``centre - size // 2`` and may be cut by one border (``size`` < length)."""
    first, last = covered(hidden)
    L = hidden.shape[-1]
    cut_at_start = (first == 0) & (last < L - 1)
    return torch.where(cut_at_start, last - (size - 1) + size // 2, first + size // 2)


@pytest.mark.parametrize("size", [4, 5])
def test_cutout_hides_a_square_of_size_squared_pixels_in_every_channel(size):
    N, C, H, W = 400, 3, 16, 16
    x = torch.rand(N, C, H, W, generator=gen(0)) + 0.5                 # no zeros
    hidden = patch_of(cutout(x, size, generator=gen(1)))                # (N, H, W)
    rows, cols = hidden.any(2), hidden.any(1)                           # (N, H), (N, W)
    assert torch.equal(hidden, rows[:, :, None] & cols[:, None, :])     # a rectangle
    n_rows, n_cols = rows.sum(1), cols.sum(1)
    assert torch.equal(n_rows, covered(rows)[1] - covered(rows)[0] + 1)  # contiguous rows
    assert bool((n_rows <= size).all() and (n_cols <= size).all())
    interior = (n_rows == size) & (n_cols == size)
    assert torch.equal(hidden[interior].sum((1, 2)), torch.full((int(interior.sum()),), size * size))
    # a patch smaller than size x size is cut by the border it overlaps
    for counts, lines, length in ((n_rows, rows, H), (n_cols, cols, W)):
        cut = counts < size
        first, last = covered(lines[cut])
        assert bool(((first == 0) | (last == length - 1)).all())
        assert cut.any()                                                # the square may lie partly outside
    # the centre is uniform over the pixels, so the square lies inside for (H - size + 1)
    # of the H rows a centre can take (and likewise for columns)
    inside = ((H - size + 1) / H) ** 2
    assert abs(interior.double().mean().item() - inside) < 5 * math.sqrt(inside * (1 - inside) / N)


def test_cutout_centres_are_uniform_over_the_image():
    N, H, W, size = 8000, 12, 10, 4
    x = torch.rand(N, 1, H, W, generator=gen(3)) + 0.5
    hidden = patch_of(cutout(x, size, generator=gen(4)))
    for axis, length in ((2, H), (1, W)):
        c = centres(hidden.any(axis), size)
        counts = torch.bincount(c, minlength=length).double()
        assert len(counts) == length                                    # every centre in 0..length-1
        chi2 = ((counts - N / length) ** 2 / (N / length)).sum().item()
        assert chi2 < length - 1 + 6 * math.sqrt(2 * (length - 1))     # mean + 6 sd of chi2(length - 1)


def test_cutout_rectangle_larger_than_the_image_and_zero_size():
    x = torch.rand(20, 2, 8, 8, generator=gen(0)) + 0.5
    assert torch.equal(cutout(x, 16, generator=gen(1)), torch.zeros_like(x))   # covers all wherever its centre
    rect = patch_of(cutout(x, (2, 3), generator=gen(2)))
    assert bool((rect.any(2).sum(1) <= 2).all() and (rect.any(1).sum(1) <= 3).all())
    assert (rect.sum((1, 2)) == 6).any()
    for unchanged in (cutout(x, 0), cutout(x, (0, 5)), cutout(x, 3, p=0.0)):
        assert torch.equal(unchanged, x) and unchanged is not x


@pytest.mark.parametrize("shape", [(300, 40), (300, 3, 40)])
def test_cutout_hides_one_segment_of_each_signal(shape):
    size = 7
    x = torch.rand(shape, generator=gen(0)) + 0.5
    hidden = patch_of(cutout(x, size, generator=gen(1)))                # (N, L)
    first, last = covered(hidden)
    assert torch.equal(hidden.sum(1), last - first + 1)                 # one contiguous segment
    whole = hidden.sum(1) == size
    assert whole.any() and (~whole).any()
    assert bool(((first[~whole] == 0) | (last[~whole] == shape[-1] - 1)).all())


def test_cutout_is_reproducible_with_a_generator_and_leaves_its_input_alone():
    x = torch.rand(10, 3, 9, 9, generator=gen(0)) + 0.5
    before = x.clone()
    a, b, c = (cutout(x, 3, generator=gen(s)) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_cutout_keeps_dtype_device_and_shape(dtype):
    x = torch.ones(6, 2, 5, 5, dtype=dtype)
    out = cutout(x, 3, generator=gen(0))
    assert out.dtype == dtype and out.shape == x.shape and (out == 0).any()
    assert cutout(torch.empty(0, 2, 5, 5, dtype=dtype), 3).shape == (0, 2, 5, 5)
    meta = cutout(torch.empty(4, 2, 5, 5, device="meta", dtype=dtype), 3)   # a device other than the CPU
    assert meta.device.type == "meta" and meta.dtype == dtype


def test_cutout_probability_p_is_per_sample():
    N, p = 4000, 0.3
    x = torch.rand(N, 1, 6, 6, generator=gen(0)) + 0.5
    hit = patch_of(cutout(x, 2, generator=gen(1), p=p)).any(2).any(1).double()
    assert abs(hit.mean().item() - p) < 5 * math.sqrt(p * (1 - p) / N)


@pytest.mark.parametrize("x, size, message", [
    (torch.ones(4, 3, 8, 8), -1, r"size must be an integer >= 0, or a pair \(h, w\) of them for images, got -1"),
    (torch.ones(4, 3, 8, 8), 2.5, "got 2.5"),
    (torch.ones(4, 3, 8, 8), True, "got True"),
    (torch.ones(4, 3, 8, 8), (3,), r"got \(3,\)"),
    (torch.ones(4, 3, 8, 8), (3, -1), r"got \(3, -1\)"),
    (torch.ones(4, 40), (3, 3), r"size must be an integer >= 0 \(a segment length, for signals\), got \(3, 3\)"),
    (torch.ones(40), 3, r"images \(N, C, H, W\) or signals \(N, C, L\) or \(N, L\), got shape \(40,\)"),
    (torch.ones(2, 3, 4, 5, 6), 3, r"got shape \(2, 3, 4, 5, 6\)"),
])
def test_cutout_errors_name_the_value(x, size, message):
    with pytest.raises(ValueError, match=message):
        cutout(x, size)


def test_cutout_rejects_a_bad_probability():
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\], got 1.5"):
        cutout(torch.ones(2, 10), 3, p=1.5)
