"""coursekit: the Python package of the course on normalization, initialization and
regularization in deep learning.

Modules (one concept each):

- :mod:`coursekit.scaling`: feature scaling (``MinMaxScaler``, ``StandardScaler``) for tensors.
- :mod:`coursekit.data`: offline data sets as tensors with seeded train/validation/test splits.
- :mod:`coursekit.grading`: the machinery behind the assignments' check cells.
"""
__version__ = "0.1.0"
