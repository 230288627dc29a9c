"""The nbgrader pipeline, end to end, in a temporary copy of the course.

generate_assignment (solutions/ -> a release identical to exercises/), then grade a class
of crafted submissions of every assignment and export the grades, exactly as an instructor
would: with the course's command (coursekit.classroom: preflight, parallel
`nbgrader autograde`, integrity checks), so every honest submission must also pass the
integrity checks.

Each assignment is released and graded in a course folder of its own, once per pytest-xdist
worker that runs one of its tests: `make test` hands each assignment's tests to one worker
(``SPLIT_BY_FIRST_PARAMETER`` in conftest.py), so the assignments are graded side by side.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from coursekit import classroom
from coursekit import course as registry
from conftest import ROOT, released_course

pytestmark = pytest.mark.slow

ASSIGNMENTS = list(registry.ASSIGNMENTS)


@pytest.fixture(scope="session")
def released(tmp_path_factory):
    """``released(assignment)``: a fresh course folder with that assignment generated (and the
    gradebook created), made once per assignment."""
    made: dict[str, Path] = {}

    def release(assignment: str) -> Path:
        if assignment not in made:
            made[assignment] = released_course(tmp_path_factory.mktemp(f"course-{assignment}"), assignment)
        return made[assignment]
    return release


def normalized(path: Path) -> dict:
    """A notebook's JSON without the fields nbgrader or Jupyter fill in differently each time."""
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).pop("widgets", None)
    for cell in nb["cells"]:
        cell["source"] = "".join(cell["source"])
    return nb


def test_assignments_exist():
    folders = {p.name for p in (ROOT / "solutions").iterdir() if p.is_dir()}
    assert folders == set(ASSIGNMENTS) == set(SUBMISSIONS), "every assignment needs crafted submissions here"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_exercises_are_generated_from_solutions(released, assignment):
    course = released(assignment)
    released = sorted(p.relative_to(course / "exercises") for p in (course / "exercises" / assignment).rglob("*")
                      if p.is_file())
    committed = sorted(p.relative_to(ROOT / "exercises") for p in (ROOT / "exercises" / assignment).rglob("*")
                       if p.is_file())
    assert released == committed, "exercises/ lists other files than nbgrader makes: run `make release`"
    for rel in released:
        if rel.suffix == ".ipynb":
            assert normalized(course / "exercises" / rel) == normalized(ROOT / "exercises" / rel), (
                f"exercises/{rel} is not what nbgrader generates from solutions/: run `make release`")
        else:
            assert (course / "exercises" / rel).read_bytes() == (ROOT / "exercises" / rel).read_bytes()


@pytest.mark.parametrize("folder", ["solutions", "exercises"])
def test_notebooks_are_committed_without_outputs(folder):
    for path in (ROOT / folder).rglob("*.ipynb"):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, f"{path} has outputs"


def test_release_holds_no_solution_or_hidden_test():
    for path in (ROOT / "exercises").rglob("*.ipynb"):
        text = path.read_text()
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "BEGIN MARK SCHEME"):
            assert marker not in text, f"{path} contains {marker!r}"


# --- autograding a class of submissions ---------------------------------------------------------

