"""Tests for poolnas.search._pareto: the front of (accuracy, flops) trials and its hypervolume."""

from __future__ import annotations

import datetime
import math

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import FrozenTrial, TrialState

from poolnas.search._pareto import hypervolume, is_feasible, pareto_front
from poolnas.spaces import PoolnasError


def make_trial(
    number: int,
    accuracy: float,
    flops: float,
    *,
    state: TrialState = TrialState.COMPLETE,
    constraints: list[float] | dict[str, float] | None = None,
) -> FrozenTrial:
    """A frozen trial; list constraints in the old format, dict ones as set_constraint does."""
    now = datetime.datetime.now()
    if constraints is None:
        system_attrs: dict = {}
    elif isinstance(constraints, dict):
        system_attrs = {f"constraints:{k}": v for k, v in constraints.items()}
    else:
        system_attrs = {"constraints": constraints}
    return FrozenTrial(
        number=number,
        state=state,
        value=None,
        values=[accuracy, flops] if state == TrialState.COMPLETE else None,
        datetime_start=now,
        datetime_complete=now if state.is_finished() else None,
        params={},
        distributions={},
        user_attrs={},
        system_attrs=system_attrs,
        intermediate_values={},
        trial_id=number,
    )


def numbers(trials: list[FrozenTrial]) -> list[int]:
    return [t.number for t in trials]


# --- pareto_front ----------------------------------------------------------------------------


def test_front_of_hand_made_trials_is_sorted_by_flops() -> None:
    trials = [
        make_trial(0, 0.90, 300.0),
        make_trial(1, 0.80, 100.0),
        make_trial(2, 0.85, 400.0),  # dominated by 0
        make_trial(3, 0.95, 900.0),
        make_trial(4, 0.70, 100.0),  # dominated by 1 (same flops, lower accuracy)
        make_trial(5, 0.90, 500.0),  # dominated by 0 (same accuracy, more flops)
    ]
    assert numbers(pareto_front(trials)) == [1, 0, 3]
    assert numbers(pareto_front(reversed(trials))) == [1, 0, 3]


def test_front_ignores_unfinished_failed_and_pruned_trials() -> None:
    trials = [
        make_trial(0, 0.5, 100.0),
        make_trial(1, 0.99, 1.0, state=TrialState.RUNNING),
        make_trial(2, 0.99, 1.0, state=TrialState.FAIL),
        make_trial(3, 0.99, 1.0, state=TrialState.PRUNED),
        make_trial(4, 0.99, 1.0, state=TrialState.WAITING),
    ]
    assert numbers(pareto_front(trials)) == [0]


def test_front_ignores_infeasible_trials() -> None:
    trials = [
        make_trial(0, 0.5, 100.0, constraints=[0.0, -1.0]),  # feasible: all <= 0
        make_trial(1, 0.99, 1.0, constraints=[-1.0, 0.5]),  # infeasible, would dominate 0
        make_trial(2, 0.6, 200.0),  # no constraints: feasible
    ]
    assert not is_feasible(trials[1])
    assert is_feasible(trials[0]) and is_feasible(trials[2])
    assert numbers(pareto_front(trials)) == [0, 2]


def test_front_ignores_trials_infeasible_by_set_constraint() -> None:
    trials = [
        make_trial(0, 0.5, 100.0, constraints={"flops_budget": -10.0}),
        make_trial(1, 0.99, 1.0, constraints={"flops_budget": -1.0, "latency": 3.0}),
        make_trial(2, 0.6, 200.0, constraints={"flops_budget": 0.0}),
    ]
    assert [is_feasible(t) for t in trials] == [True, False, True]
    assert numbers(pareto_front(trials)) == [0, 2]


def test_feasibility_of_real_optuna_trials() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        flops = [100.0, 1.0, 200.0][trial.number]
        trial.set_constraint("flops_budget", flops - 150.0)
        return [0.5, 0.99, 0.6][trial.number], flops

    study.optimize(objective, n_trials=3)
    assert [is_feasible(t) for t in study.trials] == [True, True, False]
    assert numbers(pareto_front(study.trials)) == [1]
    assert numbers(pareto_front(study.trials)) == numbers(study.best_trials)


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_identical_values_keep_the_earliest_trial(order: list[int]) -> None:
    trials = [make_trial(7, 0.9, 50.0), make_trial(3, 0.9, 50.0), make_trial(12, 0.9, 50.0)]
    assert numbers(pareto_front([trials[i] for i in order])) == [3]


def test_empty_and_all_failed_give_empty_front() -> None:
    assert pareto_front([]) == []
    assert pareto_front([make_trial(0, 0.9, 1.0, state=TrialState.FAIL)]) == []


