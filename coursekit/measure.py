"""Per-layer activation and gradient statistics, recorded with hooks during training.

How the distribution of each layer's outputs (and of the gradients flowing back into them)
evolves is what initialization and normalization are about: activations that shrink or
blow up with depth, saturated ``tanh`` units, dead ReLUs. :class:`LayerStats` records it
without changing the training code::

    >>> stats = LayerStats(model)                 # every Linear/Conv/norm/activation layer
    >>> with stats:                               # hooks live only inside the block
    ...     history = fit(model, train, val, epochs=5)
    >>> stats.series("std").shape                 # (records, layers): one row per training step
    >>> stats.series("std")[-1]                   # the std of each layer at the last step

Statistics are computed on the device and kept there; nothing waits for the device
until a result is read. The plots are in :mod:`coursekit.plots` (``plot_layer_std``,
``plot_histograms``, ``plot_percentiles``, ``plot_stat``).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import nn

from coursekit.validate import positive_int

__all__ = ["LayerStats", "default_layers", "activation_stds"]

# Layers whose outputs are worth watching; containers, dropout and reshaping are not.
_SKIPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
            nn.Flatten, nn.Unflatten, nn.Identity)


def default_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every leaf module of ``model`` except dropout, flatten and identity."""
    return [(name, m) for name, m in model.named_modules()
            if name and not list(m.children()) and not isinstance(m, _SKIPPED)]


def activation_stds(model: nn.Module, inputs: torch.Tensor, layers=None) -> torch.Tensor:
    r"""The standard deviation of each watched layer's output on one forward pass.

    The (population) standard deviation over all elements of the output, batch included,
    as :class:`LayerStats` records it; the pass runs without gradients, in the model's
    current mode. The quickest look at vanishing or exploding activations::

        >>> activation_stds(deep_mlp, x, layers=nn.Tanh)   # one value per tanh, input to output

    Args:
        model: the network.
        inputs: a batch for ``model(inputs)``.
        layers: which layers, in the order of the model's modules: as for :class:`LayerStats`
            (``None``: :func:`default_layers`; a type or tuple of types; names or modules).

    Returns:
        a float64 tensor of shape :math:`(L,)`, one value per layer; NaN for a layer that
        the forward pass did not use.
    """
    stats = LayerStats(model, layers, gradients=False, training_only=False, percentiles=())
    with stats, torch.no_grad():
        model(inputs)
    return torch.from_numpy(stats.series("std")[-1].copy())


