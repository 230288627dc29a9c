"""Keras's and PyTorch Lightning's own EarlyStopping tests, as a table, run against coursekit.

The sources, read in the public repositories:

- Keras 3: ``keras/src/callbacks/early_stopping_test.py`` (class ``EarlyStoppingTest``), for
  ``keras/src/callbacks/early_stopping.py``;
- Lightning: ``tests/tests_pytorch/callbacks/test_early_stopping.py``, for
  ``src/lightning/pytorch/callbacks/early_stopping.py``.

Every peer test that feeds a sequence of monitored values is a row of ``SEQUENCES``: the
values, the settings, the epoch at which the peer stops training (0-based, as Keras's
``stopped_epoch`` and Lightning's ``trainer.current_epoch - 1``; ``None``: it does not
stop) and the best epoch the peer keeps (Keras's ``best_epoch``, whose weights it restores;
Lightning's epoch of ``best_score``). Each row runs twice: by hand through ``step`` (as the
peers' unit tests call ``on_epoch_end``), and as a callback of ``coursekit.train.fit``, where
the restored weights must be those of the best epoch. Settings the peer leaves at its
default are written out, since the defaults differ (Keras: ``patience=0``; Lightning:
``patience=3``, ``check_finite=True``; coursekit: ``patience=5``, ``check_finite=False``).

Peer tests that train a real model with a weak assertion (``len(history) >= patience``) are
rewritten as properties over random sequences or as scripted fits (``ADAPTED``); those that
test machinery coursekit does not have are listed in ``NOT_APPLICABLE`` with the reason, and
a test checks that every test function of the two files is accounted for. Where the peers
disagree with each other, ``DIFFERENCES`` records which one coursekit follows.
"""
from __future__ import annotations

import math
import pickle
import random

import pytest
import torch
from torch import nn

from coursekit.callbacks import Callback
from coursekit.regularization import EarlyStopping
from coursekit.regularization.early_stopping import MonitorNotRecorded
from coursekit.train import fit

NAN, INF = float("nan"), float("inf")

KERAS = "keras/src/callbacks/early_stopping_test.py"
LIGHTNING = "tests/tests_pytorch/callbacks/test_early_stopping.py"

# (source, peer test [case], values, EarlyStopping options, stop epoch, best epoch)
SEQUENCES = [
    # Keras: stopped_epoch == max(patience, 1) + 2 for patience 0..3; patience 0 stops at the
    # first epoch that does not improve (epoch 3), never on an improving one
    *[(KERAS, f"test_early_stopping_patience[patience={p}]", [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5],
       dict(monitor="loss", patience=p), max(p, 1) + 2, 2) for p in (0, 1, 2, 3)],
    (KERAS, "test_early_stopping_final_weights_when_restoring_model_weights[patience]",
     [0.2, 0.15, 0.1, 0.11, 0.12], dict(patience=2), 4, 2),
    # no epoch beats the baseline: 5 epochs trained, the best one (epoch 2) restored
    (KERAS, "test_early_stopping_final_weights_when_restoring_model_weights[baseline]",
     [0.9, 0.8, 0.7, 0.71, 0.72, 0.73], dict(patience=5, baseline=0.5), 4, 2),
    *[(LIGHTNING, f"{name}[{values}-{patience}-{stop}]", values, dict(monitor=monitor, patience=patience), stop, best)
      for name, monitor in (("test_early_stopping_patience", "val_loss"),
                            ("test_early_stopping_patience_train", "train_loss"))
      for values, patience, stop, best in (([6, 5, 5, 5, 5, 5], 3, 4, 1), ([6, 5, 4, 4, 3, 3], 1, 3, 2),
                                           ([6, 5, 6, 5, 5, 5], 3, 4, 1))],
    (LIGHTNING, "test_early_stopping_thresholds[None-None]", [8, 4, 2, 3, 4, 5, 8, 10], dict(patience=3), 5, 2),
    *[(LIGHTNING, f"test_early_stopping_on_non_finite_monitor[{bad}]", [4, 3, bad, 2, 1],
       dict(patience=3, check_finite=True), 2, 1) for bad in (INF, NAN)],
    (LIGHTNING, "test_early_stopping_reasons[patience exhausted]", [10.0] * 10, dict(patience=2), 2, 0),
    (LIGHTNING, "test_early_stopping_reasons[non-finite metric]", [1.0, 0.5] + [NAN] * 8,
     dict(patience=3, check_finite=True), 2, 1),
    (LIGHTNING, "test_early_stopping_reasons[not stopped]", [5.0, 4.0, 3.0], dict(patience=3), None, 2),
]


