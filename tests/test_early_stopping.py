"""EarlyStopping and Prechelt's criteria on hand-made sequences, one rule at a time."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from coursekit.regularization import (EarlyStopping, generalization_loss, stop_gl, stop_pq, stop_up,
                                      training_progress)

NAN = float("nan")


def run(stopper, values):
    return [stopper.step(v) for v in values]


def test_patience_counts_non_improving_steps():
    s = EarlyStopping(patience=3)
    assert run(s, [1.0, 0.5, 0.6, 0.7, 0.8]) == [False, False, False, False, True]
    assert (s.best, s.best_epoch, s.num_bad_epochs, s.stopped_epoch) == (0.5, 1, 3, 4)
    assert run(EarlyStopping(patience=1), [1.0, 1.0]) == [False, True]


@pytest.mark.parametrize("patience", [0, 1])
def test_patience_0_stops_at_the_first_step_that_does_not_improve(patience):
    # the rule is checked after a bad step only: an improving step never stops (Keras, Lightning)
    s = EarlyStopping(patience=patience)
    assert run(s, [3.0, 2.0, 1.0, 1.5, 0.5]) == [False, False, False, True, False]
    assert (s.best, s.best_epoch, s.num_bad_epochs, s.stopped_epoch) == (0.5, 4, 0, 3)
    assert run(EarlyStopping(patience=patience), [1.0]) == [False]
    assert run(EarlyStopping(patience=patience, mode="max"), [0.1, 0.2, 0.2]) == [False, False, True]


def test_an_improvement_resets_the_counter():
    s = EarlyStopping(patience=2)
    assert run(s, [3.0, 3.5, 2.0, 2.5, 1.0, 1.5, 1.2]) == [False] * 6 + [True]
    assert (s.best, s.best_epoch) == (1.0, 4)


def test_equal_values_do_not_improve():
    s = EarlyStopping(patience=5)
    run(s, [1.0, 1.0, 1.0])
    assert (s.best_epoch, s.num_bad_epochs) == (0, 2)


@pytest.mark.parametrize("mode, values, best, best_epoch, bad", [
    ("min", [1.0, 0.95, 0.9, 0.85], 0.85, 3, 0),      # 0.95 and 0.9 are not below 1.0 - 0.1
    ("min", [1.0, 0.89, 0.8], 0.89, 1, 1),             # 0.8 is not below 0.89 - 0.1
    ("max", [0.5, 0.55, 0.6, 0.65], 0.65, 3, 0),
    ("max", [0.5, 0.61, 0.7], 0.61, 1, 1),
])
def test_min_delta_is_a_margin_in_the_direction_of_the_mode(mode, values, best, best_epoch, bad):
    s = EarlyStopping(patience=10, min_delta=0.1, mode=mode)
    run(s, values)
    assert (s.best, s.best_epoch, s.num_bad_epochs) == pytest.approx((best, best_epoch, bad))


def test_mode_max_improves_upwards():
    s = EarlyStopping(patience=2, mode="max")
    assert run(s, [0.5, 0.7, 0.6, 0.65]) == [False, False, False, True]
    assert (s.best, s.best_epoch) == (0.7, 1)


def test_before_the_first_value_there_is_no_best():
    s = EarlyStopping()
    assert (s.best, s.best_epoch, s.num_bad_epochs, s.stopped_epoch) == (None, None, 0, None)


def test_the_best_starts_at_the_worst_value_like_keras_and_lightning():
    # +inf (mode "min") does not improve on the starting +inf; -inf does
    s = EarlyStopping(patience=3)
    run(s, [math.inf, 5.0])
    assert (s.best, s.best_epoch) == (5.0, 1)
    s = EarlyStopping(patience=3, mode="max")
    run(s, [-math.inf, math.inf, 7.0])
    assert (s.best, s.best_epoch, s.num_bad_epochs) == (math.inf, 1, 1)


def test_nan_is_never_an_improvement():
    s = EarlyStopping(patience=2)
    assert run(s, [1.0, NAN, NAN]) == [False, False, True]
    assert (s.best, s.best_epoch) == (1.0, 0)
    s = EarlyStopping(patience=3)
    run(s, [NAN, 2.0])
    assert (s.best, s.best_epoch, s.num_bad_epochs) == (2.0, 1, 0)
    s = EarlyStopping(patience=3, mode="max")
    run(s, [0.1, NAN])
    assert (s.best, s.num_bad_epochs) == (0.1, 1)
    s = EarlyStopping(patience=1)              # a NaN first value is a bad step like any other
    assert run(s, [NAN]) == [True]
    assert (s.best, s.best_epoch, s.num_bad_epochs, s.stopped_epoch) == (None, None, 1, 0)


@pytest.mark.parametrize("bad", [NAN, math.inf, -math.inf])
def test_check_finite_stops_at_once(bad):
    s = EarlyStopping(patience=3, check_finite=True)
    assert run(s, [4.0, 3.0, bad, 2.0]) == [False, False, True, False]
    assert (s.best, s.best_epoch, s.stopped_epoch) == (2.0, 3, 2)
    assert run(EarlyStopping(patience=3), [4.0, 3.0, bad]) == [False, False, False]   # off by default


def test_baseline_must_be_beaten_within_patience():
    # Keras: the best is tracked (and kept) from the first value, but only a value that
    # also beats the baseline resets the count
    s = EarlyStopping(patience=3, baseline=0.5)
    assert run(s, [0.9, 0.8, 0.85, 0.84]) == [False, False, True, True]   # 3 steps, none beat 0.5
    assert (s.best, s.best_epoch, s.num_bad_epochs, s.stopped_epoch) == (0.8, 1, 4, 2)
    s = EarlyStopping(patience=3, baseline=0.5)
    assert run(s, [0.9, 0.8, 0.7, 0.6, 0.65]) == [False] * 4 + [True]   # improving steps never stop
    s = EarlyStopping(patience=2, baseline=0.5)
    assert run(s, [0.9, 0.4, 0.45, 0.5, 0.41]) == [False, False, False, True, True]
    assert (s.best, s.best_epoch) == (0.4, 1)
    # min_delta applies to the baseline too, in the direction of the mode
    s = EarlyStopping(patience=1, baseline=0.5, min_delta=0.1, mode="max")
    run(s, [0.55])
    assert s.num_bad_epochs == 1
    run(s, [0.75])
    assert s.num_bad_epochs == 0


def test_start_from_epoch_ignores_the_warm_up():
    s = EarlyStopping(patience=0, start_from_epoch=2)
    assert run(s, [1.0, 2.0, 3.0, 4.0, 2.5, 2.6]) == [False, False, False, True, False, True]
    assert (s.best, s.best_epoch, s.stopped_epoch) == (2.5, 4, 3)
    s = EarlyStopping(patience=2, start_from_epoch=3, check_finite=True)
    assert run(s, [NAN, NAN, NAN]) == [False] * 3 and s.best is None and s.num_bad_epochs == 0


def test_tensor_values_are_accepted():
    s = EarlyStopping(patience=1)
    s.step(torch.tensor(2.0))
    assert s.best == 2.0 and isinstance(s.best, float)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"mode": "auto"}, r"mode must be 'min' or 'max', got 'auto'"),
    ({"patience": -1}, r"patience must be an integer >= 0, got -1"),
    ({"patience": 2.5}, r"got 2.5"),
    ({"min_delta": -0.01}, r"min_delta must be a number >= 0, got -0.01"),
    ({"min_delta": NAN}, r"min_delta must be a number >= 0, got nan"),
    ({"baseline": NAN}, r"baseline must be a number \(not NaN\) or None, got nan"),
    ({"baseline": "0.5"}, r"got '0.5'"),
    ({"start_from_epoch": -2}, r"start_from_epoch must be an integer >= 0, got -2"),
    ({"start_from_epoch": 1.5}, r"got 1.5"),
    ({"check_finite": "yes"}, r"check_finite must be True or False, got 'yes'"),
    ({"monitor": None}, r"monitor must be .* got None"),
])
def test_bad_arguments_name_the_value(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        EarlyStopping(**kwargs)


def test_best_weights_are_kept_and_restored():
    model = nn.Linear(3, 1)
    s = EarlyStopping(patience=5)
    weights = []
    for value in [1.0, 0.5, 0.7]:
        with torch.no_grad():
            model.weight.add_(1.0)
        weights.append(model.weight.detach().clone())
        s.step(value, model)
    s.restore(model)
    assert torch.equal(model.weight, weights[1])
    with pytest.raises(RuntimeError, match="pass the model"):
        EarlyStopping().restore(model)
    no_copy = EarlyStopping(restore_best=False)
    no_copy.step(1.0, model)
    assert no_copy.best_state is None


def test_repr_shows_the_settings():
    assert repr(EarlyStopping(patience=2)) == ("EarlyStopping(patience=2, min_delta=0.0, mode='min', "
                                               "restore_best=True, monitor='val_loss')")
    assert repr(EarlyStopping(baseline=1, check_finite=True)).endswith("baseline=1.0, check_finite=True)")


def test_reset_starts_afresh():
    s = EarlyStopping(patience=1)
    run(s, [1.0, 2.0])
    s.reset()
    assert (s.best, s.best_epoch, s.num_bad_epochs, s.stopped_epoch) == (None, None, 0, None)
    assert run(s, [5.0]) == [False] and s.best_epoch == 0


# --------------------------------------------------------------------------- Prechelt

def test_generalization_loss_is_the_percentage_above_the_best_so_far():
    gl = generalization_loss([2.0, 1.0, 1.5, 0.5, 1.0])
    np.testing.assert_allclose(gl, [0, 0, 50, 0, 100])
    np.testing.assert_allclose(generalization_loss(torch.tensor([4.0, 5.0])), [0, 25])


def test_training_progress_over_strips():
    p = training_progress([9.0, 8, 4, 2, 2, 2], k=3)
    assert np.isnan(p[:2]).all()
    np.testing.assert_allclose(p[2:], [1000 * (21 / 12 - 1), 1000 * (14 / 6 - 1), 1000 * (8 / 6 - 1), 0])


def test_stop_gl_fires_at_the_first_epoch_above_alpha():
    val = [1.0, 0.8, 0.82, 0.9, 0.7, 0.85]
    assert stop_gl(val, 5) == 3           # GL: 0, 0, 2.5, 12.5, ...
    assert stop_gl(val, 20) == 5          # 0.85 / 0.7 = +21 %
    assert stop_gl(val, 30) is None


def test_stop_pq_looks_at_strip_ends_only():
    train = [5, 4, 3, 2.9, 2.8, 2.8, 2.8, 2.8]
    val = [3.0, 2.0, 2.1, 2.5, 2.4, 2.6, 2.2, 2.3]
    # strips of k=2 end at t = 1, 3, 5, 7: GL = 0, 25, 30, 15; P_2 = 1000 (9/8 - 1) = 125, ...
    gl, p = generalization_loss(val), training_progress(train, 2)
    with np.errstate(divide="ignore"):
        quotient = gl / p
    assert quotient[1] == 0 and np.isinf(quotient[5])   # the training loss stopped moving
    assert stop_pq(train, val, alpha=0.5, k=2) == 3     # 25 / (1000 (5.9 / 5.8 - 1)) = 1.45 > 0.5
    assert stop_pq(train, val, alpha=2, k=2) == 5       # t = 3 gives 1.45; t = 5 divides by P = 0
    assert stop_pq(train[:4], val[:4], alpha=2, k=2) is None


def test_pq_never_fires_while_the_training_loss_decays_geometrically_to_zero():
    epochs = np.arange(40)
    train = 2.0 * 0.6 ** epochs                          # memorizing: the training loss -> 0
    val = 1.0 + 0.002 * np.maximum(epochs - 10, 0)       # the validation loss creeps up, 5.8 % by the end
    progress = training_progress(train)
    np.testing.assert_allclose(progress[4:], progress[4])    # relative progress stays the same
    assert stop_pq(train, val, alpha=0.5) is None            # GL / P_5 <= 5.8 / 2448
    assert stop_gl(val, 4.5) == 33                        # GL = 0.2 (t - 10) > 4.5


def test_stop_up_needs_s_successive_rising_strips():
    val = [5, 4, 3, 3.5, 3.2, 3.4, 3.6, 3.3, 3.8, 4.0]
    # k=2, strip ends t = 1, 3, 5, 7, 9 with values 4, 3.5, 3.4, 3.3, 4.0: rises only at t = 9
    assert stop_up(val, s=1, k=2) == 9
    assert stop_up(val, s=2, k=2) is None
    rising = [1.0, 0.9, 1.1, 1.2, 1.3, 1.4]
    assert stop_up(rising, s=1, k=1) == 2
    assert stop_up(rising, s=3, k=1) == 4
    assert stop_up([1.0, 0.5, 0.9, 0.4, 1.0, 1.0], s=2, k=1) is None   # the second rise is not successive


def test_prechelt_argument_errors():
    with pytest.raises(ValueError, match="positive integer, got 0"):
        training_progress([1.0, 2.0], k=0)
    with pytest.raises(ValueError, match="s must be a positive integer, got 0"):
        stop_up([1.0, 2.0], s=0)
    with pytest.raises(ValueError, match="one value per epoch, got 3 and 2"):
        stop_pq([1.0, 2.0, 3.0], [1.0, 2.0], alpha=1, k=1)
    with pytest.raises(ValueError, match=r"per-epoch values, got shape \(2, 2\)"):
        generalization_loss([[1.0, 2.0], [3.0, 4.0]])
    assert math.isnan(training_progress([1.0], k=2)[0])
