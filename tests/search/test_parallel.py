"""``--parallel K``: trials trained together in one fused step, each recorded as its own trial.

Real TensorFlow on digits (one epoch), real SQLite."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from poolnas.evaluators import Budget
from poolnas.search import SearchConfig, SearchRunner, TrialAttrs, auto_parallel
from poolnas.search._cli import main

optuna.logging.set_verbosity(optuna.logging.ERROR)

TINY = Budget(epochs=1, batch_size=128)


def _search(db: Path, *, trials: int, parallel: int | None, study: str = "s") -> SearchRunner:
    config = SearchConfig(storage=f"sqlite:///{db}", study=study, trials=trials,
                          sampler="random", budget=TINY, seed=2, parallel=parallel)
    runner = SearchRunner(config)
    runner.run()
    return runner


def _complete(runner: SearchRunner) -> list[optuna.trial.FrozenTrial]:
    return runner.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_fused_trials_are_the_trials_one_at_a_time_gives_then_a_resume(tmp_path) -> None:
    # The random sampler draws each trial with a seed of the study's seed and the trial's
    # number, and fused training is training alone: the same study, trial by trial.
    alone = _complete(_search(tmp_path / "one.db", trials=4, parallel=1))
    fused_runner = _search(tmp_path / "fused.db", trials=4, parallel=3)
    fused = _complete(fused_runner)
    assert fused_runner.parallel == 3
    assert [t.number for t in fused] == [0, 1, 2, 3]
    artifacts = set()
    for one, many in zip(alone, fused):
        assert many.user_attrs[TrialAttrs.ARCHITECTURE] == one.user_attrs[TrialAttrs.ARCHITECTURE]
        assert many.values == one.values
        assert many.user_attrs[TrialAttrs.ACCURACIES] == one.user_attrs[TrialAttrs.ACCURACIES]
        artifacts.add(many.user_attrs[TrialAttrs.MODEL_ARTIFACT])
    assert len(artifacts) == 4  # each trial stored its own model
    # A resume with another K ends at exactly the budget: 2 free slots, one batch of 2.
    resumed = _search(tmp_path / "fused.db", trials=6, parallel=4)
    assert len(_complete(resumed)) == 6
    assert len(resumed.study.trials) == 6


def test_auto_parallel() -> None:
    assert auto_parallel(accelerator=False) == 1
    assert auto_parallel(accelerator=True) == 8
    assert auto_parallel() >= 1


@pytest.mark.parametrize(("args", "message"), [
    (["--parallel", "0"], "argument --parallel: must be at least 1, got 0"),
    (["--parallel", "two"], "argument --parallel: expected a whole number, got 'two'"),
    (["--engine", "keras-tuner", "--parallel", "2"], "--parallel is an option of --engine optuna"),
])
def test_bad_parallel_is_one_error_line_and_writes_nothing(args, message, tmp_path, capsys,
                                                          monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["search", "--trials", "1", *args])
    except SystemExit as exited:  # argparse's own check
        code = exited.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("poolnas: error: ") and message in err[0]
    assert list(tmp_path.iterdir()) == []


def test_parallel_with_two_workers_reaches_the_exact_total(tmp_path, capsys) -> None:
    db = tmp_path / "w.db"
    code = main(["search", "--storage", f"sqlite:///{db}", "--trials", "5", "--epochs", "1",
                 "--batch-size", "128", "--sampler", "random", "--workers", "2",
                 "--parallel", "2", "--quiet"])
    assert code == 0
    study = optuna.load_study(study_name="poolnas", storage=f"sqlite:///{db}")
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 5


def test_a_signal_during_fused_training_fails_and_queues_every_trial_of_the_batch(tmp_path):
    import os
    import signal
    import threading
    import time

    db = tmp_path / "i.db"
    config = SearchConfig(storage=f"sqlite:///{db}", study="s", trials=2, sampler="random",
                          budget=Budget(epochs=3, batch_size=32), seed=1, parallel=2)
    runner = SearchRunner(config)
    storage = runner.study._storage

    def interrupt_once_both_run() -> None:
        # Once both trials of the batch exist, SIGINT: it lands while they are built or
        # trained, and the fused step's check before every batch stops them.
        while sum(t.state == optuna.trial.TrialState.RUNNING
                  for t in storage.get_all_trials(runner.study._study_id)) < 2:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt_once_both_run, daemon=True)
    thread.start()
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    thread.join()
    trials = runner.study.get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 2
    assert all(t.user_attrs[TrialAttrs.FAIL_REASON] == "interrupted: stopped by SIGINT"
               for t in failed)
    waiting = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert sorted(repr(sorted(t.params.items())) for t in waiting) == sorted(
        repr(sorted(t.params.items())) for t in failed)
    # The same search again trains the queued trials first and ends with the budget.
    again = SearchRunner(config)
    again.run()
    complete = again.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 2
    assert {t.user_attrs[TrialAttrs.ARCHITECTURE] for t in complete} == {
        t.user_attrs[TrialAttrs.ARCHITECTURE] for t in failed}
