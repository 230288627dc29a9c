"""Offline data sets as tensors, with seeded train / validation / test splits.

Nothing here touches the network:

- scikit-learn's bundled tables (``iris``, ``wine``, ``digits``, ``breast_cancer``) ship
  inside the scikit-learn package;
- MNIST-1D (Greydanus 2020) is *generated* locally with the ``mnist1d`` package's
  ``make_dataset`` (never ``get_dataset``, which downloads) and cached on disk as ``.npz``.

Example::

    >>> data = load_sklearn("wine", seed=0)
    >>> data.X_train.shape, data.num_classes
    (torch.Size([106, 13]), 3)
    >>> mnist = load_mnist1d()          # 4000 train+val / 1000 test signals of length 40
    >>> load_digit_images().X_train.shape     # scikit-learn's digits as 8x8 images
    torch.Size([1078, 1, 8, 8])
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from coursekit.validate import non_negative_int, positive_int

__all__ = ["Splits", "SKLEARN_DATASETS", "load_sklearn", "load_digit_images", "load_mnist1d", "cache_dir",
           "class_subset"]

SKLEARN_DATASETS = ("iris", "wine", "digits", "breast_cancer")


@dataclass(frozen=True)
class Splits:
    """A classification data set split three ways. Features are float, labels ``torch.long``."""

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]

    @property
    def num_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.target_names)

    def __repr__(self) -> str:
        return (f"Splits({self.name!r}, train={tuple(self.X_train.shape)}, "
                f"val={tuple(self.X_val.shape)}, test={tuple(self.X_test.shape)}, "
                f"classes={self.num_classes})")


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1 to leave training data, "
                         f"got {val_fraction} + {test_fraction} = {val_fraction + test_fraction}")


def load_sklearn(name: str, *, val_fraction: float = 0.2, test_fraction: float = 0.2,
                 seed: int = 0, stratify: bool = True,
                 dtype: torch.dtype = torch.float32) -> Splits:
    """Load one of scikit-learn's bundled classification sets as a seeded three-way split.

    Args:
        name: one of ``"iris"``, ``"wine"``, ``"digits"``, ``"breast_cancer"``.
        val_fraction: fraction of all samples put in the validation split. Default: 0.2.
        test_fraction: fraction of all samples put in the test split. Default: 0.2.
        seed: seed of the shuffle; the same seed gives the same split. Default: 0.
        stratify: keep the class proportions equal across splits. Default: ``True``.
        dtype: floating dtype of the features. Default: ``torch.float32``.

    The features are returned *unscaled*, in their original units: scaling is the
    student's job, fitted on ``X_train`` only.
    """
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    if name not in SKLEARN_DATASETS:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(SKLEARN_DATASETS)}")
    _check_fractions(val_fraction, test_fraction)
    bunch = getattr(datasets, f"load_{name}")()
    X, y = bunch.data, bunch.target
    idx = np.arange(len(y))
    holdout = val_fraction + test_fraction
    parts = {"train": idx, "val": idx[:0], "test": idx[:0]}
    if holdout > 0:
        parts["train"], rest = train_test_split(
            idx, test_size=holdout, random_state=seed, stratify=y if stratify else None)
        if val_fraction > 0 and test_fraction > 0:
            parts["val"], parts["test"] = train_test_split(
                rest, test_size=test_fraction / holdout, random_state=seed,
                stratify=y[rest] if stratify else None)
        else:
            parts["val" if val_fraction > 0 else "test"] = rest

    def tensors(i):
        return torch.as_tensor(X[i], dtype=dtype), torch.as_tensor(y[i], dtype=torch.long)

    feature_names = getattr(bunch, "feature_names", None)
    if feature_names is None:
        feature_names = [f"x{j}" for j in range(X.shape[1])]
    return Splits(name, *tensors(parts["train"]), *tensors(parts["val"]), *tensors(parts["test"]),
                  feature_names=tuple(str(f) for f in feature_names),
                  target_names=tuple(str(t) for t in bunch.target_names))


DIGIT_PIXEL_MAX = 16.0   # scikit-learn's digits: each pixel counts the ink in a 4x4 block, 0 to 16


def load_digit_images(*, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
                      dtype: torch.dtype = torch.float32) -> Splits:
    """scikit-learn's handwritten digits (1797 images of 8x8 pixels, 10 classes) as images
    for a 2-D CNN: ``X`` of shape ``(N, 1, 8, 8)``, pixels divided by 16 into ``[0, 1]``.

    The same seeded, stratified split as ``load_sklearn("digits", ...)`` with the same
    arguments (the same examples in the same order); only the shape and the pixel range differ.
    Dividing by the pixels' fixed maximum is not fitted on any split, so no information
    leaks from the validation or test images.

    Args:
        val_fraction: fraction of all images put in the validation split. Default: 0.2.
        test_fraction: fraction of all images put in the test split. Default: 0.2.
        seed: seed of the shuffle; the same seed gives the same split. Default: 0.
        dtype: floating dtype of the pixels. Default: ``torch.float32``.

    Shape:
        ``X_*``: :math:`(N, 1, 8, 8)` (one channel), ``y_*``: :math:`(N,)`.
    """
    flat = load_sklearn("digits", val_fraction=val_fraction, test_fraction=test_fraction,
                        seed=seed, stratify=True, dtype=dtype)

    def images(X: torch.Tensor) -> torch.Tensor:
        return (X / DIGIT_PIXEL_MAX).reshape(-1, 1, 8, 8)        # (N, 64) -> (N, C=1, H=8, W=8)

    return Splits("digits", images(flat.X_train), flat.y_train, images(flat.X_val), flat.y_val,
                  images(flat.X_test), flat.y_test,
                  feature_names=tuple(f"pixel ({r}, {c})" for r in range(8) for c in range(8)),
                  target_names=flat.target_names)


def cache_dir() -> Path:
    """Where generated data is cached: ``$COURSEKIT_CACHE`` if set, else
    ``$XDG_CACHE_HOME/coursekit``, else ``~/.cache/coursekit``."""
    if os.environ.get("COURSEKIT_CACHE"):
        return Path(os.environ["COURSEKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "coursekit"


def _mnist1d_arguments(args: dict) -> dict:
    """The generator's arguments with ``args`` applied.

    Raises:
        TypeError: if ``args`` names an argument the generator does not have.
    """
    from mnist1d.data import get_dataset_args   # imports matplotlib and requests: only to generate

    full = get_dataset_args(as_dict=True)
    unknown = sorted(set(args) - set(full))
    if unknown:
        raise TypeError(f"unknown MNIST-1D argument(s) {unknown}; allowed: "
                        f"{sorted(k for k in full if k != 'url')}")
    full.update(args)
    return full


def _generate_mnist1d(full: dict) -> dict[str, np.ndarray]:
    """The data set made by ``mnist1d``'s generator from all of its arguments ``full``."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    state = np.random.get_state()  # make_dataset seeds numpy's global generator
    try:
        d = make_dataset(ObjectView(full))
    finally:
        np.random.set_state(state)
    return {"x": d["x"], "y": d["y"], "x_test": d["x_test"], "y_test": d["y_test"]}