def by_hand(values, **options):
    """Step through ``values`` as the peers' unit tests do: (stop epoch or None, best epoch)."""
    options.pop("monitor", None)
    stopper = EarlyStopping(**options)
    for epoch, value in enumerate(values):
        if stopper.step(value):
            assert stopper.stopped_epoch == epoch
            return epoch, stopper.best_epoch
    assert stopper.stopped_epoch is None
    return None, stopper.best_epoch


class Scripted(Callback):
    """Logs the next scripted value under ``key`` and stamps the model's weight with the
    0-based epoch, like Keras's ``DummyModel.set_weight_to_epoch``; ``stop_at`` plays the
    other callback of Keras's test that requests a stop."""

    def __init__(self, values, key="val_loss", stop_at=None):
        self.values, self.key, self.stop_at = values, key, stop_at

    def on_epoch_end(self, state):
        epoch = state.epoch - 1
        with torch.no_grad():
            state.model.weight.fill_(epoch)
        if epoch == self.stop_at:
            state.stop_training = True
        return {self.key: float(self.values[epoch])}


def fit_scripted(stoppers, values, key="val_loss", stop_at=None, epochs=None):
    """Run ``fit`` (a real one, on a tiny problem) with the scripted values; the history."""
    torch.manual_seed(0)
    model = nn.Linear(2, 2, bias=False)
    data = (torch.randn(8, 2), torch.tensor([0, 1] * 4))
    history = fit(model, data, data, epochs=epochs or len(values), batch_size=4, progress=False, device="cpu",
                  callbacks=[Scripted(values, key, stop_at), *stoppers])
    return model, history


@pytest.mark.parametrize("source, test, values, options, stop, best", SEQUENCES,
                         ids=[f"{'keras' if s == KERAS else 'lightning'}-{t}" for s, t, *_ in SEQUENCES])
def test_peer_sequences_by_hand(source, test, values, options, stop, best):
    assert by_hand(values, **options) == (stop, best)


@pytest.mark.parametrize("source, test, values, options, stop, best", SEQUENCES,
                         ids=[f"{'keras' if s == KERAS else 'lightning'}-{t}" for s, t, *_ in SEQUENCES])
def test_peer_sequences_as_a_fit_callback(source, test, values, options, stop, best):
    stopper = EarlyStopping(**options)
    model, history = fit_scripted([stopper], values, key=stopper.monitor)
    assert history.num_epochs == (len(values) if stop is None else stop + 1)
    assert (stopper.stopped_epoch, stopper.best_epoch) == (stop, best)
    assert torch.all(model.weight == best), "the restored weights are not those of the best epoch"


def test_keras_restores_the_best_weights_when_another_callback_stops():
    """Keras ``test_early_stopping_final_weights_when_restoring_model_weights``, third case:
    a stop requested by another callback at epoch 3 still restores epoch 2."""
    stopper = EarlyStopping(patience=5, baseline=0.5, restore_best=True)
    model, history = fit_scripted([stopper], [0.9, 0.8, 0.7, 0.71, 0.72, 0.73], stop_at=3)
    assert history.num_epochs == 4 and stopper.stopped_epoch is None
    assert torch.all(model.weight == 2)


