"""The one epoch loop (learn.loop) with a scripted optimiser: best epoch, early stopping, checkpoint, resume.

The scripted optimiser's weights after epoch n are all n, and its validation accuracy at epoch n is a given
sequence, so which epoch's weights the loop returns, and when it stops, can be read off directly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from astrodask.errors import AstrodaskError
from astrodask.learn.loop import Checkpoint, EpochStats, LoopSettings, OptimiserState, run
from astrodask.learn.loss import LossSums, SplitSums

SHAPE = (3, 5)
# validation accuracy of epochs 1, 2, ...: best at epoch 4, then never better
ACCURACY = [0.80, 0.85, 0.90, 0.95, 0.93, 0.94, 0.92, 0.95, 0.91, 0.90, 0.96, 0.97]


class Interrupted(Exception):
    pass


class Scripted:
    """Weights after epoch n: all n. Raises Interrupted before epoch ``fail_at`` (a killed job)."""

    label = "scripted"

    def __init__(self, accuracy=ACCURACY, fail_at=None):
        self.accuracy, self.fail_at = accuracy, fail_at
        self.n = 0
        self.started = False

    def start(self):
        self.started = True

    def epoch(self, n):
        if n == self.fail_at:
            raise Interrupted(n)
        assert n == self.n + 1, "epochs must follow each other"
        self.n = n
        acc = self.accuracy[n - 1]
        valid = LossSums(1.0 - acc, np.zeros(SHAPE), 1.0, acc)
        return EpochStats(self.theta, SplitSums(LossSums(0.5, np.zeros(SHAPE), 1.0, 0.5), valid), objective=1.0 / n)

    @property
    def converged(self):
        return False

    @property
    def theta(self):
        return np.full(SHAPE, float(self.n))

    def state(self):
        return OptimiserState({"n": np.array(self.n)}, {"note": "scripted"})

    def restore(self, state):
        assert state.meta == {"note": "scripted"}
        self.n = int(state.arrays["n"])


def test_patience_keeps_the_best_epoch_and_stops_patience_epochs_after_it():
    r = run(Scripted(), LoopSettings(max_epochs=12, patience=3, monitor="accuracy", quiet=True), log=lambda m: None)
    assert r.best_epoch == 4 and r.stop == "early_stop"
    assert [h.epoch for h in r.history] == [1, 2, 3, 4, 5, 6, 7]  # epochs 5, 6, 7 did not beat epoch 4
    assert (r.theta == 4.0).all(), "the model must be the best epoch's weights, not the last epoch's"
    assert [h.valid_accuracy for h in r.history] == pytest.approx(ACCURACY[:7])


def test_without_patience_the_last_epoch_is_kept():
    r = run(Scripted(), LoopSettings(max_epochs=9, patience=0, monitor="accuracy", quiet=True), log=lambda m: None)
    assert r.stop == "max_epochs" and len(r.history) == 9 and (r.theta == 9.0).all()


def test_a_tie_is_no_improvement():
    """Epoch 8 equals epoch 4's accuracy: the best stays epoch 4 (patience counts from it)."""
    r = run(Scripted(), LoopSettings(max_epochs=12, patience=5, monitor="accuracy", quiet=True), log=lambda m: None)
    assert r.best_epoch == 4 and len(r.history) == 9 and (r.theta == 4.0).all()


def test_monitor_loss():
    r = run(Scripted(), LoopSettings(max_epochs=12, patience=2, monitor="loss", quiet=True), log=lambda m: None)
    assert r.best_epoch == 4 and len(r.history) == 6  # valid loss = 1 - accuracy here


@pytest.mark.parametrize("killed_before", [5, 6, 7])
def test_resume_after_a_kill_continues_patience_and_ends_like_an_uninterrupted_run(tmp_path, killed_before):
    """Killed after the best epoch (4) but before early stopping (7): the resumed run must remember epoch 4 as
    the best and stop at epoch 7 with its weights. A loop that forgot the best on resume would take the first
    resumed epoch as the best and train patience epochs past it."""
    settings = LoopSettings(max_epochs=12, patience=3, monitor="accuracy", quiet=True)
    whole = run(Scripted(), settings, log=lambda m: None)

    ckpt = Checkpoint(tmp_path, "fp-1")
    with pytest.raises(Interrupted):
        run(Scripted(fail_at=killed_before), settings, ckpt, log=lambda m: None)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["epoch"] == killed_before - 1 and saved["best_epoch"] == 4

    messages = []
    fresh = Scripted()
    resumed = run(fresh, settings, Checkpoint(tmp_path, "fp-1"), resume=True, log=messages.append)
    assert not fresh.started, "a resumed optimiser is restored, not started again"
    assert f"resume: continuing from epoch {killed_before - 1}" in messages
    assert resumed.best_epoch == whole.best_epoch == 4
    assert [h.epoch for h in resumed.history] == [h.epoch for h in whole.history]
    assert [h.valid_accuracy for h in resumed.history] == [h.valid_accuracy for h in whole.history]
    assert (resumed.theta == whole.theta).all()


def test_resume_of_a_finished_loop_runs_no_epoch(tmp_path):
    settings = LoopSettings(max_epochs=12, patience=3, monitor="accuracy", quiet=True)
    run(Scripted(), settings, Checkpoint(tmp_path, "fp"), log=lambda m: None)
    again = run(Scripted(fail_at=8), settings, Checkpoint(tmp_path, "fp"), resume=True, log=lambda m: None)
    assert again.stop == "early_stop" and len(again.history) == 7 and (again.theta == 4.0).all()


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    settings = LoopSettings(max_epochs=3, patience=0, monitor="accuracy", quiet=True)
    run(Scripted(), settings, Checkpoint(tmp_path, "fp-a"), log=lambda m: None)
    with pytest.raises(AstrodaskError, match="other settings"):
        run(Scripted(), settings, Checkpoint(tmp_path, "fp-b"), resume=True, log=lambda m: None)


