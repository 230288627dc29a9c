"""Feature scaling for torch tensors: min-max normalization and standardization.

Both scalers follow scikit-learn's semantics (``sklearn.preprocessing``), so that what
students learn transfers, and scikit-learn's own tests check them
(``tests/test_scaling_peers.py``):

- statistics are computed per feature (per column of an ``(N, D)`` tensor) by :meth:`fit`
  only, and :meth:`transform` applies the stored statistics to any later data, which is
  why a transformed test set can leave the target range;
- :meth:`fit` accumulates in float64 whatever the input's dtype (float32 on a device
  without float64, such as Apple's MPS), so float32 and float16 features with a large
  offset or a large magnitude keep their spread; the results and the fitted attributes
  are in the input's dtype;
- NaN marks a missing value: :meth:`fit` ignores it (each feature's statistics come from
  its observed values) and :meth:`transform` / :meth:`inverse_transform` keep it in place;
  ``±inf`` is rejected;
- a feature that is constant up to rounding is given scale 1 rather than a huge factor
  (scikit-learn's ``_is_constant_feature`` and ``_handle_zeros_in_scale``).

Example::

    >>> scaler = StandardScaler().fit(X_train)
    >>> X_train_s = scaler.transform(X_train)   # zero mean, unit variance per feature
    >>> X_test_s = scaler.transform(X_test)     # same statistics: no leakage
"""
from __future__ import annotations

import math

import torch