def _read_mnist1d(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cached MNIST-1D file, or None when it is missing or unreadable."""
    try:
        with np.load(path) as f:
            return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, KeyError, ValueError):
        return None


@contextlib.contextmanager
def _generating(path: Path):
    """Hold an exclusive lock on ``<path>.lock`` (POSIX ``flock``) while the data is generated;
    where the folder is read-only or there is no ``fcntl``, go on without one."""
    try:
        import fcntl
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a")
    except (ImportError, OSError):
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def load_mnist1d(*, val_fraction: float = 0.2, split_seed: int = 0,
                 dtype: torch.dtype = torch.float32, cache: str | os.PathLike | None = None,
                 **dataset_args) -> Splits:
    """MNIST-1D, generated locally and cached: 10 classes of 1D signals of length 40.

    The defaults reproduce the standard data set (5000 samples, generation seed 42): the
    generator's own 4000 / 1000 train/test split, and ``val_fraction`` of the 4000 training
    signals held out (seeded by ``split_seed``) for validation.

    Args:
        val_fraction: fraction of the generator's training split used for validation. Default: 0.2.
        split_seed: seed of the train/validation shuffle. Default: 0.
        dtype: floating dtype of the signals. Default: ``torch.float32``.
        cache: the cache directory; default :func:`cache_dir`.
        **dataset_args: overrides of ``mnist1d.data.get_dataset_args()``, e.g.
            ``num_samples=10000``, ``seed=1``, ``iid_noise_scale=0.05``, ``shuffle_seq=True``.

    The first call generates the data (a few seconds) and saves it as
    ``mnist1d-<hash of the arguments>.npz`` in the cache; later calls load that file. Processes
    that start with an empty cache together (chapters executed side by side) generate it once:
    the others wait for that file.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    dataset_args.pop("url", None)
    try:
        key = hashlib.sha1(json.dumps(dataset_args, sort_keys=True).encode()).hexdigest()[:12]
    except TypeError:   # a value JSON cannot hold: no generator argument takes one
        _mnist1d_arguments(dataset_args)   # names an unknown argument, if there is one
        raise TypeError(f"MNIST-1D arguments must be numbers, strings, booleans or lists of them, "
                        f"got {dataset_args!r}") from None
    folder = Path(cache).expanduser() if cache is not None else cache_dir()
    path = folder / f"mnist1d-{key}.npz"
    # only arguments the generator accepted have a file (a cached load skips importing it)
    arrays = _read_mnist1d(path)
    if arrays is None:  # missing or unreadable: (re)generate
        full = _mnist1d_arguments(dataset_args)   # a wrong name raises before anything is written
        with _generating(path):   # processes started together generate once: the others wait, then read
            arrays = _read_mnist1d(path)
            if arrays is None:
                arrays = _generate_mnist1d(full)
                try:
                    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
                    np.savez(tmp, **arrays)
                    os.replace(tmp, path)  # atomic: concurrent readers never see half a file
                except OSError:  # a read-only cache (e.g. in the grading sandbox): use the data uncached
                    pass

    n = len(arrays["y"])
    perm = np.random.default_rng(split_seed).permutation(n)
    n_val = int(round(val_fraction * n))
    val, train = perm[:n_val], perm[n_val:]

    def x(a):
        return torch.as_tensor(a, dtype=dtype)

    def y(a):
        return torch.as_tensor(a, dtype=torch.long)

    length = arrays["x"].shape[1]
    return Splits("mnist1d", x(arrays["x"][train]), y(arrays["y"][train]),
                  x(arrays["x"][val]), y(arrays["y"][val]),
                  x(arrays["x_test"]), y(arrays["y_test"]),
                  feature_names=tuple(f"t{i}" for i in range(length)),
                  target_names=tuple(str(d) for d in range(10)))


def class_subset(X: torch.Tensor, y: torch.Tensor, first: int, count: int = 5,
                 n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples of the classes ``first, ..., first + count - 1``, relabelled
    ``0, ..., count - 1``: a smaller task cut from a data set, e.g. the digits 0-4 to
    pre-train on and the digits 5-9 to fine-tune on.

    The examples keep their order; ``n`` keeps the first ``n`` of them (a small training
    set, as is typical of fine-tuning).

    Args:
        X: the inputs, shape ``(N, *)``.
        y: the labels, shape ``(N,)``, integers.
        first: the first class kept.
        count: how many consecutive classes are kept. Default: 5.
        n: keep only the first ``n`` examples of those classes. Default: ``None``, all.

    Returns:
        ``(X_subset, y_subset)``, with the labels shifted down by ``first``.

    Raises:
        ValueError: ``X`` and ``y`` of different lengths, ``first`` negative, ``count``
            or ``n`` not a positive integer, or no label in the range.
    """
    non_negative_int(first, "first")
    positive_int(count, "count")
    if n is not None:
        positive_int(n, "n", what="a positive integer or None")
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} examples but y has {len(y)} labels")
    keep = (y >= first) & (y < first + count)
    if not keep.any():
        labels = f"the labels run from {y.min().item()} to {y.max().item()}" if len(y) else "y is empty"
        raise ValueError(f"no label is in [{first}, {first + count}): {labels}")
    return X[keep][:n], y[keep][:n] - first