def test_lightning_multiple_callbacks_stop_at_the_first_that_fires():
    """Lightning ``test_multiple_early_stopping_callbacks`` (single device): "abc" with
    patience 3 would stop at 5, "cba" (a constant) with patience 3 at 3; in either order,
    training stops at 3."""
    abc = [8, 4, 2, 3, 4, 5, 8, 10]

    class Cba(Callback):
        def on_epoch_end(self, state):
            return {"cba": 0.0}

    for order in (1, -1):
        stoppers = [EarlyStopping(monitor="abc", patience=3), EarlyStopping(monitor="cba", patience=3)][::order]
        torch.manual_seed(0)
        model = nn.Linear(2, 2, bias=False)
        data = (torch.randn(8, 2), torch.tensor([0, 1] * 4))
        history = fit(model, data, epochs=20, batch_size=4, progress=False, device="cpu",
                      callbacks=[Scripted(abc + [10] * 12, key="abc"), Cba(), *stoppers])
        assert history.num_epochs - 1 == 3


def test_keras_an_unknown_monitor_is_a_value_error():
    """Keras ``test_early_stopping``, last case: ``monitor="unknown"`` raises ValueError. Ours
    names the monitor and what the run records (and is a KeyError too, as before)."""
    with pytest.raises(ValueError, match=r"'unknown'.*recorded: \[.*'val_loss'"):
        fit_scripted([EarlyStopping(monitor="unknown")], [1.0, 2.0])
    assert issubclass(MonitorNotRecorded, KeyError)


def test_lightning_an_unknown_mode_raises():
    """Lightning ``test_early_stopping_mode_options``: an unknown mode raises (a
    MisconfigurationException there, a ValueError naming the value here)."""
    with pytest.raises(ValueError, match="unknown_option"):
        EarlyStopping(mode="unknown_option")


def test_lightning_squeezes_a_one_element_tensor():
    """Lightning ``test_early_stopping_squeezes``: a logged ``tensor([[[0]]])`` is the value 0."""
    stopper = EarlyStopping()
    stopper.step(torch.tensor([[[0.0]]]))
    assert stopper.best == 0.0 and isinstance(stopper.best, float)


def test_lightning_pickling():
    """Lightning ``test_pickling``: the callback survives pickle with the same attributes."""
    stopper = EarlyStopping(monitor="foo", baseline=1.0, start_from_epoch=2)
    assert vars(pickle.loads(pickle.dumps(stopper))) == vars(stopper)


# --------------------------------------------------------------------------- adapted

def _random_values(rng, n):
    return [rng.choice([NAN, 0.1, 0.3, 0.5, 0.7, 0.9, 1.1]) for _ in range(n)]


def test_keras_with_baseline_trains_at_least_patience_epochs():
    """Keras ``test_early_stopping_with_baseline`` (baseline 0.6, patience 3, a random model:
    ``len(history) >= patience``), as a property over random sequences."""
    rng = random.Random(0)
    for _ in range(500):
        patience = rng.randint(1, 5)
        stop, _ = by_hand(_random_values(rng, 20), patience=patience, baseline=rng.choice([0.2, 0.6, 1.0]))
        assert stop is None or stop + 1 >= patience


def test_keras_with_start_from_epoch_trains_at_least_the_warm_up_and_patience():
    """Keras ``test_early_stopping_with_start_from_epoch``: ``len(history) >= patience +
    start_from_epoch``, and ``>= start_from_epoch`` for patience 0, as a property."""
    rng = random.Random(1)
    for _ in range(500):
        patience, start = rng.randint(0, 4), rng.randint(0, 6)
        stop, _ = by_hand(_random_values(rng, 20), patience=patience, start_from_epoch=start)
        assert stop is None or stop + 1 >= max(patience, 1) + start