__all__ = ["MinMaxScaler", "StandardScaler", "NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """Raised when a scaler is used before :meth:`fit` (as in scikit-learn)."""


def _accumulation_dtype(device: torch.device) -> torch.dtype:
    """The dtype statistics are accumulated in: float64, like scikit-learn's accumulators,
    or float32 on a device that has no float64 (Apple's MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool) and type(value).__name__ not in ("bool", "bool_"):  # numpy's too
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_input(X, owner: str, method: str) -> torch.Tensor:
    """Validate the data given to a scaler: a floating ``(N, D)`` tensor with ``N, D >= 1``
    and no ``±inf`` (NaN is allowed: it marks a missing value)."""
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"X must be a torch.Tensor of shape (N, D), got {type(X).__name__}")
    if X.dim() != 2:
        raise ValueError(
            f"Expected 2D array, got {X.dim()}D array instead: X must have shape (N, D), got "
            f"shape {tuple(X.shape)}. Reshape it with X.reshape(-1, 1) if it has a single "
            f"feature, or X.reshape(1, -1) if it is a single sample.")
    if not X.is_floating_point():
        raise TypeError(f"X must be a floating-point tensor, got dtype {X.dtype}; "
                        f"convert it first, e.g. X.float()")
    if X.shape[0] == 0:
        raise ValueError(f"{owner}.{method} needs at least one sample, got shape {tuple(X.shape)}")
    if X.shape[1] == 0:
        raise ValueError(f"{owner}.{method} needs at least one feature, got shape {tuple(X.shape)}")
    infinite = torch.isinf(X)
    if infinite.any():
        row, col = (int(i) for i in infinite.nonzero()[0])
        raise ValueError(
            f"Input X contains infinity or a value too large for dtype {X.dtype}: X[{row}, {col}] "
            f"= {X[row, col].item()}. {owner} ignores NaN (a missing value) in fit, but cannot "
            f"use ±inf.")
    return X


class _Scaler:
    """Shared bookkeeping: remember the feature count and refuse to work unfitted."""

    n_features_in_: int

    def _check_fitted(self, X: torch.Tensor, method: str) -> torch.Tensor:
        X = _check_input(X, type(self).__name__, method)
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet: call fit(X_train) before {method}()")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                f"{self.n_features_in_} features")
        return X

    def fit_transform(self, X: torch.Tensor) -> torch.Tensor:
        """Fit to ``X``, then transform ``X``."""
        return self.fit(X).transform(X)


class MinMaxScaler(_Scaler):
    r"""Rescale each feature to a given range, by default :math:`[0, 1]`.

    .. math::
        x' = a + (x - \min_{\text{train}} x)\,\frac{b - a}{\max_{\text{train}} x - \min_{\text{train}} x}

    where :math:`(a, b)` is ``feature_range`` and the minimum and maximum are taken per
    feature over the data passed to :meth:`fit`, ignoring NaN. A feature whose range is
    below ten times the machine epsilon of the input's dtype (scikit-learn's rule) is
    treated as constant: its range counts as 1, so it maps to :math:`a` rather than to NaN.

    Args:
        feature_range: the target ``(min, max)``; ``min`` must be smaller than ``max``.
            Default: ``(0.0, 1.0)``.
        clip: if ``True``, :meth:`transform` clips its result to ``feature_range`` (new data
            beyond the training minimum or maximum lands on the ends). Default: ``False``.

    Attributes (after :meth:`fit`, in the input's dtype):
        data_min_, data_max_: per-feature minimum and maximum of the training data (NaN
            ignored; NaN for a feature with no observed value), shape ``(D,)``.
        data_range_: ``data_max_ - data_min_``.
        scale_: per-feature factor, ``(b - a) / data_range_`` (range 1 for a constant feature).
        min_: per-feature offset, so that ``transform(X) = X * scale_ + min_`` (scikit-learn's
            form; :meth:`transform` computes ``(X - data_min_) * scale_ + a``, which loses
            less precision when the data sit far from 0).
        n_samples_seen_: the number of rows passed to :meth:`fit` (an ``int``; as in
            scikit-learn, rows with NaN count).
        n_features_in_: the number of features ``D`` seen by :meth:`fit`.

    Shape:
        - Input: :math:`(N, D)`, floating point, :math:`N, D \geq 1`; NaN allowed, ``±inf`` not.
        - Output: :math:`(N, D)`, same dtype and device, NaN where the input has NaN.

    Raises:
        ValueError: ``feature_range`` is not a pair ``min < max`` of finite numbers; ``X``
            is not 2-D, is empty or contains ``±inf``; ``X`` has a different number of
            features than in :meth:`fit`.
        TypeError: ``X`` is not a floating-point ``torch.Tensor``.
        NotFittedError: :meth:`transform` or :meth:`inverse_transform` before :meth:`fit`.
    """

    def __init__(self, feature_range: tuple[float, float] = (0.0, 1.0), *, clip: bool = False):
        try:
            low, high = (float(v) for v in feature_range)
        except (TypeError, ValueError):
            raise ValueError(
                f"feature_range must be a pair of numbers (min, max), got {feature_range!r}") from None
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"feature_range must be finite, got {feature_range!r}")
        if not low < high:
            raise ValueError(
                f"feature_range must satisfy min < max, got {feature_range!r}")
        self.feature_range = (low, high)
        self.clip = _check_bool(clip, "clip")

    def fit(self, X: torch.Tensor) -> "MinMaxScaler":
        """Compute the per-feature minimum and maximum of ``X`` (NaN ignored); returns ``self``."""
        X = _check_input(X, "MinMaxScaler", "fit")
        low, high = self.feature_range
        missing = torch.isnan(X)
        if missing.any():
            # +-inf are rejected above, so they are safe sentinels for the missing values
            data_min = X.masked_fill(missing, math.inf).amin(dim=0)
            data_max = X.masked_fill(missing, -math.inf).amax(dim=0)
            unobserved = missing.all(dim=0)
            data_min = data_min.masked_fill(unobserved, math.nan)
            data_max = data_max.masked_fill(unobserved, math.nan)
        else:
            data_min, data_max = X.amin(dim=0), X.amax(dim=0)
        acc = _accumulation_dtype(X.device)
        data_range = data_max.to(acc) - data_min.to(acc)  # cannot overflow, unlike float16's
        # scikit-learn's _handle_zeros_in_scale: a range below 10 eps (of the input's dtype)
        # is a constant feature, given range 1 so that it maps to feature_range[0]
        constant = data_range < 10 * torch.finfo(X.dtype).eps
        scale = (high - low) / torch.where(constant, torch.ones_like(data_range), data_range)
        self.data_min_, self.data_max_ = data_min, data_max
        self.data_range_ = data_range.to(X.dtype)
        self.scale_ = scale.to(X.dtype)
        self.min_ = (low - data_min.to(acc) * scale).to(X.dtype)
        self.n_samples_seen_ = X.shape[0]
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        """Scale ``X`` with the statistics from :meth:`fit` (the result may leave the range
        unless ``clip=True``); NaN stays NaN."""
        X = self._check_fitted(X, "transform")
        low, high = self.feature_range
        out = (X - self.data_min_.to(X)) * self.scale_.to(X) + low
        return out.clamp(low, high) if self.clip else out

    def inverse_transform(self, X: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`transform`: map scaled data back to the original units; NaN stays NaN."""
        X = self._check_fitted(X, "inverse_transform")
        return (X - self.feature_range[0]) / self.scale_.to(X) + self.data_min_.to(X)

    def __repr__(self) -> str:
        clip = ", clip=True" if self.clip else ""
        return f"MinMaxScaler(feature_range={self.feature_range}{clip})"


class StandardScaler(_Scaler):
    r"""Standardize each feature to zero mean and unit variance.

    .. math::
        x' = \frac{x - \mu_{\text{train}}}{\sigma_{\text{train}}}, \qquad
        \sigma^2_{\text{train}} = \frac{1}{N} \sum_{i=1}^{N} (x_i - \mu_{\text{train}})^2

    The standard deviation is the *population* one (``correction=0``, like scikit-learn
    and like batch normalization's normalizing variance), computed per feature over the
    data passed to :meth:`fit`, ignoring NaN (:math:`N` is then the feature's number of
    observed values). Mean and variance are accumulated in float64 with the corrected
    two-pass algorithm, as in scikit-learn. A feature that is constant up to the rounding
    error of that algorithm,

    .. math::
        \sigma^2 \le N \epsilon\, \sigma^2 + (N \mu \epsilon)^2,
        \qquad \epsilon = \text{float64's machine epsilon},

    gets scale 1, so it maps to 0 rather than to NaN or to amplified rounding noise.

    Args:
        with_mean: subtract the mean. Default: ``True``.
        with_std: divide by the standard deviation. Default: ``True``.

    Attributes (after :meth:`fit`, in the input's dtype):
        mean_: per-feature mean of the training data, shape ``(D,)``; ``None`` when
            ``with_mean`` and ``with_std`` are both ``False``.
        var_: per-feature population variance; ``None`` when ``with_std=False``. (Cast from
            float64: for float16 features with a standard deviation above about 256 it
            overflows to inf, while ``scale_`` stays finite.)
        scale_: per-feature standard deviation, with 1 for a constant feature; ``None``
            when ``with_std=False``.
        n_samples_seen_: the number of observed (non-NaN) values per feature: an ``int`` when
            every feature has the same number, else an int64 tensor of shape ``(D,)``.
        n_features_in_: the number of features ``D`` seen by :meth:`fit`.

    Shape:
        - Input: :math:`(N, D)`, floating point, :math:`N, D \geq 1`; NaN allowed, ``±inf`` not.
        - Output: :math:`(N, D)`, same dtype and device, NaN where the input has NaN.

    Raises:
        TypeError: ``with_mean`` or ``with_std`` is not a bool; ``X`` is not a
            floating-point ``torch.Tensor``.
        ValueError: ``X`` is not 2-D, is empty or contains ``±inf``; ``X`` has a different
            number of features than in :meth:`fit`.
        NotFittedError: :meth:`transform` or :meth:`inverse_transform` before :meth:`fit`.
    """

    def __init__(self, *, with_mean: bool = True, with_std: bool = True):
        self.with_mean = _check_bool(with_mean, "with_mean")
        self.with_std = _check_bool(with_std, "with_std")

    def fit(self, X: torch.Tensor) -> "StandardScaler":
        """Compute the per-feature mean and population standard deviation (NaN ignored);
        returns ``self``."""
        X = _check_input(X, "StandardScaler", "fit")
        acc = _accumulation_dtype(X.device)
        X_acc = X.to(acc)
        missing = torch.isnan(X_acc)
        has_missing = bool(missing.any())
        count = X.shape[0] - missing.sum(dim=0)  # (D,) observed values per feature
        # as in scikit-learn: an int when every feature saw the same number of values
        n_min, n_max = int(count.min()), int(count.max())
        self.n_samples_seen_ = n_min if n_min == n_max else count

        self.mean_ = self.var_ = self.scale_ = None
        if self.with_mean or self.with_std:
            n = count.to(acc)
            observed = X_acc.masked_fill(missing, 0) if has_missing else X_acc
            mean = observed.sum(dim=0) / n  # NaN for a feature without observed values
            self.mean_ = mean.to(X.dtype)
            if self.with_std:
                centred = X_acc - mean
                if has_missing:
                    centred = centred.masked_fill(missing, 0)
                # corrected two-pass algorithm (Chan, Golub & LeVeque), as scikit-learn's
                # _incremental_mean_and_var: the second term removes the mean's rounding error
                var = ((centred ** 2).sum(dim=0) - centred.sum(dim=0) ** 2 / n) / n
                # scikit-learn's _is_constant_feature: the error bound of that algorithm
                eps = torch.finfo(acc).eps
                constant = var <= n * eps * var + (n * mean * eps) ** 2
                scale = torch.where(constant, torch.ones_like(var), var.sqrt())
                self.var_ = var.to(X.dtype)
                self.scale_ = scale.to(X.dtype)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        """Standardize ``X`` with the mean and standard deviation from :meth:`fit`; NaN stays NaN."""
        X = self._check_fitted(X, "transform")
        out = X - self.mean_.to(X) if self.with_mean else X.clone()
        if self.with_std:
            out = out / self.scale_.to(X)
        return out

    def inverse_transform(self, X: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`transform`: ``X * scale_ + mean_``; NaN stays NaN."""
        X = self._check_fitted(X, "inverse_transform")
        out = X * self.scale_.to(X) if self.with_std else X.clone()
        if self.with_mean:
            out = out + self.mean_.to(X)
        return out

    def __repr__(self) -> str:
        options = [f"{name}=False" for name in ("with_mean", "with_std") if not getattr(self, name)]
        return f"StandardScaler({', '.join(options)})"