def edited(source_nb: dict, edits: list[tuple[str, str, str]]) -> dict:
    """The notebook with text replaced in the cells named by grade_id."""
    nb = json.loads(json.dumps(source_nb))
    for grade_id, old, new in edits:
        (cell,) = [c for c in nb["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id]
        source = "".join(cell["source"])
        assert old in source, f"{grade_id} no longer contains {old!r}: update this test"
        cell["source"] = source.replace(old, new)
    return nb


MINMAX_RETURN = "return (X - self.data_min) / self.data_range * (high - low) + low"
STD_RETURN = "return (X - self.mean) / self.scale"

# assignment -> student -> (edits of the solution notebook, grade cells expected to score 0)
SUBMISSIONS = {
    "scaling": {
        "correct": ([], set()),
        "refit_in_transform": ([
            ("min_max_scaler", MINMAX_RETURN,
             "lo, hi = X.amin(dim=0), X.amax(dim=0)\n        return (X - lo) / (hi - lo) * (high - low) + low"),
            ("standard_scaler", STD_RETURN, "return (X - X.mean(dim=0)) / X.std(dim=0, correction=0)"),
        # (refitting on a constant column also divides by zero: the edge-case checks catch it too)
        ], {"check_min_max_transform", "hidden_min_max", "check_standard_transform", "hidden_standard",
            "check_min_max_edge_cases", "check_standard_edge_cases"}),
        "nan_on_constant_feature": ([
            ("min_max_scaler", "torch.where(data_range == 0, torch.ones_like(data_range), data_range)", "data_range"),
            ("standard_scaler", "torch.where(std == 0, torch.ones_like(std), std)", "std"),
        ], {"check_min_max_edge_cases", "hidden_min_max", "check_standard_edge_cases", "hidden_standard"}),
        "unbiased_std": ([
            ("standard_scaler", "X.std(dim=0, correction=0)", "X.std(dim=0)"),
        ], {"check_standard_transform", "check_standard_inverse", "check_standard_edge_cases", "hidden_standard"}),
        "broken_inverse": ([
            ("min_max_scaler", "return (X - low) / (high - low) * self.data_range + self.data_min",
             "return X * self.data_range + self.data_min"),
            ("standard_scaler", "return X * self.scale + self.mean", "return X * self.scale"),
        ], {"check_min_max_inverse", "hidden_min_max", "check_standard_inverse", "hidden_standard"}),
        "correct_but_noisy": ([
            ("min_max_scaler", MINMAX_RETURN,
             "import sys, warnings\n        warnings.warn('a UserWarning from the student', UserWarning)\n"
             "        print('debug output on stderr', file=sys.stderr)\n        " + MINMAX_RETURN),
        ], set()),
    },
    "batchnorm": {
        "correct": ([], set()),
        "keras_momentum_and_no_variance_path": ([
            ("batch_norm", "running_mean.mul_(1 - momentum).add_(momentum * mean)",
             "running_mean.mul_(momentum).add_((1 - momentum) * mean)"),
            ("batch_norm_backward", "- x_hat * (g * x_hat).sum(dim=dims, keepdim=True))", ")"),
        ], {"check_batch_norm_running_stats", "hidden_batch_norm", "check_batch_norm_backward", "hidden_backward"}),
        "batch_statistics_in_eval": ([
            ("batch_norm", "    else:\n        mean, var = running_mean, running_var",
             "    else:\n        mean, var = input.mean(dim=dims), input.var(dim=dims, correction=0)"),
        ], {"check_batch_norm_eval", "hidden_batch_norm"}),
    },
}
SUBMISSIONS["normalization"] = {
    "correct": ([], set()),
    "instance_over_batch_and_wrong_groups": ([
        ("instance_norm", "dims = list(range(2, input.dim()))", "dims = [0] + list(range(2, input.dim()))"),
        ("group_norm", "x = input.reshape(N, num_groups, -1)",
         "x = input.reshape(N, C // num_groups, num_groups, -1).transpose(1, 2).reshape(N, num_groups, -1)"),
    ], {"check_instance_norm", "check_group_norm", "hidden_group_norm"}),
}
SUBMISSIONS["initialization"] = {
    "correct": ([], set()),
    "fan_in_only_and_no_gain": ([
        ("xavier_uniform_", "2.0 / (fan_in + fan_out)", "1.0 / fan_in"),
        ("kaiming_normal_", "std = calculate_gain(nonlinearity, a) / math.sqrt(fan)", "std = 1 / math.sqrt(fan)"),
    ], {"check_xavier_uniform", "check_kaiming_normal", "hidden_initializers"}),
    "linear_layers_measured": ([
        ("layer_stds", "if isinstance(layer, ACTIVATIONS):", "if isinstance(layer, nn.Linear):"),
    ], {"check_layer_stds", "hidden_layer_stds"}),
}
SUBMISSIONS["dropout"] = {
    "correct": ([], set()),
    "no_rescaling_and_dropout_in_eval": ([
        ("dropout", "return input * keep / (1 - p)", "return input * keep"),
        ("dropout", "if not training or p == 0:", "if p == 0:"),
    ], {"check_dropout_forward", "check_dropout_eval", "check_dropout_backward", "hidden_dropout"}),
    "nan_at_p_1": ([
        ("dropout", "if p == 1:\n        return input * 0", "if False:\n        pass"),
    ], {"check_dropout_edge_cases"}),
}
SUBMISSIONS["early_stopping"] = {
    "correct": ([], set()),
    "nan_improves": ([
        ("early_stopping", "if math.isnan(value):\n            improved = False\n        elif self.best is None:",
         "if self.best is None or math.isnan(self.best) or math.isnan(value):"),
    ], {"check_best", "hidden_random_sequences"}),
    "no_copy_of_the_best_weights": ([
        ("early_stopping", "{k: v.detach().clone() for k, v in model.state_dict().items()}", "model.state_dict()"),
    ], {"check_restore_best"}),
    "patience_0_stops_on_improvement": ([
        ("early_stopping", "            return False             # an improving step never stops\n"
                           "        self.num_bad_epochs += 1\n", "        else:\n            self.num_bad_epochs += 1\n"),
    ], {"check_patience", "hidden_random_sequences"}),
    "best_epoch_minus_1_before_the_first_value": ([
        ("early_stopping", "self.best_epoch = None       # the 0-based", "self.best_epoch = -1       # the 0-based"),
    ], {"check_patience", "check_min_delta", "check_mode_max", "check_best", "hidden_random_sequences"}),
}
SUBMISSIONS["smoothness"] = {
    "correct": ([], set()),
    "all_layers_updated_and_uphill_probe": ([
        ("internal_covariate_shift", "if j < i else old[j]", ""),
        ("landscape_probe", "p.copy_(w - eta * g)", "p.copy_(w + eta * g)"),
    ], {"check_ics", "hidden_ics", "check_probe", "hidden_probe"}),
    "probe_in_eval_mode": ([
        ("landscape_probe", "state = copy.deepcopy(model.state_dict())", "state = copy.deepcopy(model.state_dict())\n    model.eval()"),
        ("landscape_probe", "model.load_state_dict(state)", "model.load_state_dict(state)\n    model.train()"),
    ], {"check_probe", "hidden_probe"}),
}
# Each student makes one mistake in gp_posterior and one in expected_improvement: the two are
# graded by separate cells (every mistake alone: tests/test_grading_tuning.py).
SUBMISSIONS["tuning"] = {
    "correct": ([], set()),
    "noise_missing_from_the_diagonal_and_ei_for_maximization": ([
        ("gp_posterior", "K = k(X, X) + noise * torch.eye(len(X), dtype=X.dtype)", "K = k(X, X)"),
        ("expected_improvement", "improvement = best - mean - xi", "improvement = mean - best - xi"),
    ], {"check_gp_noise", "check_gp_near_singular", "hidden_gp_posterior",
        "check_ei_minimization", "check_ei_zero_std", "check_ei_xi", "hidden_ei"}),
    "lengthscale_squared_twice_and_ei_nan_at_zero_std": ([
        ("gp_posterior", "lengthscale ** 2))", "lengthscale ** 4))"),
        ("expected_improvement", "safe_std = torch.where(known, torch.ones_like(std), std)", "safe_std = std"),
        ("expected_improvement", "return torch.where(known, improvement.clamp(min=0), ei)", "return ei"),
    ], {"check_gp_lengthscale", "hidden_gp_posterior", "check_ei_zero_std", "hidden_ei"}),
    "variance_not_clamped_and_xi_ignored": ([
        ("gp_posterior", "var = (variance - (v ** 2).sum(0)).clamp(min=0)", "var = variance - (v ** 2).sum(0)"),
        ("expected_improvement", "improvement = best - mean - xi", "improvement = best - mean"),
    ], {"check_gp_nonnegative", "check_ei_xi", "hidden_ei"}),
    "explicit_inverse": ([
        ("gp_posterior", "alpha = torch.cholesky_solve(y[:, None], L)[:, 0]", "K_inv = torch.linalg.inv(K)\n    alpha = K_inv @ y"),
        ("gp_posterior", "var = (variance - (v ** 2).sum(0)).clamp(min=0)",
         "var = (variance - (K_star * (K_inv @ K_star)).sum(0)).clamp(min=0)"),
    ], {"check_gp_near_singular"}),
}
MANUAL = {"answer"}  # grade cells graded by hand
AUTOGRADED_MAX = {a: registry.assignment(a).autograded for a in SUBMISSIONS}
TOTAL_MAX = {a: registry.assignment(a).total for a in SUBMISSIONS}
CASES = [(a, s) for a in SUBMISSIONS for s in SUBMISSIONS[a]]


# a student of the class who submitted nothing for the assignment
ABSENT = "absent"


@pytest.fixture(scope="session")
def graded(released):
    """``graded(assignment)``: autograde a class of crafted submissions of the assignment
    (once), export the grades, and return the exported totals and the per-cell auto scores
    from the gradebook."""
    done: dict[str, tuple[dict, dict]] = {}

    def grade(assignment: str) -> tuple[dict, dict]:
        if assignment not in done:
            done[assignment] = _grade_class(released(assignment), assignment)
        return done[assignment]
    return grade


def _grade_class(course: Path, assignment: str) -> tuple[dict, dict]:
    students = SUBMISSIONS[assignment]
    source = json.loads((course / "solutions" / assignment / f"{assignment}.ipynb").read_text())
    for student, (edits, _) in students.items():
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True)
        (folder / f"{assignment}.ipynb").write_text(json.dumps(edited(source, edits)))
    folder = course / "submitted" / "unchanged_release" / assignment
    folder.mkdir(parents=True)
    shutil.copy(course / "exercises" / assignment / f"{assignment}.ipynb", folder)
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "normcourse") as gb:
        gb.update_or_create_student(ABSENT)
    # one shard (tests/test_classroom.py grades in parallel): the other core runs other tests
    results = classroom.grade(course, assignment, jobs=1, progress=lambda line: None)
    # "graded", not "flagged": the trusted checker's score of every submission (honest, or
    # with the mistakes of the table) is its in-notebook score
    assert {r.student: r.status for r in results} == dict.fromkeys([*students, "unchanged_release"], "graded")
    assert not any(r.repairs for r in results), [r for r in results if r.repairs]
    classroom.export(course)
    with open(course / "grades.csv") as f:
        totals = {(row["assignment"], row["student_id"]): row for row in csv.DictReader(f)}

    cells = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "normcourse") as gb:
        for student in [*students, "unchanged_release"]:
            nb = gb.find_submission_notebook(assignment, assignment, student)
            cells[assignment, student] = {g.name: (g.auto_score, g.max_score) for g in nb.grades}
    return totals, cells