class LayerStats:
    r"""Record statistics of each layer's output and of its gradient at every training step.

    A forward hook on each watched layer computes, for its output :math:`a` (all elements
    of the batch together):

    - ``mean``, ``std``: mean and (population) standard deviation of :math:`a`;
    - ``p<q>`` for each ``q`` in ``percentiles``: the :math:`q`-th percentile;
    - ``frac_zero``: fraction of elements with :math:`|a| \le` ``zero_tol`` (ReLU outputs that are 0);
    - ``frac_dead``: fraction of units (dimension 1: features or channels) that are zero
      for every sample and position of the batch, i.e. dead ReLUs;
    - ``frac_saturated``: fraction of elements with :math:`|a| \ge` ``saturate_at``
      (for ``tanh``: the flat tails where the gradient vanishes);
    - a histogram of :math:`a` over ``hist_range`` (values outside go to the edge bins),
      as fractions of the elements.

    With ``gradients=True`` the same statistics are recorded for :math:`\partial L/\partial a`,
    the gradient of the loss with respect to the layer's output, during the backward pass.

    Use it as a context manager: the hooks are registered on entry and removed on exit,
    even after an error.

    Args:
        model: the model to watch.
        layers: which layers: ``None`` (see :func:`default_layers`), a module type or tuple
            of types (e.g. ``nn.ReLU``), or an iterable of names or modules. Default: ``None``.
        every: record every ``every``-th call of each layer. Default: 1.
        gradients: also record output gradients. Default: ``True``.
        training_only: ignore forward passes in eval mode (e.g. validation). Default: ``True``.
        percentiles: the percentiles to record, in [0, 100]. Default: ``(5, 25, 50, 75, 95)``.
        bins: number of histogram bins. Default: 60.
        hist_range: ``(low, high)`` of the activation histograms. Default: ``(-4.0, 4.0)``.
        grad_hist_range: ``(low, high)`` of the gradient histograms; ``None`` uses
            ``hist_range`` scaled by 1e-3. Default: ``None``.
        saturate_at: threshold of ``frac_saturated``. Default: 0.97 (for ``tanh``).
        zero_tol: threshold of ``frac_zero`` and ``frac_dead``. Default: 0.
        max_samples: percentiles are computed on at most this many (evenly strided)
            elements, since sorting is costly. Default: 65536.

    Shape:
        - :meth:`series`: :math:`(R, L)`, for :math:`R` records and :math:`L` layers.
        - :meth:`histograms`: :math:`(R, L, \text{bins})`.
    """

    KINDS = ("act", "grad")

    def __init__(self, model: nn.Module, layers=None, *, every: int = 1, gradients: bool = True,
                 training_only: bool = True, percentiles: Iterable[float] = (5, 25, 50, 75, 95),
                 bins: int = 60, hist_range: tuple[float, float] = (-4.0, 4.0),
                 grad_hist_range: tuple[float, float] | None = None, saturate_at: float = 0.97,
                 zero_tol: float = 0.0, max_samples: int = 65536):
        positive_int(every, "every")
        positive_int(bins, "bins")
        positive_int(max_samples, "max_samples")
        self.percentiles = tuple(float(q) for q in percentiles)
        bad = [q for q in self.percentiles if not 0 <= q <= 100]
        if bad:
            raise ValueError(f"percentiles must be in [0, 100], got {bad}")
        low, high = hist_range
        if not low < high:
            raise ValueError(f"hist_range must be (low, high) with low < high, got {hist_range}")
        grad_hist_range = grad_hist_range or (low * 1e-3, high * 1e-3)
        self.model, self.every, self.gradients = model, every, gradients
        self.training_only, self.bins = training_only, bins
        self.ranges = {"act": (float(low), float(high)),
                       "grad": tuple(float(v) for v in grad_hist_range)}
        self.saturate_at, self.zero_tol, self.max_samples = saturate_at, zero_tol, max_samples
        self.stat_names = ("mean", "std", *(f"p{q:g}" for q in self.percentiles),
                           "frac_zero", "frac_dead", "frac_saturated")
        self._layers = self._select(model, layers)
        self.layers = [name for name, _ in self._layers]
        self._calls = [0] * len(self._layers)
        # per kind, per layer: lists of device tensors, one per record
        self._stats = {k: [[] for _ in self._layers] for k in self.KINDS}
        self._hists = {k: [[] for _ in self._layers] for k in self.KINDS}
        self._handles: list = []
        self._levels: dict[torch.device, torch.Tensor] = {}
        self._active = False

    @staticmethod
    def _select(model: nn.Module, layers) -> list[tuple[str, nn.Module]]:
        if layers is None:
            chosen = default_layers(model)
        elif isinstance(layers, type) or (
                isinstance(layers, tuple) and all(isinstance(t, type) for t in layers)):
            chosen = [(n, m) for n, m in model.named_modules() if n and isinstance(m, layers)]
        else:
            by_name = dict(model.named_modules())
            by_module = {id(m): n for n, m in by_name.items()}
            chosen = []
            for layer in layers:
                if isinstance(layer, str):
                    if layer not in by_name:
                        raise KeyError(f"model has no layer {layer!r}; layers: {[n for n in by_name if n]}")
                    chosen.append((layer, by_name[layer]))
                elif isinstance(layer, nn.Module) and id(layer) in by_module:
                    chosen.append((by_module[id(layer)], layer))
                else:
                    raise ValueError(f"layers must hold names or submodules of the model, got {layer!r}")
        if not chosen:
            raise ValueError(f"no layer of the model matches layers={layers!r}")
        return chosen

    # ---- hooks

    def __enter__(self) -> "LayerStats":
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def attach(self) -> "LayerStats":
        """Register the hooks (done by ``with``); returns ``self``."""
        if self._active:
            return self
        for i, (_, module) in enumerate(self._layers):
            self._handles.append(module.register_forward_hook(self._forward_hook(i)))
        self._active = True
        return self

    def remove(self) -> None:
        """Remove every hook (done at the end of ``with``); what was recorded stays."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._active = False

    def _forward_hook(self, i: int):
        def hook(module, inputs, output):
            if not self._active or not isinstance(output, torch.Tensor):
                return
            if self.training_only and not module.training:
                return
            self._calls[i] += 1
            if (self._calls[i] - 1) % self.every:
                return
            self._record("act", i, output.detach())
            if self.gradients and output.requires_grad:
                output.register_hook(self._gradient_hook(i))
        return hook

    def _gradient_hook(self, i: int):
        def hook(grad):
            if self._active:
                self._record("grad", i, grad.detach())
        return hook

    # ---- statistics

    @torch.no_grad()
    def _record(self, kind: str, i: int, a: torch.Tensor) -> None:
        a = a.float()
        flat = a.reshape(-1)                                   # (numel,)
        sample = flat[::-(-flat.numel() // self.max_samples)]   # <= max_samples, evenly strided
        q = self._quantile_levels(a.device)
        if a.dim() > 1:
            per_unit = a.transpose(0, 1).reshape(a.shape[1], -1)   # (units, N * positions)
        else:
            per_unit = a.reshape(1, -1)                            # (1, N)
        zero = a.abs() <= self.zero_tol
        stats = torch.cat([
            torch.stack([flat.mean(), flat.std(correction=0)]),
            torch.quantile(sample, q) if len(q) else q,           # (a sort: skipped when not asked for)
            torch.stack([zero.float().mean(),
                         (per_unit.abs() <= self.zero_tol).all(dim=1).float().mean(),
                         (a.abs() >= self.saturate_at).float().mean()]),
        ])
        low, high = self.ranges[kind]
        width = (high - low) / self.bins
        clamped = flat.clamp(low + width / 2, high - width / 2)   # outside values go to the edge bins
        hist = torch.histc(clamped, self.bins, low, high) / flat.numel()
        self._stats[kind][i].append(stats)
        self._hists[kind][i].append(hist)

    def _quantile_levels(self, device: torch.device) -> torch.Tensor:
        """The percentiles as fractions, on ``device`` (made once: no copy per step)."""
        if device not in self._levels:
            self._levels[device] = torch.tensor(self.percentiles, device=device) / 100
        return self._levels[device]

    def _check_kind(self, kind: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"kind must be 'act' or 'grad', got {kind!r}")
        if kind == "grad" and not self.gradients:
            raise ValueError("gradients were not recorded: create LayerStats(..., gradients=True)")

    def num_records(self, kind: str = "act") -> int:
        """The number of records of the layer recorded most often."""
        self._check_kind(kind)
        return max(len(s) for s in self._stats[kind])

    def _padded(self, lists: list[list[torch.Tensor]], width: int) -> np.ndarray:
        """Stack per-layer lists of records into ``(records, layers, width)``, NaN-padded."""
        out = np.full((max(len(s) for s in lists), len(lists), width), np.nan)
        for j, records in enumerate(lists):
            if records:
                out[:len(records), j] = torch.stack(records).cpu().numpy()   # (records_j, width)
        return out

    def series(self, stat: str = "std", kind: str = "act") -> np.ndarray:
        """One statistic of every layer at every record, shape ``(records, layers)``.

        Args:
            stat: one of :attr:`stat_names`. Default: ``"std"``.
            kind: ``"act"`` (layer outputs) or ``"grad"`` (their gradients). Default: ``"act"``.
        """
        self._check_kind(kind)
        if stat not in self.stat_names:
            raise KeyError(f"unknown statistic {stat!r}; recorded: {list(self.stat_names)}")
        table = self._padded(self._stats[kind], len(self.stat_names))   # (records, layers, stats)
        return table[:, :, self.stat_names.index(stat)]

    def histograms(self, kind: str = "act") -> np.ndarray:
        """Histograms of every layer at every record, shape ``(records, layers, bins)``;
        each sums to 1 (fractions of the elements)."""
        self._check_kind(kind)
        return self._padded(self._hists[kind], self.bins)

    def bin_edges(self, kind: str = "act") -> np.ndarray:
        """The ``bins + 1`` edges of the histograms of ``kind``."""
        self._check_kind(kind)
        return np.linspace(*self.ranges[kind], self.bins + 1)

    def clear(self) -> None:
        """Forget what was recorded (the hooks stay)."""
        for kind in self.KINDS:
            for records in (*self._stats[kind], *self._hists[kind]):
                records.clear()
        self._calls = [0] * len(self._layers)

    def __repr__(self) -> str:
        state = "attached" if self._active else "detached"
        return (f"LayerStats({len(self.layers)} layers, {self.num_records('act')} records, "
                f"{state})")
