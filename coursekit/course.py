"""The course in one place: its chapters, in teaching order, and each chapter's assignment.

Everything else that lists chapters or assignments is derived from :data:`CHAPTERS`:
the tables of the book's introduction and *Assignments* page and of the README
(``tools/course_tables.py`` writes them; a test fails when they are stale), the tests of
the book and of the nbgrader pipeline, and the check that each solution notebook declares
the points written here (``tests/test_course.py``). ``_toc.yml`` stays, since Jupyter Book
reads it; a test holds its chapters to this list. ``CONTRIBUTING.md`` says how to add a
chapter and its assignment.

An assignment's points are declared here once, per test cell: nbgrader's metadata of each
test cell (``points``), the ``points=`` its checks are called with, and the table in the
notebook's first cell must all agree with :attr:`Assignment.tests`.

Example::

    >>> from coursekit.course import ASSIGNMENTS, chapter
    >>> ASSIGNMENTS["batchnorm"].autograded, ASSIGNMENTS["batchnorm"].total
    (20.0, 25.0)
    >>> chapter("book/regularization").assignment.name
    'dropout'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = ["Assignment", "Chapter", "CHAPTERS", "ASSIGNMENTS", "chapter", "assignment"]


@dataclass(frozen=True)
class Assignment:
    """One nbgrader assignment: ``solutions/<name>/<name>.ipynb`` (the instructor's source)
    and ``exercises/<name>/<name>.ipynb`` (what students download).

    Args:
        name: the assignment's folder and notebook name.
        title: its title on the *Assignments* page.
        implement: what the student implements, in a phrase (the *Assignments* page).
        graded: the functions and classes the student writes in the answer cells: what the
            trusted checker calls across its boundary.
        grading: the module of its checks, ``coursekit.grading.<name>``.
        reference: the module whose code the checks compare the student's with.
        tests: each autograded test cell's nbgrader ``grade_id`` and its points, in notebook
            order (``hidden_*`` cells are the hidden tests).
        manual: the points of the written answer, graded by hand.
    """

    name: str
    title: str
    implement: str
    graded: tuple[str, ...]
    grading: str
    reference: str
    tests: Mapping[str, float]
    manual: float = 5.0

    def __post_init__(self):
        object.__setattr__(self, "tests", MappingProxyType(dict(self.tests)))

    @property
    def autograded(self) -> float:
        """The points scored automatically: the sum over the test cells."""
        return float(sum(self.tests.values()))

    @property
    def total(self) -> float:
        """Autograded plus hand-graded points."""
        return self.autograded + self.manual

    @property
    def notebook(self) -> str:
        """The student notebook's path in the repository."""
        return f"exercises/{self.name}/{self.name}.ipynb"

    @property
    def source(self) -> str:
        """The instructor's source notebook's path in the repository."""
        return f"solutions/{self.name}/{self.name}.ipynb"


@dataclass(frozen=True)
class Chapter:
    """One chapter of the book: ``book/<name>.md``, a MyST notebook executed at build.

    Args:
        name: the page's name, ``book/<name>``.
        learn: what a reader learns, in a phrase (the introduction's table).
        modules: the ``coursekit`` modules the chapter's methods live in.
        assignment: the chapter's assignment, or ``None``.
    """

    name: str
    learn: str
    modules: tuple[str, ...]
    assignment: Assignment | None = field(default=None)

    @property
    def doc(self) -> str:
        """The page's document name, as ``_toc.yml`` writes it: ``book/<name>``."""
        return f"book/{self.name}"


CHAPTERS: tuple[Chapter, ...] = (
    Chapter(
        "scaling",
        "min-max normalization vs standardization, fitting on the training split only, and why "
        "scaling speeds up gradient descent (the condition number)",
        ("coursekit.scaling", "coursekit.linear"),
        Assignment(
            "scaling", "Feature scaling",
            "`MinMaxScaler` and `StandardScaler` for tensors, with scikit-learn's interface",
            graded=("MinMaxScaler", "StandardScaler"),
            grading="coursekit.grading.scaling", reference="coursekit.scaling",
            tests={"check_min_max_transform": 4, "check_min_max_inverse": 2,
                   "check_min_max_edge_cases": 2, "hidden_min_max": 2,
                   "check_standard_transform": 4, "check_standard_inverse": 2,
                   "check_standard_edge_cases": 2, "hidden_standard": 2})),
    Chapter(
        "batchnorm",
        "batch normalization: mini-batch statistics, learnable scale and shift, running "
        "statistics at inference, batch-size effects",
        ("coursekit.norm",),
        Assignment(
            "batchnorm", "Batch normalization",
            "the forward pass with running statistics, and the backward pass by hand",
            graded=("batch_norm", "batch_norm_backward"),
            grading="coursekit.grading.batchnorm", reference="coursekit.norm",
            tests={"check_batch_norm_train": 4, "check_batch_norm_running_stats": 3,
                   "check_batch_norm_eval": 3, "hidden_batch_norm": 2,
                   "check_batch_norm_backward": 5, "hidden_backward": 3})),
    Chapter(
        "normalization_family",
        "layer, instance, group and weight normalization, and which to choose when",
        ("coursekit.norm",),
        Assignment(
            "normalization", "The normalization family",
            "layer, instance and group normalization with `torch.nn.functional`'s semantics",
            graded=("layer_norm", "instance_norm", "group_norm"),
            grading="coursekit.grading.normalization", reference="coursekit.norm",
            tests={"check_layer_norm": 5, "hidden_layer_norm": 2, "check_instance_norm": 4,
                   "check_group_norm": 6, "hidden_group_norm": 3})),
    Chapter(
        "initialization",
        "zero and symmetric starts, vanishing and exploding signals, Xavier/Glorot and He/Kaiming",
        ("coursekit.init", "coursekit.measure"),
        Assignment(
            "initialization", "Weight initialization",
            "fans, Xavier/Glorot and He/Kaiming initializers with `torch.nn.init`'s semantics, "
            "per-layer activation spreads",
            graded=("calculate_fan_in_and_fan_out", "xavier_uniform_", "xavier_normal_",
                    "kaiming_uniform_", "kaiming_normal_", "layer_stds"),
            grading="coursekit.grading.initialization", reference="coursekit.init",
            tests={"check_fans": 3, "check_xavier_uniform": 3, "check_xavier_normal": 2,
                   "check_kaiming_uniform": 4, "check_kaiming_normal": 2,
                   "hidden_initializers": 2, "check_layer_stds": 3, "hidden_layer_stds": 1})),
    Chapter(
        "transfer",
        "transfer learning: a pre-trained body and a new head, freezing then fine-tuning with "
        "a smaller learning rate, against training from scratch on little data",
        ("coursekit.train", "coursekit.models"),
        None),
    Chapter(
        "regularization",
        "dropout, weight decay, data augmentation, noise, label smoothing, mixup and cutmix",
        ("coursekit.regularization",),
        Assignment(
            "dropout", "Dropout",
            "inverted dropout, forward and backward, in training and evaluation mode",
            graded=("dropout",),
            grading="coursekit.grading.dropout", reference="coursekit.regularization",
            tests={"check_dropout_forward": 5, "check_dropout_eval": 2,
                   "check_dropout_backward": 5, "check_dropout_edge_cases": 5,
                   "hidden_dropout": 3})),
    Chapter(
        "early_stopping",
        "validation curves, patience, Prechelt's stopping criteria, early stopping as "
        "regularization",
        ("coursekit.regularization",),
        Assignment(
            "early_stopping", "Early stopping",
            "an `EarlyStopping` class: patience, `min_delta`, both modes, restoring the best "
            "weights",
            graded=("EarlyStopping",),
            grading="coursekit.grading.early_stopping",
            reference="coursekit.regularization.early_stopping",
            tests={"check_patience": 4, "check_min_delta": 3, "check_mode_max": 2,
                   "check_best": 3, "check_restore_best": 2, "check_arguments": 2,
                   "hidden_random_sequences": 4})),
    Chapter(
        "tuning",
        "choosing hyperparameters on validation data: grid and random search, Bayesian "
        "optimization with a Gaussian process and expected improvement, Optuna and pruning",
        ("coursekit.tuning",),
        Assignment(
            "tuning", "Tuning hyperparameters",
            "the posterior of a Gaussian process (Cholesky, noise on the diagonal) and expected "
            "improvement, then grid, random search and Bayesian optimization on one budget",
            graded=("gp_posterior", "expected_improvement"),
            grading="coursekit.grading.tuning", reference="coursekit.tuning",
            tests={"check_gp_posterior": 3, "check_gp_noise": 2, "check_gp_lengthscale": 2,
                   "check_gp_nonnegative": 2, "check_gp_near_singular": 2, "hidden_gp_posterior": 2,
                   "check_ei_minimization": 2, "check_ei_zero_std": 2, "check_ei_xi": 1,
                   "hidden_ei": 2})),
    Chapter(
        "why_batchnorm",
        "the debate: internal covariate shift (Ioffe & Szegedy 2015) against loss-landscape "
        "smoothness (Santurkar et al. 2018)",
        ("coursekit.smoothness",),
        Assignment(
            "smoothness", "Lab: why batch normalization works",
            "internal covariate shift as a change of gradients, and probes of the loss landscape",
            graded=("internal_covariate_shift", "landscape_probe"),
            grading="coursekit.grading.smoothness", reference="coursekit.smoothness",
            tests={"check_ics": 7, "hidden_ics": 3, "check_probe": 7, "hidden_probe": 3})),
)

ASSIGNMENTS: Mapping[str, Assignment] = MappingProxyType(
    {c.assignment.name: c.assignment for c in CHAPTERS if c.assignment is not None})


def chapter(name: str) -> Chapter:
    """The chapter named ``name`` (``"batchnorm"`` or ``"book/batchnorm"``).

    Raises:
        KeyError: if no chapter has that name; the message lists the chapters.
    """
    short = name.removeprefix("book/")
    for c in CHAPTERS:
        if c.name == short:
            return c
    raise KeyError(f"no chapter {name!r}; the chapters are {[c.name for c in CHAPTERS]}")


def assignment(name: str) -> Assignment:
    """The assignment named ``name`` (``"dropout"``).

    Raises:
        KeyError: if no assignment has that name; the message lists the assignments.
    """
    if name not in ASSIGNMENTS:
        raise KeyError(f"no assignment {name!r}; the assignments are {list(ASSIGNMENTS)}")
    return ASSIGNMENTS[name]
