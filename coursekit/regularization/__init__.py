"""Regularization: what makes a network generalize beyond the examples it was trained on.

One concept per module:

- :mod:`~coursekit.regularization.stochastic`: noise during training only. Inverted
  :func:`dropout` (PyTorch's convention: ``p`` is the probability of *dropping*) and its
  module :class:`Dropout`, and Gaussian input noise :func:`add_noise`;
- :mod:`~coursekit.regularization.augment`: new training examples or softer targets, for
  ``fit(..., augment=...)``: :func:`random_shift`, :func:`smooth_labels`, :func:`mixup`
  and :func:`cutmix` (for 1D signals), :func:`cutout` (for images and 1D signals);
- :mod:`~coursekit.regularization.penalties`: the L1 penalty (:func:`l1_penalty`, and the
  ``fit`` callback :class:`L1`, a proximal step that gives exact zeros) and the max-norm
  constraint (:func:`max_norm_`, and the ``fit`` callback :class:`MaxNorm`);
- :mod:`~coursekit.regularization.early_stopping`: :class:`EarlyStopping` (also a ``fit``
  callback) and Prechelt's (1998) stopping criteria GL, PQ and UP.

Weight decay needs no code of its own: ``torch.optim.SGD(..., weight_decay=λ)`` adds
:math:`\\lambda w` to the gradient (an L2 penalty :math:`\\tfrac{\\lambda}{2}\\|w\\|^2`),
``torch.optim.AdamW`` decays the weights directly (decoupled weight decay).
"""
from coursekit.regularization.augment import cutmix, cutout, mixup, random_shift, smooth_labels
from coursekit.regularization.early_stopping import (EarlyStopping, generalization_loss, stop_gl,
                                                     stop_pq, stop_up, training_progress)
from coursekit.regularization.penalties import L1, MaxNorm, l1_penalty, l2_penalty, max_norm_
from coursekit.regularization.stochastic import Dropout, add_noise, dropout

__all__ = ["dropout", "Dropout", "add_noise", "random_shift", "smooth_labels", "mixup", "cutmix",
           "cutout", "l1_penalty", "l2_penalty", "L1", "max_norm_", "MaxNorm",
           "EarlyStopping", "generalization_loss", "training_progress", "stop_gl", "stop_pq", "stop_up"]