values = st.tuples(
    st.sampled_from([0.1, 0.5, 0.7, 0.9, 1.0]) | st.floats(0, 1),
    st.sampled_from([1.0, 10.0, 100.0]) | st.floats(0, 1e9),
)
trial_specs = st.lists(
    st.tuples(values, st.sampled_from(["complete", "complete", "fail", "infeasible"])),
    max_size=40,
)


def _trials(specs: list) -> list[FrozenTrial]:
    trials = []
    for number, ((accuracy, flops), kind) in enumerate(specs):
        if kind == "fail":
            trials.append(make_trial(number, accuracy, flops, state=TrialState.FAIL))
        else:
            constraint = 1.0 if kind == "infeasible" else -1.0
            # Alternate Optuna's two formats: a list, and named values (set_constraint).
            constraints = [constraint] if number % 2 else {"budget": constraint}
            trials.append(make_trial(number, accuracy, flops, constraints=constraints))
    return trials


def _dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
    (a0, a1), (b0, b1) = a.values, b.values
    return a0 >= b0 and a1 <= b1 and (a0 > b0 or a1 < b1)


@given(trial_specs)
@settings(max_examples=200, deadline=None)
def test_front_matches_brute_force_definition(specs: list) -> None:
    trials = _trials(specs)
    front = pareto_front(trials)
    candidates = [t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t)]
    for member in front:
        assert not any(_dominates(other, member) for other in candidates)
    for trial in candidates:
        if trial in front:
            continue
        dominated = any(_dominates(other, trial) for other in candidates)
        earlier_twin = any(
            m.values == trial.values and m.number < trial.number for m in front
        )
        assert dominated or earlier_twin
    assert [t.values[1] for t in front] == sorted(t.values[1] for t in front)
    assert len({tuple(t.values) for t in front}) == len(front)


@given(trial_specs)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_front_agrees_with_optunas_best_trials(specs: list) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for trial in _trials(specs):
        study.add_trial(
            optuna.trial.create_trial(
                state=trial.state,
                values=trial.values,
                system_attrs=trial.system_attrs,
            )
        )
    ours = {tuple(t.values) for t in pareto_front(study.trials)}
    theirs = {tuple(t.values) for t in study.best_trials}
    assert ours == theirs


# --- hypervolume -----------------------------------------------------------------------------


def test_hypervolume_of_hand_made_front_is_sum_of_rectangles() -> None:
    # With reference 1000 flops the points map to (0.5, 0.9), (0.8, 0.6), (0.9, 0.2).
    front = [(0.5, 100.0), (0.8, 400.0), (0.9, 800.0)]
    expected = 0.9 * 0.2 + 0.8 * (0.6 - 0.2) + 0.5 * (0.9 - 0.6)
    assert hypervolume(front, reference_flops=1000.0) == pytest.approx(expected, abs=1e-12)


def test_hypervolume_single_point_is_its_rectangle() -> None:
    assert hypervolume([(0.75, 250.0)], reference_flops=1000.0) == pytest.approx(0.75 * 0.75)


def test_hypervolume_edge_cases() -> None:
    assert hypervolume([], reference_flops=10.0) == 0.0
    assert hypervolume([(0.9, 10.0)], reference_flops=10.0) == 0.0  # at the reference
    assert hypervolume([(0.9, 20.0)], reference_flops=10.0) == 0.0  # beyond it
    assert hypervolume([(0.0, 1.0)], reference_flops=10.0) == 0.0
    assert hypervolume([(1.0, 0.0)], reference_flops=10.0) == 1.0
    assert hypervolume([(1.5, -5.0)], reference_flops=10.0) == 1.0  # clipped into the square
    assert hypervolume([(math.nan, 1.0), (0.5, 5.0)], reference_flops=10.0) == 0.25


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, "100"])
def test_hypervolume_rejects_bad_reference(bad: object) -> None:
    with pytest.raises(PoolnasError, match="reference_flops"):
        hypervolume([(0.5, 1.0)], reference_flops=bad)  # type: ignore[arg-type]


points = st.lists(st.tuples(st.floats(-0.5, 1.5), st.floats(-100.0, 1500.0)), max_size=30)
REFERENCE = 1000.0


def _grid_hypervolume(pts: list[tuple[float, float]], reference: float) -> float:
    """An independent exact O(n²) computation: strips between consecutive x coordinates."""
    mapped = [
        (min(max(a, 0.0), 1.0), min(max(1.0 - f / reference, 0.0), 1.0)) for a, f in pts
    ]
    xs = sorted({0.0, *(x for x, _ in mapped)})
    area = 0.0
    for left, right in zip(xs, xs[1:]):
        height = max((y for x, y in mapped if x >= right), default=0.0)
        area += (right - left) * height
    return area


