"""Fixtures of the dashboards tests: the study of ``known_study.py`` in a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from known_study import known_trials, settings

from poolnas.search._storage import StorageHandle, open_storage


@pytest.fixture
def known_study(tmp_path: Path) -> tuple[StorageHandle, optuna.Study, str]:
    """The study ``known`` in a fresh SQLite file, with a front snapshot after each trial.

    Returns:
        The opened storage, the study and the storage URL.
    """
    from poolnas.search._pareto import hypervolume, pareto_front

    url = f"sqlite:///{tmp_path / 'known.db'}"
    handle = open_storage(url, create=True)
    study = optuna.create_study(study_name="known", storage=handle.optuna_storage,
                                directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "flops"])
    study.set_user_attr("poolnas", settings())
    done = 0
    for trial in known_trials():
        study.add_trial(trial)
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        done += 1
        frozen = study.get_trials(deepcopy=False)
        front = [(t.number, t.values[0], t.values[1]) for t in pareto_front(frozen)]
        volume = hypervolume([(a, f) for _, a, f in front], reference_flops=6_000_000)
        handle.snapshots.record("known", frozen[-1].number, front, volume, 6_000_000,
                                n_complete=done)
    yield handle, study, url
    handle.close()