def test_keras_reuse_starts_afresh_in_every_fit():
    """Keras ``test_early_stopping_reuse`` and ``test_early_stopping_reuse_across_models``
    (regression test for keras-team/keras#20256: a stale ``best`` from an earlier fit must not
    stop the next one): one stopper, three fits; the later fits' values are all worse than
    the first fit's best, and each fit still trains past ``patience`` epochs."""
    stopper = EarlyStopping(monitor="loss", patience=3)
    runs = [[0.1, 0.05, 0.06, 0.07, 0.08, 0.09], [5.0, 4.0, 3.0, 2.0, 1.0, 1.5, 1.6, 1.7, 1.8],
            [9.0, 8.0, 8.5, 8.6, 8.7, 8.8]]
    for values, (stop, best) in zip(runs, [(4, 1), (7, 4), (4, 1)]):
        _, history = fit_scripted([stopper], values, key="loss")
        assert (history.num_epochs, stopper.stopped_epoch, stopper.best_epoch) == (stop + 1, stop, best)
        assert history.num_epochs > stopper.patience


def test_lightning_no_val_step_stops_on_the_training_loss():
    """Lightning ``test_early_stopping_no_val_step``: monitoring the training loss with
    ``min_delta=0.1, patience=0`` and no validation data, a real training run stops before
    ``max_epochs``."""
    torch.manual_seed(0)
    X = torch.randn(64, 5)
    y = (X[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 2))
    stopper = EarlyStopping(monitor="train_loss", min_delta=0.1, patience=0)
    history = fit(model, (X, y), epochs=10, batch_size=16, progress=False, device="cpu",
                  optimizer=lambda p: torch.optim.SGD(p, lr=0.1), callbacks=[stopper])
    assert history.num_epochs < 10 and stopper.stopped_epoch == history.num_epochs - 1


ADAPTED = {
    (KERAS, "test_early_stopping_with_baseline"): test_keras_with_baseline_trains_at_least_patience_epochs,
    (KERAS, "test_early_stopping_with_start_from_epoch"):
        test_keras_with_start_from_epoch_trains_at_least_the_warm_up_and_patience,
    (KERAS, "test_early_stopping_reuse"): test_keras_reuse_starts_afresh_in_every_fit,
    (KERAS, "test_early_stopping_reuse_across_models"): test_keras_reuse_starts_afresh_in_every_fit,
    (KERAS, "test_early_stopping"): test_keras_an_unknown_monitor_is_a_value_error,
    (KERAS, "test_early_stopping_final_weights_when_restoring_model_weights"):
        test_keras_restores_the_best_weights_when_another_callback_stops,
    (LIGHTNING, "test_multiple_early_stopping_callbacks"): test_lightning_multiple_callbacks_stop_at_the_first_that_fires,
    (LIGHTNING, "test_early_stopping_mode_options"): test_lightning_an_unknown_mode_raises,
    (LIGHTNING, "test_early_stopping_squeezes"): test_lightning_squeezes_a_one_element_tensor,
    (LIGHTNING, "test_pickling"): test_lightning_pickling,
    (LIGHTNING, "test_early_stopping_no_val_step"): test_lightning_no_val_step_stops_on_the_training_loss,
}