def _kill_at(tmp_path, epoch: int, settings) -> None:
    with pytest.raises(Interrupted):
        run(Scripted(fail_at=epoch), settings, Checkpoint(tmp_path, "fp"), log=lambda m: None)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing", "json"])
def test_a_damaged_checkpoint_is_reported_and_the_run_resumes_from_the_previous_one(tmp_path, damage):
    """The issue's I3: a truncated checkpoint npz gave 'internal error: BadZipFile', and no earlier one was kept."""
    settings = LoopSettings(max_epochs=12, patience=3, monitor="accuracy", quiet=True)
    whole = run(Scripted(), settings, log=lambda m: None)
    _kill_at(tmp_path, 7, settings)  # checkpoints of epochs 5 (previous) and 6 (last)
    assert json.loads((tmp_path / "checkpoint.prev.json").read_text())["epoch"] == 5
    last = tmp_path / json.loads((tmp_path / "checkpoint.json").read_text())["arrays"]
    if damage == "truncate":
        last.write_bytes(last.read_bytes()[:50])
    elif damage == "garbage":
        last.write_bytes(b"not an npz")
    elif damage == "missing":
        last.unlink()
    else:
        (tmp_path / "checkpoint.json").write_text('{"fingerprint": "fp", "epo')
    messages = []
    resumed = run(Scripted(), settings, Checkpoint(tmp_path, "fp"), resume=True, log=messages.append)
    what = "checkpoint" if damage == "json" else "checkpoint of epoch 6"
    why = {"truncate": "BadZipFile", "garbage": "ValueError", "missing": "FileNotFoundError",
           "json": "not valid JSON"}[damage]
    assert f"resume: the {what} is damaged ({why}); continuing from epoch 5" in messages, messages
    assert "resume: continuing from epoch 5" in messages
    assert [h.valid_accuracy for h in resumed.history] == [h.valid_accuracy for h in whole.history]
    assert resumed.best_epoch == whole.best_epoch and (resumed.theta == whole.theta).all()


def test_with_every_checkpoint_damaged_the_epochs_restart(tmp_path):
    settings = LoopSettings(max_epochs=12, patience=3, monitor="accuracy", quiet=True)
    whole = run(Scripted(), settings, log=lambda m: None)
    _kill_at(tmp_path, 7, settings)
    for npz in tmp_path.glob("checkpoint-*.npz"):
        npz.write_bytes(npz.read_bytes()[:50])
    messages = []
    fresh = Scripted()
    resumed = run(fresh, settings, Checkpoint(tmp_path, "fp"), resume=True, log=messages.append)
    assert messages[0] == ("resume: the checkpoint of epoch 6 is damaged (BadZipFile) and no earlier one is good; "
                           "restarting the epochs"), messages
    assert fresh.started and len(resumed.history) == len(whole.history)
    assert (resumed.theta == whole.theta).all()


def test_checkpoint_keeps_the_last_two_array_files_and_clear_removes_them(tmp_path):
    ckpt = Checkpoint(tmp_path, "fp")
    run(Scripted(), LoopSettings(max_epochs=5, patience=0, monitor="accuracy", quiet=True), ckpt, log=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000004.npz", "checkpoint-000005.npz",
                                                          "checkpoint.json", "checkpoint.prev.json"]
    ckpt.clear()
    assert list(tmp_path.iterdir()) == []


# validation accuracy creeping up by less than 0.0005 an epoch after epoch 3, then one real gain at epoch 9
CREEP = [0.900, 0.950, 0.960, 0.9602, 0.9604, 0.9606, 0.9607, 0.9608, 0.9620, 0.9621, 0.9622, 0.9623, 0.9624, 0.9625,
         0.9626, 0.9627, 0.9628]


def test_min_improvement_stops_when_epochs_stop_paying_and_keeps_the_best_weights():
    """Gains below min_improvement do not reset patience (the run stops patience epochs after the last epoch that
    paid), but the weights returned are still the best epoch's, small gains included."""
    settings = LoopSettings(max_epochs=17, patience=4, monitor="accuracy", quiet=True, min_improvement=0.0005)
    r = run(Scripted(CREEP), settings, log=lambda m: None)
    # epoch 3 pays; 4..8 creep (0.9608 - 0.9600 = 0.0008 >= 0.0005 at epoch 6: pays); 9 pays; 10..13 do not
    assert r.stop == "early_stop" and len(r.history) == 13
    assert r.best_epoch == 13 and (r.theta == 13.0).all()

    plain = run(Scripted(CREEP), LoopSettings(max_epochs=17, patience=4, monitor="accuracy", quiet=True),
                log=lambda m: None)
    assert plain.stop == "max_epochs" and len(plain.history) == 17, "with min_improvement 0 every gain counts"


def test_min_improvement_survives_a_resume(tmp_path):
    settings = LoopSettings(max_epochs=17, patience=4, monitor="accuracy", quiet=True, min_improvement=0.0005)
    whole = run(Scripted(CREEP), settings, log=lambda m: None)
    with pytest.raises(Interrupted):
        run(Scripted(CREEP, fail_at=12), settings, Checkpoint(tmp_path, "fp"), log=lambda m: None)
    resumed = run(Scripted(CREEP), settings, Checkpoint(tmp_path, "fp"), resume=True, log=lambda m: None)
    assert len(resumed.history) == len(whole.history) == 13 and resumed.best_epoch == whole.best_epoch