@pytest.mark.parametrize("assignment", list(SUBMISSIONS))
def test_solution_gets_every_autograded_point(graded, assignment):
    totals, cells = graded(assignment)
    scores = cells[assignment, "correct"]
    assert sum(mx for name, (auto, mx) in scores.items() if name not in MANUAL) == AUTOGRADED_MAX[assignment]
    for name, (auto, mx) in scores.items():
        if name in MANUAL:
            assert auto is None, "the free-text answer is graded by hand"
        else:
            assert auto == mx, f"the solution lost points in {name}"
    assert float(totals[assignment, "correct"]["score"]) == AUTOGRADED_MAX[assignment]
    assert float(totals[assignment, "correct"]["max_score"]) == TOTAL_MAX[assignment]


@pytest.mark.parametrize("assignment", list(SUBMISSIONS))
def test_unchanged_release_scores_zero_without_breaking_the_batch(graded, assignment):
    totals, cells = graded(assignment)
    assert float(totals[assignment, "unchanged_release"]["score"]) == 0.0
    assert all(auto == 0 for auto, _ in cells[assignment, "unchanged_release"].values())
    for student in SUBMISSIONS[assignment]:
        assert (assignment, student) in totals, f"{student} is missing from the exported grades"
    # a student of the class who submitted nothing for this assignment is exported as such, not dropped
    assert totals[assignment, ABSENT]["status"] == "not submitted"
    assert totals[assignment, ABSENT]["score"] == ""


@pytest.mark.parametrize("assignment, student", [c for c in CASES if c[1] != "correct"])
def test_each_submission_loses_exactly_the_points_of_its_mistake(graded, assignment, student):
    totals, cells = graded(assignment)
    scores = cells[assignment, student]
    expected_zero = SUBMISSIONS[assignment][student][1]
    got_zero = {name for name, (auto, mx) in scores.items() if name not in MANUAL and auto == 0}
    partial = {name for name, (auto, mx) in scores.items() if name not in MANUAL and 0 < auto < mx}
    assert got_zero == expected_zero and not partial
    lost = sum(scores[name][1] for name in expected_zero)
    assert float(totals[assignment, student]["score"]) == AUTOGRADED_MAX[assignment] - lost
