"""OptunaOracle with a plain KerasTuner ``build_model(hp)`` (no poolnas): what a KerasTuner user
does. Real TensorFlow training on tiny random data, real SQLite, a real process killed with
SIGKILL in the middle of a trial.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from poolnas.search import OptunaOracle, OptunaSearch
from poolnas.search._cli import main
from poolnas.search._pareto import rank_by_fronts
from poolnas.search.keras_tuner._distributions import distribution_of
from poolnas.spaces import PoolnasError

#: The user's own KerasTuner program: every kind of hyperparameter, two objectives.
PROGRAM = textwrap.dedent('''
    import os, sys, time
    import numpy as np
    import keras
    import keras_tuner
    from poolnas.search import OptunaOracle

    def build_model(hp):
        model = keras.Sequential([keras.Input((8,))])
        if hp.Boolean("hidden"):
            with hp.conditional_scope("hidden", [True]):
                model.add(keras.layers.Dense(hp.Int("units", 2, 16, step=2),
                                             activation=hp.Choice("act", ["relu", "tanh"])))
        kind = hp.Choice("optimizer", ["adam", "sgd"])
        momentum = hp.Float("momentum", 0.0, 0.9, step=0.3, parent_name="optimizer",
                            parent_values=["sgd"])
        model.add(keras.layers.Dense(2, activation="softmax"))
        learning_rate = hp.Float("lr", 1e-3, 1e-1, sampling="log")
        optimizer = (keras.optimizers.Adam(learning_rate) if kind == "adam"
                     else keras.optimizers.SGD(learning_rate, momentum=momentum or 0.0))
        model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    started = []

    class HangOnce(keras.callbacks.Callback):
        """Hangs in the trial given by HANG_AT (1-based) until the test kills the process."""

        def on_train_begin(self, logs=None):
            started.append(1)
            if len(started) == int(os.environ.get("HANG_AT", "0")):
                open(os.environ["MARKER"], "w").close()
                time.sleep(600)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    oracle = OptunaOracle(
        objective=["val_accuracy", keras_tuner.Objective("val_loss", "min")],
        max_trials=int(sys.argv[2]), seed=1, max_retries_per_trial=1,
    )
    tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=build_model, directory=sys.argv[1],
                              project_name="user", overwrite=False)
    tuner.search(x, y, validation_data=(x, y), epochs=2, batch_size=32, verbose=0,
                 callbacks=[HangOnce()])
''')


def _run(tmp_path: Path, max_trials: int, **env: str) -> subprocess.Popen:
    program = tmp_path / "user_search.py"
    program.write_text(PROGRAM)
    return subprocess.Popen([sys.executable, str(program), str(tmp_path), str(max_trials)],
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_user_search_two_objectives_resume_and_a_killed_trial(tmp_path, capsys) -> None:
    # First run: trial 0 completes, trial 1 hangs and its process is killed with SIGKILL.
    marker = tmp_path / "hanging"
    first = _run(tmp_path, 3, HANG_AT="2", MARKER=str(marker))
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert first.poll() is None, first.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the first run never reached its second trial"
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    url = f"sqlite:///{tmp_path / 'user' / 'optuna.db'}"
    study = optuna.load_study(study_name="user", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    killed = study.trials[1]

    # Second run, same seed, more trials, overwrite=False: the killed trial is failed in the
    # study and retried, then new configurations are tried.
    second = _run(tmp_path, 5)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    study = optuna.load_study(study_name="user", storage=url)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert "killed" in study.trials[1].user_attrs["fail_reason"]
    retry = study.trials[2]
    assert retry.user_attrs["retry_of"] == killed.number
    assert retry.user_attrs["keras_tuner_trial"] == killed.user_attrs["keras_tuner_trial"]
    assert retry.params == killed.params
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_accuracy", "val_loss"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    # Every completed trial is a different configuration: the resumed run tried new ones.
    configurations = {json.dumps(t.user_attrs["keras_tuner_values"], sort_keys=True)
                      for t in complete}
    assert len(configurations) == len(complete) == 5
    for trial in complete:
        values = trial.user_attrs["keras_tuner_values"]
        assert ("units" in values) == values["hidden"]  # conditional_scope
        assert ("momentum" in values) == (values["optimizer"] == "sgd")  # parent_values
        assert set(trial.params) == set(values)  # each active entry is an Optuna parameter
        assert isinstance(trial.distributions["lr"], FloatDistribution)
        assert trial.distributions["lr"].log
        if "units" in trial.params:
            assert trial.distributions["units"] == IntDistribution(2, 16, step=2)

    # The user reloads the project: the best trials are the Pareto fronts, k of them.
    oracle = OptunaOracle(objective=["val_accuracy", keras_tuner.Objective("val_loss", "min")],
                          max_trials=5, seed=1)
    sys.path.insert(0, str(tmp_path))
    try:
        tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=_build_model(tmp_path),
                                  directory=str(tmp_path), project_name="user", overwrite=False)
    finally:
        sys.path.remove(str(tmp_path))
    assert len(oracle.trials) == 5 and all(t.status == "COMPLETED"
                                           for t in oracle.trials.values())
    best = oracle.get_best_trials(3)
    assert len(best) == 3
    by_id = {t.user_attrs["keras_tuner_trial"]: t.values for t in complete}
    ids = sorted(by_id)
    order = rank_by_fronts([by_id[i] for i in ids], ["max", "min"])
    assert [t.trial_id for t in best] == [ids[i] for i in order][:3]
    front = oracle.get_best_trials(None)
    assert front and [t.trial_id for t in front] == [ids[i] for i in order][:len(front)]
    assert len(oracle.get_best_trials(10)) == 5
    assert len(tuner.get_best_hyperparameters(3)) == 3
    assert len(tuner.get_best_models(3)) == 3
    capsys.readouterr()
    tuner.results_summary(num_trials=3)
    lines = capsys.readouterr().out.splitlines()
    summaries = [line for line in lines if line.startswith("Trial ") and line.endswith("summary")]
    assert len(summaries) == 3


def _build_model(tmp_path: Path):
    namespace: dict = {}
    source = PROGRAM.split("started = []")[0]
    exec(compile(source, str(tmp_path / "user_search.py"), "exec"), namespace)  # noqa: S102
    return namespace["build_model"]


# ---------------------------------------------------------------------- in-process checks
X = np.random.default_rng(1).normal(size=(32, 4)).astype("float32")
Y = (X[:, 0] > 0).astype("int32")


def _tiny(hp):
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Dense(hp.Int("units", 1, 4), activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(hp.Choice("lr", [1e-2, 3e-2])),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_best_so_far_includes_the_trial_just_ended(tmp_path, capsys) -> None:
    tuner = OptunaSearch(_tiny, objective="val_accuracy", max_trials=2, seed=0,
                         directory=str(tmp_path), project_name="p")
    tuner.search(X, Y, validation_data=(X, Y), epochs=1, verbose=1)
    out = capsys.readouterr().out
    best = [line for line in out.splitlines() if line.startswith("Best val_accuracy So Far")]
    assert len(best) == 2 and "None" not in best[0]
    assert float(best[1].split(":")[1]) == max(t.score for t in tuner.oracle.trials.values())
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path / 'p' / 'optuna.db'}")
    assert [t.values[0] for t in study.trials] == [
        tuner.oracle.trials[t.user_attrs["keras_tuner_trial"]].score for t in study.trials]
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    # poolnas' own commands read architecture studies; they say what reads this one.
    capsys.readouterr()
    url = f"sqlite:///{tmp_path / 'p' / 'optuna.db'}"
    assert main(["front", "--storage", url, "--study", "p"]) == 2
    assert "read it with optuna-dashboard" in capsys.readouterr().err


def test_a_finite_space_stops_when_every_configuration_was_tried(tmp_path) -> None:
    class Exhaust(OptunaSearch):
        def run_trial(self, trial, *args, **kwargs):
            trial.hyperparameters.Choice("a", [1, 2, 3])
            trial.hyperparameters.Boolean("b")
            return float(trial.hyperparameters.get("a"))

    tuner = Exhaust(max_trials=20, seed=0, directory=str(tmp_path), project_name="e")
    tuner.search()
    assert len(tuner.oracle.trials) == 6  # 3 x 2 configurations, each once
    values = {json.dumps(t.hyperparameters.values, sort_keys=True)
              for t in tuner.oracle.trials.values()}
    assert len(values) == 6
    assert tuner.oracle.get_best_trials(1)[0].score == 1.0  # no objective: minimized


@pytest.mark.parametrize(("declare", "expected"), [
    (lambda hp: hp.Choice("x", ["a", "b"]), CategoricalDistribution(["a", "b"])),
    (lambda hp: hp.Boolean("x"), CategoricalDistribution([False, True])),
    (lambda hp: hp.Int("x", 1, 9, step=2), IntDistribution(1, 9, step=2)),
    (lambda hp: hp.Int("x", 1, 64, sampling="log"), IntDistribution(1, 64, log=True)),
    (lambda hp: hp.Int("x", 1, 64, step=2, sampling="log"),
     CategoricalDistribution([1, 2, 4, 8, 16, 32, 64])),
    (lambda hp: hp.Float("x", 0.0, 1.0), FloatDistribution(0.0, 1.0)),
    (lambda hp: hp.Float("x", 0.0, 1.0, step=0.25), FloatDistribution(0.0, 1.0, step=0.25)),
    (lambda hp: hp.Float("x", 1e-4, 1e-1, sampling="log"), FloatDistribution(1e-4, 1e-1, log=True)),
    (lambda hp: hp.Fixed("x", 3), None),
])
def test_each_hyperparameter_has_its_optuna_distribution(declare, expected) -> None:
    hp = keras_tuner.HyperParameters()
    declare(hp)
    assert distribution_of(hp.space[0]) == expected


def test_kerastuner_arguments_and_refusals(tmp_path) -> None:
    hps = keras_tuner.HyperParameters()
    hps.Int("units", 1, 2)
    # RandomSearchOracle's arguments, positionally, in its order.
    oracle = OptunaOracle("val_loss", None, 3, hps, False, False, 1, 2)
    assert OptunaOracle().max_trials == 10  # RandomSearchOracle's default
    theirs = inspect.signature(keras_tuner.oracles.RandomSearchOracle).parameters
    ours = list(inspect.signature(OptunaOracle).parameters.values())[:len(theirs)]
    assert [(p.name, p.default) for p in ours] == [(p.name, p.default)
                                                   for p in theirs.values()]
    theirs = inspect.signature(keras_tuner.RandomSearch).parameters
    ours = list(inspect.signature(OptunaSearch).parameters.values())[:len(theirs) - 1]
    assert [(p.name, p.default) for p in ours] == [(p.name, p.default)
                                                   for p in list(theirs.values())[:-1]]
    assert oracle.max_trials is None and oracle.seed == 3 and not oracle.allow_new_entries
    assert oracle.max_retries_per_trial == 1 and oracle.max_consecutive_failed_trials == 2
    with pytest.raises(ValueError, match="tune_new_entries"):
        OptunaOracle(tune_new_entries=False)
    with pytest.raises(PoolnasError, match="architecture samplers"):
        tuner = OptunaSearch(_tiny, max_trials=1, sampler="surrogate", directory=str(tmp_path))
        tuner.search(X, Y, epochs=1, verbose=0)
    # A study of other objectives is not continued by mistake.
    OptunaSearch(_tiny, objective="val_loss", max_trials=1, directory=str(tmp_path),
                 project_name="q").search(X, Y, validation_data=(X, Y), epochs=1, verbose=0)
    url = f"sqlite:///{tmp_path / 'q' / 'optuna.db'}"
    with pytest.raises(PoolnasError, match="has the objectives"):
        OptunaSearch(_tiny, objective="val_accuracy", max_trials=2, directory=str(tmp_path),
                     project_name="r", storage=url, study_name="q").search(
            X, Y, validation_data=(X, Y), epochs=1, verbose=0)