@given(points)
@settings(max_examples=300, deadline=None)
def test_hypervolume_is_in_unit_interval_and_exact(pts: list) -> None:
    value = hypervolume(pts, reference_flops=REFERENCE)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(_grid_hypervolume(pts, REFERENCE), abs=1e-9)


@given(points, st.tuples(st.floats(-0.5, 1.5), st.floats(-100.0, 1500.0)))
@settings(max_examples=300, deadline=None)
def test_adding_a_point_never_lowers_hypervolume(pts: list, extra: tuple) -> None:
    before = hypervolume(pts, reference_flops=REFERENCE)
    after = hypervolume([*pts, extra], reference_flops=REFERENCE)
    assert after >= before - 1e-12


@given(points, st.data())
@settings(max_examples=300, deadline=None)
def test_dominated_points_do_not_change_hypervolume(pts: list, data: st.DataObject) -> None:
    if not pts:
        return
    accuracy, flops = data.draw(st.sampled_from(pts))
    worse_accuracy = data.draw(st.floats(-1.0, accuracy)) if accuracy > -1.0 else accuracy
    worse_flops = data.draw(st.floats(flops, 3000.0)) if flops < 3000.0 else flops
    before = hypervolume(pts, reference_flops=REFERENCE)
    after = hypervolume([*pts, (worse_accuracy, worse_flops)], reference_flops=REFERENCE)
    assert after == pytest.approx(before, abs=1e-12)


@given(points, st.randoms())
@settings(max_examples=100, deadline=None)
def test_hypervolume_ignores_order(pts: list, rng) -> None:
    shuffled = list(pts)
    rng.shuffle(shuffled)
    assert hypervolume(shuffled, reference_flops=REFERENCE) == pytest.approx(
        hypervolume(pts, reference_flops=REFERENCE), abs=1e-12
    )


@given(trial_specs)
@settings(max_examples=100, deadline=None)
def test_hypervolume_of_front_equals_hypervolume_of_all_feasible(specs: list) -> None:
    trials = _trials(specs)
    feasible = [t.values for t in trials if t.state == TrialState.COMPLETE and is_feasible(t)]
    front = [t.values for t in pareto_front(trials)]
    reference = 1e9
    assert hypervolume(front, reference_flops=reference) == pytest.approx(
        hypervolume(feasible, reference_flops=reference), abs=1e-12
    )


def test_rank_by_fronts_orders_fronts_then_crowding() -> None:
    from poolnas.search._pareto import rank_by_fronts

    # (accuracy up, flops down). Front 1: 0, 1, 2, 3; front 2: 4, 5; front 3: 6.
    points = [(0.9, 40), (0.8, 30), (0.7, 20), (0.85, 39), (0.8, 35), (0.6, 25), (0.5, 50)]
    order = rank_by_fronts(points, ["max", "min"])
    assert set(order[:4]) == {0, 1, 2, 3} and set(order[4:6]) == {4, 5} and order[6] == 6
    # Within the first front the ends (infinite crowding distance) come first, then the
    # point with more room around it: 1 (between 3 and 2) before 3 (close to 0).
    assert order[:2] == [0, 2] and order[2:4] == [1, 3]  # ends: the better first objective
    # One objective: sorting by it, ties by index.
    assert rank_by_fronts([(3.0,), (1.0,), (2.0,), (1.0,)], ["min"]) == [1, 3, 2, 0]
    assert rank_by_fronts([], ["min", "max"]) == []


def test_reported_front_adds_what_the_model_puts_on_the_front() -> None:
    """A lucky seed (trial 1: 0.97 once) holds the raw front's top; the model, having seen
    that architecture's other trainings, puts trial 2's architecture there instead: both are
    shown, each marked with the front it is on."""
    from poolnas.search import ArchitectureEstimate, StudyModel, reported_front

    trials = [make_trial(0, 0.90, 100), make_trial(1, 0.97, 200), make_trial(2, 0.95, 300)]
    for trial, key in zip(trials, "abc"):
        trial.user_attrs["architecture"] = key
    estimates = {
        "a": ArchitectureEstimate("a", 0, 100, 1, 0.90, 0.90, 0.01, 0.9),
        "b": ArchitectureEstimate("b", 1, 200, 4, 0.93, 0.89, 0.01, 0.2),
        "c": ArchitectureEstimate("c", 2, 300, 1, 0.95, 0.94, 0.01, 0.8),
    }
    model = StudyModel(None, None, None, estimates, {})
    assert [(t.number, on) for t, on in reported_front(trials, model)] == [
        (0, "both"), (1, "raw"), (2, "model")]
    assert [(t.number, on) for t, on in reported_front(trials)] == [(0, "raw"), (1, "raw")]
