"""coursekit: the Python package of the course on normalization, initialization and
regularization in deep learning.

Modules (one concept each):

- :mod:`coursekit.scaling`: feature scaling (``MinMaxScaler``, ``StandardScaler``) for tensors.
- :mod:`coursekit.data`: offline data sets as tensors with seeded train/validation/test splits.
- :mod:`coursekit.models`: ``mlp``, the multilayer perceptrons of the chapters.
- :mod:`coursekit.linear`: condition numbers and gradient descent for linear models.
- :mod:`coursekit.train`: ``fit``, ``evaluate``, ``predict`` and ``fit_seeds``, on CPU, GPU or
  several processes; :mod:`coursekit.callbacks` (``Callback``, the built-in callbacks),
  :mod:`coursekit.history` (``History``) and
  :mod:`coursekit.distributed` (DDP set-up, ``SyncBatchNorm``) beside it.
- :mod:`coursekit.norm`: batch, layer, instance, group and weight normalization in plain ops.
- :mod:`coursekit.init`: fans, gains, Xavier/Glorot, He/Kaiming and LSUV initialization.
- :mod:`coursekit.regularization`: dropout, noise, augmentations (mixup, cutmix, cutout,
  label smoothing), the L1 penalty and the max-norm constraint, ``EarlyStopping`` and
  Prechelt's stopping criteria.
- :mod:`coursekit.measure`: per-layer activation and gradient statistics, recorded by hooks.
- :mod:`coursekit.smoothness`: Santurkar et al.'s measurements (noisy BN, internal covariate
  shift as a change of gradients, loss-landscape probes).
- :mod:`coursekit.tuning`: grid, random and Bayesian search of hyperparameters (a Gaussian
  process, expected improvement), minimizing; the SQLite storage of an Optuna study.
- :mod:`coursekit.plots`: the figures the chapters share (seed bands, sweeps, layer statistics).
- :mod:`coursekit.grading`: the machinery behind the assignments' check cells.
- :mod:`coursekit.classroom`: grading a class with nbgrader, one module per stage.
- :mod:`coursekit.course`: the registry of chapters and assignments (graded names, points).
- :mod:`coursekit.validate` and :mod:`coursekit.modes`: argument checks, and a model's
  train/eval modes kept across a block.
"""
__version__ = "0.1.0"
