"""KerasTuner with poolnas: the OptunaOracle in a plain Tuner, and ``search --engine keras-tuner``.

Real training on a digits subset (1 epoch, batch 128) in tiny spaces, real SQLite.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import optuna
import pytest

from poolnas.evaluators import load_dataset
from poolnas.search import STUDY_ATTR, CostModel, SnapshotStore
from poolnas.search._cli import main
from poolnas.search.keras_tuner import OptunaOracle, PoolNASHyperModel
from poolnas.spaces import PoolnasError, SearchSpace

#: Three architectures: max and avg cost the same, conv costs more.
TINY = SearchSpace(points=1, ops=("max", "avg", "conv"), skips=("none",), widths=(8, 16))
SUBSET = 256
USER_ATTRS = ("architecture", "flops", "macs", "params", "epochs", "train_seconds")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=SUBSET)


def tiny_hypermodel(data) -> PoolNASHyperModel:
    return PoolNASHyperModel(TINY, data.input_shape, data.num_classes,
                             input_scale=data.input_scale, input_offset=data.input_offset, seed=0)


def flops_of(data) -> dict[str, int]:
    costs = CostModel(data.input_shape, data.num_classes, input_scale=data.input_scale,
                      input_offset=data.input_offset)
    return {arch.points[0].op: costs(arch).flops for arch in TINY}


def search(tuner: keras_tuner.Tuner, data) -> None:
    tuner.search(data.train_dataset(128, seed=0), validation_data=data.val_dataset(128),
                 epochs=1, shuffle=False, verbose=0)


@pytest.fixture(scope="module")
def oracle_search(tmp_path_factory, digits):
    """A plain keras_tuner.Tuner with an OptunaOracle: a grid over TINY, conv over budget."""
    where = tmp_path_factory.mktemp("oracle")
    flops = flops_of(digits)
    budget = (flops["max"] + flops["conv"]) // 2
    url = f"sqlite:///{where / 'kt.db'}"
    oracle = OptunaOracle(storage=url, study_name="kt", max_trials=5, sampler="grid", seed=0,
                          max_flops=budget)
    tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=tiny_hypermodel(digits),
                              directory=str(where), project_name="kt")
    search(tuner, digits)
    return where, url, tuner, budget


def test_the_oracle_study_is_a_poolnas_study(oracle_search) -> None:
    _, url, tuner, budget = oracle_search
    study = optuna.load_study(study_name="kt", storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["accuracy", "flops"]
    settings = study.user_attrs[STUDY_ATTR]
    assert settings["space"] == TINY.to_dict() and settings["max_flops"] == budget
    assert settings["input_shape"] == [8, 8, 1] and settings["num_classes"] == 10
    trials = study.get_trials()
    # The grid had three points: the sampler stopped the tuner, not max_trials.
    assert len(trials) == len(tuner.oracle.trials) == 3
    assert {t.user_attrs["architecture"] for t in trials} == {a.key for a in TINY}
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        for name in USER_ATTRS:
            assert name in trial.user_attrs, name
        assert trial.user_attrs["flops"] == trial.values[1]
        kt_trial = tuner.oracle.trials[trial.user_attrs["keras_tuner_trial"]]
        assert kt_trial.status == "COMPLETED"  # the infeasible one too: never a KT failure
        if "infeasible" not in trial.user_attrs:
            assert "model_artifact" in trial.user_attrs
            assert trial.user_attrs["epochs"] == 1
            assert trial.values[0] == pytest.approx(kt_trial.score)


def test_over_budget_is_infeasible_and_not_trained(oracle_search) -> None:
    where, url, tuner, budget = oracle_search
    study = optuna.load_study(study_name="kt", storage=url)
    over = [t for t in study.get_trials() if t.user_attrs["flops"] > budget]
    assert len(over) == 1 and ":conv+" in over[0].user_attrs["architecture"].replace("/", ":")
    trial = over[0]
    assert "infeasible" in trial.user_attrs and "model_artifact" not in trial.user_attrs
    assert trial.values == [0.0, trial.user_attrs["flops"]]
    assert trial.system_attrs["constraints:flops_budget"] > 0
    kt_trial = tuner.oracle.trials[trial.user_attrs["keras_tuner_trial"]]
    assert kt_trial.score == float("-inf")  # completed, and never the best
    assert not (where / "kt" / f"trial_{kt_trial.trial_id}" / "checkpoint.weights.h5").exists()
    assert kt_trial not in tuner.oracle.get_best_trials(None)


def test_snapshots_and_best_trials_are_the_front(oracle_search) -> None:
    _, url, tuner, _ = oracle_search
    study = optuna.load_study(study_name="kt", storage=url)
    history = SnapshotStore(url).history("kt")
    assert sorted(s.after_trial_number for s in history) == [t.number for t in study.trials]
    front = {m.trial_number for m in history[-1].members}
    best = tuner.oracle.get_best_trials(None)
    numbers = {t.number for t in study.trials
               if t.user_attrs["keras_tuner_trial"] in {b.trial_id for b in best}}
    assert numbers == front and best
    accuracies = [b.score for b in best]
    assert accuracies == sorted(accuracies, reverse=True)  # the most accurate first
    models = tuner.get_best_models(len(best))
    assert len(models) == len(best)


def test_front_and_export_work_on_the_oracle_study(oracle_search, tmp_path, capsys,
                                                   digits) -> None:
    _, url, _, _ = oracle_search
    assert main(["front", "--storage", url, "--study", "kt", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(row["epochs"] == 1 for row in rows)
    out = tmp_path / "models"
    assert main(["export", "--storage", url, "--study", "kt", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["trial"] for m in manifest["models"]] == [r["trial"] for r in rows]
    model = keras.saving.load_model(out / manifest["models"][0]["file"], safe_mode=True)
    predictions = model.predict(np.asarray(digits.x_val[:8]), verbose=0)
    assert predictions.shape == (8, 10)


def test_a_second_tuner_reuses_what_the_study_trained(oracle_search, tmp_path, digits) -> None:
    _, url, _, budget = oracle_search
    oracle = OptunaOracle(storage=url, study_name="kt", max_trials=3,
                          sampler=optuna.samplers.RandomSampler(seed=1), max_flops=budget)
    tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=tiny_hypermodel(digits),
                              directory=str(tmp_path), project_name="again")
    search(tuner, digits)
    study = optuna.load_study(study_name="kt", storage=url)
    again = study.get_trials()[3:]
    assert len(again) == 3
    for trial in again:
        assert "duplicate_of" in trial.user_attrs  # every architecture was already evaluated
        original = study.trials[trial.user_attrs["duplicate_of"]]
        assert trial.values == original.values
    for kt_trial in oracle.trials.values():
        assert kt_trial.status == "COMPLETED"
        assert not (tmp_path / "again" / f"trial_{kt_trial.trial_id}"
                    / "checkpoint.weights.h5").exists()
    assert oracle.get_best_trials() == []  # nothing was trained by this tuner


def test_oracle_refuses_what_it_cannot_do(tmp_path, digits) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(PoolnasError, match="max_trials"):
        OptunaOracle(storage=url, max_trials=0)
    with pytest.raises(PoolnasError, match="unknown sampler"):
        OptunaOracle(storage=url, sampler="cmaes")
    with pytest.raises(PoolnasError, match="one validation accuracy to maximize"):
        OptunaOracle(storage=url, objective="val_loss", study_name="loss",  # noqa: B018
                     hypermodel=tiny_hypermodel(digits)).study
    with pytest.raises(PoolnasError, match="has no storage"):
        OptunaOracle().study  # noqa: B018
    other = PoolNASHyperModel(SearchSpace(), digits.input_shape, digits.num_classes)
    oracle = OptunaOracle(storage=url, study_name="s", hypermodel=tiny_hypermodel(digits))
    assert oracle.study.user_attrs[STUDY_ATTR]["space"] == TINY.to_dict()
    with pytest.raises(PoolnasError, match="different space"):
        OptunaOracle(storage=url, study_name="s", hypermodel=other).study  # noqa: B018


# ---------------------------------------------------------------------- the CLI engine
def _space_file(tmp_path: Path) -> str:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY.to_dict()))
    return str(path)


def _engine(tmp_path: Path, db: Path, *more: str) -> list[str]:
    return ["search", "--engine", "keras-tuner", "--storage", f"sqlite:///{db}", "--study", "kt",
            "--space", _space_file(tmp_path), "--subset", str(SUBSET), "--epochs", "1",
            "--batch-size", "128", "--quiet", *more]


@pytest.mark.slow
def test_cli_engine_records_a_random_search(tmp_path, capsys, digits) -> None:
    flops = flops_of(digits)
    budget = (flops["max"] + flops["conv"]) // 2
    db = tmp_path / "s.db"
    kept = tmp_path / "tuner"
    (kept / "kt-1").mkdir(parents=True)
    (kept / "kt-1" / "mine.txt").write_text("do not touch")
    code = main(_engine(tmp_path, db, "--trials", "3", "--max-flops", str(budget),
                        "--tuner-dir", str(kept)))
    assert code == 0, capsys.readouterr().err
    study = optuna.load_study(study_name="kt", storage=f"sqlite:///{db}")
    assert study.user_attrs[STUDY_ATTR]["engine"] == "keras-tuner:random"
    trials = study.get_trials()
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    for trial in trials:
        for name in (*USER_ATTRS, "keras_tuner_trial"):
            assert name in trial.user_attrs, name
        trained = "infeasible" not in trial.user_attrs
        assert ("model_artifact" in trial.user_attrs) == trained
        assert (trial.user_attrs["flops"] > budget) != trained
    assert len(SnapshotStore(f"sqlite:///{db}").history("kt")) == 3
    # KerasTuner's project went into a new folder; the existing one is as it was.
    assert (kept / "kt-1" / "mine.txt").read_text() == "do not touch"
    assert sorted(p.name for p in (kept / "kt-1").iterdir()) == ["mine.txt"]
    assert (kept / "kt-2" / "tuner0.json").exists()
    # The Optuna engine does not resume a KerasTuner study, and the other way round.
    capsys.readouterr()
    code = main(["search", "--storage", f"sqlite:///{db}", "--study", "kt", "--space",
                 _space_file(tmp_path), "--subset", str(SUBSET), "--epochs", "1",
                 "--batch-size", "128", "--max-flops", str(budget), "--trials", "4"])
    assert code == 2
    assert "different engine: 'keras-tuner:random'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_engine_hyperband_trains_within_its_epoch_budget(tmp_path, capsys) -> None:
    db = tmp_path / "s.db"
    assert main(_engine(tmp_path, db, "--tuner", "hyperband", "--trials", "2")) == 0
    study = optuna.load_study(study_name="kt", storage=f"sqlite:///{db}")
    assert study.user_attrs[STUDY_ATTR]["engine"] == "keras-tuner:hyperband"
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.user_attrs["epochs"] == 1 for t in trials)
    capsys.readouterr()
    assert main(["front", "--storage", f"sqlite:///{db}", "--study", "kt", "--format",
                 "csv"]) == 0
    assert capsys.readouterr().out.startswith("trial,architecture,accuracy")


@pytest.mark.parametrize(("args", "message"), [
    (["--tuner", "random"], "--tuner and --tuner-dir are options of --engine keras-tuner"),
    (["--engine", "keras-tuner", "--workers", "2"], "runs one KerasTuner tuner"),
])
def test_cli_engine_mistakes_write_nothing(tmp_path, capsys, args, message) -> None:
    db = tmp_path / "s.db"
    code = main(["search", "--storage", f"sqlite:///{db}", *args])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("poolnas: error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_reloaded_tuner_project_continues_the_study(tmp_path, digits) -> None:
    url = f"sqlite:///{tmp_path / 'kt.db'}"

    def tuner(max_trials: int) -> keras_tuner.Tuner:
        # overwrite=False: the second tuner reloads the first one's project folder.
        oracle = OptunaOracle(storage=url, study_name="kt", max_trials=max_trials,
                              sampler="grid", seed=0)
        return keras_tuner.Tuner(oracle=oracle, hypermodel=tiny_hypermodel(digits),
                                 directory=str(tmp_path), project_name="kt")

    search(tuner(2), digits)
    again = tuner(3)
    search(again, digits)
    study = optuna.load_study(study_name="kt", storage=url)
    trials = study.get_trials()
    assert len(trials) == len(again.oracle.trials) == 3  # one more, none run twice
    assert {t.user_attrs["architecture"] for t in trials} == {a.key for a in TINY}
    for trial in trials:
        assert "duplicate_of" not in trial.user_attrs
        assert trial.user_attrs["epochs"] == 1 and "model_artifact" in trial.user_attrs
        kt_trial = again.oracle.trials[trial.user_attrs["keras_tuner_trial"]]
        assert kt_trial.score == pytest.approx(trial.values[0])
    assert len(again.oracle.get_best_trials(None)) >= 1


def test_export_retrain_says_which_option_records_the_data(oracle_search, tmp_path,
                                                          capsys) -> None:
    _, url, _, _ = oracle_search
    code = main(["export", "--storage", url, "--study", "kt", "--out", str(tmp_path / "m"),
                 "--retrain-epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "OptunaOracle(dataset=..., data_options=..., data_seed=...)" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_an_oracle_study_with_its_data_retrains_on_export(tmp_path, capsys, digits) -> None:
    url = f"sqlite:///{tmp_path / 'kt.db'}"
    # digits is load_dataset("digits", subset=SUBSET): seed 0.
    oracle = OptunaOracle(max_trials=2, storage=url, study_name="kt", seed=0,
                          dataset="digits", data_options={"subset": SUBSET}, data_seed=0)
    tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=tiny_hypermodel(digits),
                              directory=str(tmp_path), project_name="kt")
    search(tuner, digits)
    settings = optuna.load_study(study_name="kt", storage=url).user_attrs[STUDY_ATTR]
    assert settings["dataset"] == "digits" and settings["seed"] == 0
    out = tmp_path / "m"
    code = main(["export", "--storage", url, "--study", "kt", "--out", str(out),
                 "--retrain-epochs", "1"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["retrain_epochs"] == 1
    assert all(0.0 <= m["test_accuracy"] <= 1.0 for m in manifest["models"])


@pytest.mark.slow
def test_a_resumed_search_proposes_architectures_not_yet_tried(tmp_path, digits) -> None:
    """Resumed with the same seed and more trials, a seeded sampler does not repeat itself."""
    space = SearchSpace(points=1, ops=("max", "avg", "conv"), skips=("none", "projection"),
                        widths=(8, 8))
    url = f"sqlite:///{tmp_path / 'kt.db'}"

    def run(max_trials: int) -> keras_tuner.Tuner:
        oracle = OptunaOracle(max_trials=max_trials, storage=url, study_name="kt", seed=3,
                              sampler="random")
        hypermodel = PoolNASHyperModel(space, digits.input_shape, digits.num_classes,
                                       input_scale=digits.input_scale,
                                       input_offset=digits.input_offset, seed=0)
        tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=hypermodel, directory=str(tmp_path),
                                  project_name="kt", overwrite=False)
        search(tuner, digits)
        return tuner

    run(2)
    run(4)
    trials = optuna.load_study(study_name="kt", storage=url).get_trials()
    assert len(trials) == 4
    assert not [t.number for t in trials if "duplicate_of" in t.user_attrs]
    assert len({t.user_attrs["architecture"] for t in trials}) == 4


#: A KerasTuner search of a poolnas space, run in its own process (killed by the test).
_POOLNAS_PROGRAM = '''
import os, sys, time
import keras, keras_tuner
from poolnas.evaluators import load_dataset
from poolnas.search import OptunaOracle, PoolNASHyperModel
from poolnas.spaces import SearchSpace

started = []

class HangOnce(keras.callbacks.Callback):
    """Hangs in the second trial (KerasTuner saves its tuner after the first) until killed."""

    def on_train_begin(self, logs=None):
        started.append(1)
        if os.environ.get("MARKER") and len(started) == 2:
            open(os.environ["MARKER"], "w").close()
            time.sleep(600)

data = load_dataset("digits", subset=256)
space = SearchSpace(points=1, ops=("max", "avg", "conv"), skips=("none",), widths=(8, 16))
hypermodel = PoolNASHyperModel(space, data.input_shape, data.num_classes,
                               input_scale=data.input_scale, input_offset=data.input_offset,
                               seed=0)
oracle = OptunaOracle(max_trials=int(sys.argv[2]), storage=sys.argv[3], study_name="kt",
                      seed=0, max_retries_per_trial=1)
tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=hypermodel, directory=sys.argv[1],
                          project_name="kt", overwrite=False)
tuner.search(data.train_dataset(128, seed=0), validation_data=data.val_dataset(128), epochs=1,
             verbose=0, callbacks=[HangOnce()])
'''


@pytest.mark.slow
def test_a_killed_poolnas_trial_is_failed_and_retried(tmp_path, capsys) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    program = tmp_path / "search.py"
    program.write_text(_POOLNAS_PROGRAM)
    url = f"sqlite:///{tmp_path / 'kt.db'}"
    marker = tmp_path / "hanging"

    def start(max_trials: int, **env: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(program), str(tmp_path), str(max_trials),
                                 url], env={**os.environ, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    first = start(2, MARKER=str(marker))
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert first.poll() is None, first.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    second = start(3)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    trials = optuna.load_study(study_name="kt", storage=url).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    killed, retry = trials[1], trials[2]
    assert "killed" in killed.user_attrs["fail_reason"]
    assert retry.user_attrs["retry_of"] == killed.number
    assert retry.user_attrs["keras_tuner_trial"] == killed.user_attrs["keras_tuner_trial"]
    assert retry.user_attrs["architecture"] == killed.user_attrs["architecture"]
    assert "model_artifact" in retry.user_attrs
    # Three different architectures: the resumed run tried a new one.
    assert len({trials[i].user_attrs["architecture"] for i in (0, 2, 3)}) == 3
    assert main(["front", "--storage", url, "--study", "kt", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)
