"""The one trial recorder: what every driver's trial stores, and its hooks."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from poolnas.search import (
    STUDY_ATTR,
    CostModel,
    TrialAttrs,
    TrialHooks,
    TrialRecorder,
    open_storage,
    trial_seed,
)
from poolnas.search._settings import create_or_resume
from poolnas.spaces import PoolnasError, SearchSpace

SPACE = SearchSpace(points=2, ops=("max", "conv"), skips=("none", "projection"))
SETTINGS = {"dataset": "digits", "data_options": {}, "seed": 7, "budget": {"epochs": 1},
            "space": SPACE.to_dict(), "input_shape": [8, 8, 1], "num_classes": 10,
            "input_scale": 1.0, "input_offset": 0.0, "max_flops": None}


def _recorder(tmp_path: Path, hooks: TrialHooks | None = None, **settings):
    handle = open_storage(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    wanted = {**SETTINGS, **settings}
    costs = CostModel((8, 8, 1), 10)
    study = create_or_resume(handle, "r", wanted,
                             new_costs=lambda: costs.study_costs(SPACE))
    return TrialRecorder(handle, study, study.user_attrs[STUDY_ATTR], costs=costs, hooks=hooks)


def test_a_trial_is_recorded_once_and_a_repeat_is_a_duplicate(tmp_path: Path) -> None:
    events, fronts = [], []
    recorder = _recorder(tmp_path, TrialHooks(on_trial=(events.append,),
                                              on_front=(lambda s, t: fronts.append(len(t)),)))
    study = recorder.study
    arch = next(iter(SPACE))
    first = study.ask()
    candidate = recorder.begin(first, arch, epochs=1)
    assert candidate.needs_training
    values = recorder.record_trained(candidate, model=None, accuracy=0.5,
                                     accuracies=[0.4, 0.6], train_seconds=1.0)
    study.tell(first, values)
    recorder.completed(first.number)
    stored = study.trials[0].user_attrs
    assert stored[TrialAttrs.ARCHITECTURE] == arch.key
    assert stored[TrialAttrs.FLOPS] == recorder.costs(arch).flops == values[1]
    assert stored[TrialAttrs.ACCURACIES] == [0.4, 0.6] and stored[TrialAttrs.ACCURACY_STD] > 0
    assert recorder.handle.snapshots.latest("r").members[0].trial_number == 0
    assert fronts == [1] and len(events) == 1 and events[0].remark is None

    again = study.ask()
    repeat = recorder.begin(again, arch, epochs=1)
    assert repeat.values == values and not repeat.needs_training
    study.tell(again, repeat.values)
    attrs = study.trials[1].user_attrs
    assert attrs[TrialAttrs.DUPLICATE_OF] == 0 and attrs[TrialAttrs.ACCURACIES] == [0.4, 0.6]
    assert "trial 0" in events[-1].remark and events[-1].artifact_store is None
    assert recorder.seed(5) == trial_seed(7, 5)
    recorder.handle.close()


def test_over_budget_is_infeasible_untrained_and_a_failing_hook_fails_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    costs = CostModel((8, 8, 1), 10)
    cheapest = min(SPACE, key=lambda a: costs(a).flops)
    budget = costs(cheapest).flops

    def broken(event) -> None:
        raise RuntimeError("no picture today")

    recorder = _recorder(tmp_path, TrialHooks(on_trial=(broken,)), max_flops=budget)
    dearer = max(SPACE, key=lambda a: costs(a).flops)
    trial = recorder.study.ask()
    candidate = recorder.begin(trial, dearer, epochs=1)
    assert candidate.values == (0.0, float(costs(dearer).flops))
    recorder.study.tell(trial, candidate.values)
    attrs = recorder.study.trials[0].user_attrs
    assert TrialAttrs.INFEASIBLE in attrs and attrs[TrialAttrs.EPOCHS] == 0
    over = float(costs(dearer).flops - budget)
    assert recorder.study.trials[0].constraints == {"flops_budget": over}
    assert "no picture today" in caplog.text
    recorder.handle.close()


def test_a_resume_with_other_settings_names_what_differs(tmp_path: Path) -> None:
    _recorder(tmp_path).handle.close()
    with pytest.raises(PoolnasError, match=r"different budget: epochs 1 \(here 3\).*--epochs"):
        _recorder(tmp_path, budget={"epochs": 3})
    with pytest.raises(PoolnasError, match=r"different max flops.*--max-flops"):
        _recorder(tmp_path, max_flops=10)
    plain = optuna.create_study(study_name="plain", storage=f"sqlite:///{tmp_path / 'r.db'}")
    assert plain.study_name == "plain"
    handle = open_storage(f"sqlite:///{tmp_path / 'r.db'}", create=False)
    with pytest.raises(PoolnasError, match="not created by poolnas"):
        create_or_resume(handle, "plain", SETTINGS)
    handle.close()


def test_the_progress_count_is_the_trials_place_so_workers_never_print_it_twice(
        tmp_path: Path) -> None:
    from poolnas.search import SearchConfig, SearchRunner

    reports = []
    config = SearchConfig(storage=f"sqlite:///{tmp_path / 'p.db'}", study="p", space=SPACE,
                          trials=5)
    runner = SearchRunner(config, report=reports.append)
    study = runner.study
    for accuracy in (0.5, 0.6, 0.7):  # Three trials that completed one after another.
        trial = study.ask({name: optuna.distributions.CategoricalDistribution(list(values))
                           for name, values in SPACE.parameters().items()})
        trial.set_user_attr(TrialAttrs.ARCHITECTURE, "x")
        study.tell(trial, [accuracy, 1.0])
    trials = study.get_trials()
    # Two workers report after all three were stored: each prints its own trial's place.
    runner._after_trial(study, trials[0])
    runner._after_trial(study, trials[2])
    assert [(r.number, r.done) for r in reports] == [(0, 1), (2, 3)]
    runner.handle.close()