NOT_APPLICABLE = {
    (KERAS, "test_early_stopping[mode='auto']"):
        "mode='auto' infers the direction from the metric's name; coursekit has no 'auto': "
        "mode is 'min' (the default) or 'max', given explicitly",
    (LIGHTNING, "test_early_stopping_state_key"): "Lightning's key for the callback's state in its checkpoints",
    (LIGHTNING, "test_resume_early_stopping_from_checkpoint"):
        "Lightning's Trainer checkpoints and resumes callback state; coursekit's fit has no resume",
    (LIGHTNING, "test_early_stopping_no_extraneous_invocations"): "Lightning's Trainer hook dispatch",
    (LIGHTNING, "test_early_stopping_thresholds[stopping_threshold, divergence_threshold]"):
        "stopping_threshold and divergence_threshold are Lightning options coursekit does not have",
    (LIGHTNING, "test_min_epochs_min_steps_global_step"):
        "the Trainer's min_epochs/min_steps; coursekit's fit has no minimum (use start_from_epoch)",
    (LIGHTNING, "test_multiple_early_stopping_callbacks[ddp_spawn, dist_diverge_epoch]"):
        "ranks that log different values: coursekit's fit all-reduces the logged values before "
        "any callback runs, so every rank sees the same value and takes the same decision",
    (LIGHTNING, "test_multiple_early_stopping_callbacks[check_on_train_epoch_end]"):
        "coursekit checks once per epoch, after validation; there is no separate check at the "
        "end of the training epoch (monitor 'train_loss' for the training loss)",
    (LIGHTNING, "test_check_on_train_epoch_end_smart_handling"):
        "val_check_interval / check_val_every_n_epoch: coursekit validates once per epoch",
    (LIGHTNING, "test_early_stopping_log_info"): "Lightning's rank-aware logging",
    (LIGHTNING, "test_early_stopping_reasons[thresholds, state persistence]"):
        "stopping_reason and the thresholds are Lightning's; coursekit records stopped_epoch only",
}

# Where the peers disagree: (what, Keras, Lightning, coursekit)
DIFFERENCES = [
    ("a non-improving first value (NaN) with patience 0 or 1",
     "does not stop at epoch 0 (`if self.wait >= self.patience and epoch > 0`)",
     "stops at epoch 0 (wait_count 1 >= patience)",
     "stops at epoch 0, like Lightning: the rule has no special first epoch"),
    ("a NaN or infinite value, by default",
     "no check: a step without improvement",
     "check_finite=True: stops at once",
     "check_finite=False (Keras's behaviour and the assignment's rule); check_finite=True is Lightning's"),
    ("weights kept when no value ever improves",
     "those of the first monitored epoch",
     "(restoring is ModelCheckpoint's job)",
     "none: restore() raises, and fit leaves the last weights"),
]


def test_differences_between_the_peers():
    assert by_hand([NAN, 1.0], patience=1) == (0, None)                        # Lightning's answer
    assert by_hand([NAN, 1.0], patience=1, start_from_epoch=1) == (None, 1)
    assert by_hand([4, 3, NAN, 2, 1], patience=3) == (None, 4)                # Keras's answer
    stopper = EarlyStopping(patience=2)
    model, history = fit_scripted([stopper], [NAN, NAN, NAN])                 # no value improves:
    assert history.num_epochs == 2 and stopper.best_state is None              # nothing to restore,
    assert torch.all(model.weight == 1)                                        # the last weights stay


PEER_TESTS = {  # every test function of the two files, as read
    KERAS: {"test_early_stopping", "test_early_stopping_patience", "test_early_stopping_reuse",
            "test_early_stopping_reuse_across_models", "test_early_stopping_with_baseline",
            "test_early_stopping_final_weights_when_restoring_model_weights",
            "test_early_stopping_with_start_from_epoch"},
    LIGHTNING: {"test_early_stopping_state_key", "test_resume_early_stopping_from_checkpoint",
                "test_early_stopping_no_extraneous_invocations", "test_early_stopping_patience",
                "test_early_stopping_patience_train", "test_pickling", "test_early_stopping_no_val_step",
                "test_early_stopping_thresholds", "test_early_stopping_on_non_finite_monitor",
                "test_min_epochs_min_steps_global_step", "test_early_stopping_mode_options",
                "test_multiple_early_stopping_callbacks", "test_check_on_train_epoch_end_smart_handling",
                "test_early_stopping_squeezes", "test_early_stopping_log_info", "test_early_stopping_reasons"},
}


def test_every_peer_test_is_run_adapted_or_explained():
    covered = {source: set() for source in PEER_TESTS}
    for source, name, *_ in SEQUENCES:
        covered[source].add(name.split("[")[0])
    for source, name in [*ADAPTED, *NOT_APPLICABLE]:
        covered[source].add(name.split("[")[0])
    assert covered == PEER_TESTS
    assert all(reason for reason in NOT_APPLICABLE.values())
