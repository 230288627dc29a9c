"""Feature scaling for torch tensors: min-max normalization and standardization.

Both scalers follow scikit-learn's semantics so that what students learn transfers:
statistics are computed per feature (per column of an ``(N, D)`` tensor) by :meth:`fit`
only, and :meth:`transform` applies those stored statistics to any later data, which is
why a transformed test set can leave the target range.

Example::

    >>> scaler = StandardScaler().fit(X_train)
    >>> X_train_s = scaler.transform(X_train)   # zero mean, unit variance per feature
    >>> X_test_s = scaler.transform(X_test)     # same statistics: no leakage
"""
from __future__ import annotations

import torch

__all__ = ["MinMaxScaler", "StandardScaler", "NotFittedError"]


class NotFittedError(ValueError, AttributeError):
    """Raised when a scaler is used before :meth:`fit` (as in scikit-learn)."""


def _check_2d(X, name: str = "X") -> torch.Tensor:
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got {type(X).__name__}")
    if X.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D) (2 dimensions), got shape {tuple(X.shape)}")
    if not X.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {X.dtype}; "
                        f"convert it first, e.g. X.float()")
    return X


class _Scaler:
    """Shared bookkeeping: remember the feature count and refuse to work unfitted."""

    n_features_in_: int

    def _check_fitted(self, X: torch.Tensor, method: str) -> torch.Tensor:
        X = _check_2d(X)
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
    feature over the data passed to :meth:`fit`. A constant feature (max = min) is given
    a range of 1 instead of 0, so it maps to :math:`a` rather than to NaN.

    Args:
        feature_range: the target ``(min, max)``; ``min`` must be smaller than ``max``.
            Default: ``(0.0, 1.0)``.

    Attributes (after :meth:`fit`):
        data_min_, data_max_: per-feature minimum and maximum of the training data, shape ``(D,)``.
        scale_: per-feature factor, ``(b - a) / (data_max_ - data_min_)``.
        min_: per-feature offset, so that ``transform(X) = X * scale_ + min_`` (scikit-learn's
            form; :meth:`transform` computes ``(X - data_min_) * scale_ + a``, which loses
            less precision when the data sit far from 0).
        n_features_in_: the number of features ``D`` seen by :meth:`fit`.

    Shape:
        - Input: :math:`(N, D)`, floating point.
        - Output: :math:`(N, D)`, same dtype and device.
    """

    def __init__(self, feature_range: tuple[float, float] = (0.0, 1.0)):
        try:
            low, high = (float(v) for v in feature_range)
        except (TypeError, ValueError):
            raise ValueError(
                f"feature_range must be a pair of numbers (min, max), got {feature_range!r}") from None
        if not low < high:
            raise ValueError(
                f"feature_range must satisfy min < max, got {feature_range!r}")
        self.feature_range = (low, high)

    def fit(self, X: torch.Tensor) -> "MinMaxScaler":
        """Compute the per-feature minimum and maximum of ``X``; returns ``self``."""
        X = _check_2d(X)
        if X.shape[0] == 0:
            raise ValueError(f"fit needs at least one sample, got shape {tuple(X.shape)}")
        low, high = self.feature_range
        self.data_min_ = X.amin(dim=0)
        self.data_max_ = X.amax(dim=0)
        data_range = self.data_max_ - self.data_min_
        # a (numerically) constant feature gets range 1, as in scikit-learn
        eps = torch.finfo(X.dtype).eps
        data_range = torch.where(data_range < 10 * eps, torch.ones_like(data_range), data_range)
        self.scale_ = (high - low) / data_range
        self.min_ = low - self.data_min_ * self.scale_
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        """Scale ``X`` with the statistics from :meth:`fit` (the result may leave the range)."""
        X = self._check_fitted(X, "transform")
        return (X - self.data_min_) * self.scale_ + self.feature_range[0]

    def inverse_transform(self, X: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`transform`: map scaled data back to the original units."""
        X = self._check_fitted(X, "inverse_transform")
        return (X - self.feature_range[0]) / self.scale_ + self.data_min_

    def __repr__(self) -> str:
        return f"MinMaxScaler(feature_range={self.feature_range})"


class StandardScaler(_Scaler):
    r"""Standardize each feature to zero mean and unit variance.

    .. math::
        x' = \frac{x - \mu_{\text{train}}}{\sigma_{\text{train}}}, \qquad
        \sigma^2_{\text{train}} = \frac{1}{N} \sum_{i=1}^{N} (x_i - \mu_{\text{train}})^2

    The standard deviation is the *population* one (``correction=0``, like scikit-learn
    and like batch normalization's normalizing variance), computed per feature over the
    data passed to :meth:`fit`. A constant feature (:math:`\sigma = 0`) gets scale 1, so it
    maps to 0 rather than to NaN.

    Attributes (after :meth:`fit`):
        mean_: per-feature mean of the training data, shape ``(D,)``.
        var_: per-feature population variance, shape ``(D,)``.
        scale_: per-feature standard deviation, with 1 where it is 0.
        n_features_in_: the number of features ``D`` seen by :meth:`fit`.

    Shape:
        - Input: :math:`(N, D)`, floating point.
        - Output: :math:`(N, D)`, same dtype and device.
    """

    def fit(self, X: torch.Tensor) -> "StandardScaler":
        """Compute the per-feature mean and population standard deviation; returns ``self``."""
        X = _check_2d(X)
        if X.shape[0] == 0:
            raise ValueError(f"fit needs at least one sample, got shape {tuple(X.shape)}")
        n = X.shape[0]
        self.mean_ = X.mean(dim=0)
        self.var_ = ((X - self.mean_) ** 2).mean(dim=0)  # population variance (correction 0)
        # A constant feature can come out with a tiny non-zero variance from rounding;
        # scikit-learn's bound for "constant up to rounding" decides, and gives it scale 1.
        eps = torch.finfo(X.dtype).eps
        constant = self.var_ <= n * eps * self.var_ + (n * self.mean_ * eps) ** 2
        self.scale_ = torch.where(constant, torch.ones_like(self.var_), self.var_.sqrt())
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        """Standardize ``X`` with the mean and standard deviation from :meth:`fit`."""
        X = self._check_fitted(X, "transform")
        return (X - self.mean_) / self.scale_

    def inverse_transform(self, X: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`transform`: ``X * scale_ + mean_``."""
        X = self._check_fitted(X, "inverse_transform")
        return X * self.scale_ + self.mean_

    def __repr__(self) -> str:
        return "StandardScaler()"
