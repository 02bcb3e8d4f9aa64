"""ParetoSurrogateSampler: determinism, no re-proposals, FAIL/duplicate/infeasible trials, EHVI."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from poolnas.search import hypervolume
from poolnas.search._surrogate import (
    ParetoSurrogateSampler,
    expected_improvement,
    front_steps,
    improvement,
)
from poolnas.spaces import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)

OP_FLOPS = {"max": 0, "avg": 0, "conv": 40}
SKIP_FLOPS = {"none": 0, "projection": 10, "pool_pad": 2}


def small_space() -> SearchSpace:
    """2 points x 3 ops x 3 skips: 81 architectures."""
    return SearchSpace(points=2, ops=("max", "avg", "conv"),
                       skips=("none", "projection", "pool_pad"), widths=(8, 16, 32))


def flops_of(params) -> int:
    return 1000 + sum(OP_FLOPS[v] if name.endswith("_op") else SKIP_FLOPS[v]
                      for name, v in params.items())


def accuracy_of(params) -> float:
    """An additive landscape with one interaction; the best is avg+projection, avg+projection."""
    bonus = {"max": 0.01, "avg": 0.03, "conv": 0.0, "none": 0.0, "projection": 0.02,
             "pool_pad": 0.01}
    acc = 0.8 + sum(bonus[v] for v in params.values())
    if params["point1_op"] == "avg" and params["point2_skip"] == "projection":
        acc += 0.02
    return acc


def run(space, seed: int, n_trials: int, **options):
    # A noiseless landscape: a re-evaluation would only repeat a value (tested on its own).
    options.setdefault("reevaluate", False)
    sampler = ParetoSurrogateSampler(space, flops_of, seed=seed, **options)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)

    def objective(trial):
        arch = space.suggest(trial)
        params = space.params_of(arch)
        return accuracy_of(params), flops_of(params)

    study.optimize(objective, n_trials=n_trials)
    return study, [space.suggest(optuna.trial.FixedTrial(t.params)).key for t in study.trials]


def test_deterministic_given_seed():
    space = small_space()
    _, first = run(space, seed=3, n_trials=15)
    _, again = run(space, seed=3, n_trials=15)
    assert first == again
    _, other = run(space, seed=4, n_trials=15)
    assert len(set(other)) == 15


def test_never_reproposes_while_untried_remain():
    space = SearchSpace(points=2, ops=("max", "conv"), skips=("none", "pool_pad"),
                        widths=(8, 16, 32))
    _, keys = run(space, seed=0, n_trials=space.size + 3)
    assert len(set(keys[:space.size])) == space.size
    assert set(keys[space.size:]) <= set(keys[:space.size])


@pytest.mark.parametrize("options", [{}, {"acquisition": "thompson"}, {"interactions": False},
                                     {"explore": 0.5},
                                     {"n_startup_trials": 0, "cheapest_first": False}])
def test_settings_propose_distinct(options):
    space = small_space()
    _, keys = run(space, seed=1, n_trials=12, **options)
    assert len(set(keys)) == 12


def test_first_proposal_is_cheapest():
    space = small_space()
    _, keys = run(space, seed=5, n_trials=1)
    cheapest = min(flops_of(space.params_of(a)) for a in space)
    arch = next(a for a in space if a.key == keys[0])
    assert flops_of(space.params_of(arch)) == cheapest


def _add(study, space, arch, state, values=None, attrs=None):
    params = space.params_of(arch)
    dists = {n: optuna.distributions.CategoricalDistribution(list(v))
             for n, v in space.parameters().items()}
    study.add_trial(optuna.trial.create_trial(
        params=params, distributions=dists, state=state, values=values,
        user_attrs=attrs or {}))


def test_fail_duplicate_infeasible_and_running_trials():
    space = SearchSpace(points=2, ops=("max", "conv"), skips=("none", "pool_pad"),
                        widths=(8, 16, 32))
    archs = list(space)
    sampler = ParetoSurrogateSampler(space, flops_of, seed=0, reevaluate=False)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    done = archs[:6]
    for arch in done:
        p = space.params_of(arch)
        _add(study, space, arch, optuna.trial.TrialState.COMPLETE,
             [accuracy_of(p), flops_of(p)])
        # poolnas' duplicate: the same values again, marked duplicate_of
        _add(study, space, arch, optuna.trial.TrialState.COMPLETE,
             [accuracy_of(p), flops_of(p)], {"duplicate_of": 0})
    infeasible = archs[6]
    _add(study, space, infeasible, optuna.trial.TrialState.COMPLETE,
         [0.0, flops_of(space.params_of(infeasible))], {"infeasible": "over budget"})
    failed = archs[7]
    _add(study, space, failed, optuna.trial.TrialState.FAIL)
    tried = {a.key for a in archs[:8]}
    proposed = []
    for _ in range(len(archs) - 8):
        trial = study.ask()
        arch = space.suggest(trial)
        assert arch.key not in tried
        tried.add(arch.key)
        proposed.append(arch.key)
        p = space.params_of(arch)
        study.tell(trial, [accuracy_of(p), flops_of(p)])
    # Everything untried is gone: the failed one comes back next, never the infeasible one.
    trial = study.ask()
    assert space.suggest(trial).key == failed.key
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    # A trial still running elsewhere is not proposed while something untried is left.
    sampler2 = ParetoSurrogateSampler(space, flops_of, seed=0, reevaluate=False)
    study2 = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler2)
    running = study2.ask()
    busy = space.suggest(running).key
    keys = []
    for _ in range(len(archs) - 1):
        trial = study2.ask()
        keys.append(space.suggest(trial).key)
        p = space.params_of(space.suggest(trial))
        study2.tell(trial, [accuracy_of(p), flops_of(p)])
    assert busy not in keys and len(set(keys)) == len(archs) - 1


def test_finds_the_best_faster_than_random_expectation():
    """On an additive landscape the most accurate architecture is found well before the
    ~41 trainings random search needs on average (81 architectures, one needle)."""
    space = small_space()
    best = max(space, key=lambda a: accuracy_of(space.params_of(a))).key
    needed = []
    for seed in range(4):
        _, keys = run(space, seed=seed, n_trials=40)
        needed.append(keys.index(best) + 1 if best in keys else 41)
    assert np.median(needed) <= 15, needed


def test_ehvi_matches_monte_carlo_and_improvement_matches_hypervolume():
    front = [(0.90, 100.0), (0.95, 150.0), (0.97, 190.0)]
    reference, floor = 200.0, 0.85
    levels, caps = front_steps(front, reference)
    flops = np.array([90.0, 120.0, 160.0, 195.0])
    acc = np.array([0.96, 0.93, 0.99, 0.5])

    def area(points):
        # hypervolume of (acc - floor, flops) with the reference point (floor, reference)
        shifted = [(a - floor, f) for a, f in points if a > floor]
        return hypervolume(shifted, reference_flops=reference) if shifted else 0.0

    exact = improvement(acc, flops, levels, caps, floor, reference) / reference
    for a, f, e in zip(acc, flops, exact):
        assert math.isclose(e, area(front + [(a, f)]) - area(front), abs_tol=1e-12)
    mu = np.array([0.94, 0.96, 0.90])
    sd = np.array([0.02, 0.01, 0.05])
    f3 = np.array([95.0, 130.0, 170.0])
    closed = expected_improvement(mu, sd, f3, levels, caps, floor, reference)
    rng = np.random.default_rng(0)
    draws = rng.normal(mu, sd, size=(20_000, 3))
    mc = np.mean([improvement(row, f3, levels, caps, floor, reference) for row in draws], axis=0)
    assert np.allclose(closed, mc, rtol=0.05, atol=1e-4)


def test_budget_architectures_over_it_come_last():
    space = small_space()
    budget = 1010
    within = sum(flops_of(space.params_of(a)) <= budget for a in space)
    assert 0 < within < space.size
    _, keys = run(space, seed=2, n_trials=within + 2, max_flops=budget)
    by_key = {a.key: flops_of(space.params_of(a)) for a in space}
    assert all(by_key[k] <= budget for k in keys[:within])
    assert len(set(keys[:within])) == within
    assert all(by_key[k] > budget for k in keys[within:])


def _noisy_search(tmp_path, reevaluate: bool, n_trials: int = 40):
    """A real SQLite study on a noisy landscape (seed scatter as large as the op effects)."""
    space = small_space()
    sampler = ParetoSurrogateSampler(space, flops_of, seed=0, reevaluate=reevaluate)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler,
                                storage=f"sqlite:///{tmp_path / f're{reevaluate}.db'}")
    rng = np.random.default_rng(0)

    def objective(trial):
        params = space.params_of(space.suggest(trial))
        accuracy = accuracy_of(params) + rng.normal(0, 0.02)
        trial.set_user_attr("accuracies", [accuracy])
        return accuracy, flops_of(params)

    study.optimize(objective, n_trials=n_trials)
    return study


def test_reevaluation_repeats_trained_architectures_only_when_on(tmp_path):
    study = _noisy_search(tmp_path, True)
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    assert repeats, "a noisy landscape should make some architecture worth another seed"
    keys = {t.number: space_key(t) for t in study.trials}
    for t in repeats:
        first = t.user_attrs["repeat_of"]
        assert first < t.number and keys[first] == keys[t.number]
    off = _noisy_search(tmp_path, False)
    assert not any("repeat_of" in t.user_attrs for t in off.trials)
    assert len({space_key(t) for t in off.trials}) == len(off.trials)


def space_key(trial) -> str:
    return small_space().suggest(optuna.trial.FixedTrial(trial.params)).key


def test_accuracy_model_learns_noise_and_interactions():
    from poolnas.search import AccuracyModel, Observations

    space = small_space()
    rows = [space.params_of(a) for a in space]
    rng = np.random.default_rng(1)

    def truth(p, interacting):
        extra = 0.05 if interacting and p["point1_op"] == p["point2_op"] else 0.0
        return accuracy_of(p) + extra

    for interacting in (False, True):
        obs = [[truth(p, interacting) + rng.normal(0, 0.01) for _ in range(3)] for p in rows]
        model = AccuracyModel(space.parameters()).fit(Observations.of(rows, obs))
        summary = model.summary()
        assert 0.005 < summary["noise_sd"] < 0.02
        if interacting:
            assert summary["pair_sd"] > 0
        mean, sd = model.predict(model.encode(rows))
        true = np.array([truth(p, interacting) for p in rows])
        inside = np.mean(np.abs(mean - true) <= 1.96 * sd)
        assert inside > 0.8, inside


def test_contrasts_are_the_joint_posterior_s_linear_combinations():
    """``contrast_components`` (what the effects use, without every pair's covariance) gives
    the mean and variance of ``W @ f`` that the joint posterior gives, under every setting."""
    from poolnas.search import AccuracyModel, Observations

    space = small_space()
    rows = [space.params_of(a) for a in space]
    rng = np.random.default_rng(3)
    trained = [rows[i] for i in rng.choice(len(rows), 25, replace=False)]
    model = AccuracyModel(space.parameters()).fit(Observations.of(
        trained, [[accuracy_of(p) + rng.normal(0, 0.01)] for p in trained]))
    assert len(model.components) > 1
    codes = model.encode(rows[:40])
    W = rng.normal(size=(4, 40))
    for (w, mu, cov), (w2, means, variances) in zip(model.joint_components(codes),
                                                    model.contrast_components(codes, W)):
        assert w == w2
        np.testing.assert_allclose(means, W @ mu, atol=1e-9)
        np.testing.assert_allclose(variances, np.einsum("ij,jk,ik->i", W, cov, W),
                                   rtol=1e-6, atol=1e-12)


def test_a_value_tried_once_of_the_one_parameter_that_matters_is_not_shrunk_to_nothing(
        monkeypatch):
    """Six parameters, only the first matters, and its worst value was trained once (an
    adaptive search avoids a value that looked bad): the interval of that value's effect must
    not come from a prior the five idle parameters made narrow. ``LOG_PRIOR`` holds the shared
    main-effect variance off its smallest values; without it the interval held the true effect
    far less often over the same 40 data sets."""
    from poolnas.search import AccuracyModel, Observations, _accuracy_model
    from poolnas.search._accuracy_model import mixture_interval

    parameters = {f"p{i}": ("a", "b", "c") for i in range(6)}
    effect = {"a": 0.0, "b": 0.006, "c": -0.012}

    def coverage() -> float:
        hits = 0
        for seed in range(40):
            rng = np.random.default_rng(seed)
            rows = [{**{n: str(rng.choice(["a", "b", "c"])) for n in parameters},
                     "p0": str(rng.choice(["a", "b"]) if i else "c")} for i in range(25)]
            accuracies = [[0.94 + effect[r["p0"]] + rng.normal(0, 0.015)] for r in rows]
            model = AccuracyModel(parameters).fit(Observations.of(rows, accuracies))
            # p0 = c against p0 = a, over the trained architectures with only p0 changed.
            contexts = [{**r, "p0": v} for v in ("c", "a") for r in rows]
            W = np.repeat([[1.0, -1.0]], len(rows), axis=1) / len(rows)
            parts = model.contrast_components(model.encode(contexts), W)
            low, high = mixture_interval(np.array([w for w, _, _ in parts]),
                                         np.array([m[0] for _, m, _ in parts]),
                                         np.sqrt([v[0] for _, _, v in parts]))
            hits += low <= effect["c"] <= high
        return hits / 40

    with_prior = coverage()
    monkeypatch.setitem(_accuracy_model.LOG_PRIOR, "main", (0.0,) * 5)
    without = coverage()
    assert with_prior >= without + 0.1, (with_prior, without)


def test_p_front_is_certain_for_clear_points_and_split_for_ties():
    from poolnas.search import dominance_probabilities

    mean = np.array([0.90, 0.95, 0.95, 0.80])
    cov = np.diag([1e-8, 1e-4, 1e-4, 1e-8])
    p = dominance_probabilities(mean, cov, [1.0, 2.0, 2.0, 3.0], draws=4000)
    assert p[0] == 1.0 and p[3] == 0.0
    assert abs(p[1] - 0.5) < 0.05 and abs(p[2] - 0.5) < 0.05


def test_once_everything_is_trained_it_repeats_but_never_a_running_one():
    """4 architectures, all trained: each further proposal is a re-evaluation (repeat_of the
    first trial of its architecture), never of the architecture another worker is training."""
    space = SearchSpace(points=1, ops=("max", "avg"), skips=("none", "projection"),
                        widths=(8, 8))
    sampler = ParetoSurrogateSampler(space, flops_of, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    distributions = sampler._search_space
    rng = np.random.default_rng(0)
    archs = list(space)
    for arch in archs:
        params = space.params_of(arch)
        accuracy = accuracy_of({**params, "point2_skip": "none"}) + rng.normal(0, 0.02)
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=distributions, values=[accuracy, flops_of(params)],
            user_attrs={"accuracies": [accuracy], "architecture": arch.key}))
    for busy in archs:
        # Another worker trains ``busy`` (a running trial with its parameters).
        storage = study._storage
        running = storage.create_new_trial(study._study_id)
        for name, value in space.params_of(busy).items():
            storage.set_trial_param(running, name, distributions[name].to_internal_repr(value),
                                    distributions[name])
        trial = study.ask()
        assert space.suggest(trial).key != busy.key
        first = storage.get_trial_user_attrs(trial._trial_id)["repeat_of"]
        # The running trial sees the mark too (the recorder reads it there to train again).
        assert trial.user_attrs["repeat_of"] == first
        assert study.trials[first].params == trial.params
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        storage.set_trial_state_values(running, optuna.trial.TrialState.FAIL)
    # Off: no repeat, a copy of a trained one (poolnas dedups it).
    study.sampler = ParetoSurrogateSampler(space, flops_of, seed=0, reevaluate=False)
    trial = study.ask()
    space.suggest(trial)
    assert "repeat_of" not in study._storage.get_trial_user_attrs(trial._trial_id)


def test_a_batch_asked_together_is_distinct_and_believes_the_pending_ones():
    """K trials asked before any is told (``--parallel``, or other workers' running trials):
    K different untried architectures, each later one proposed with the earlier ones believed
    at the model's posterior mean."""
    space = small_space()
    study, keys = run(space, seed=1, n_trials=8)
    sampler = study.sampler
    asked = [study.ask() for _ in range(4)]
    batch = [space.suggest(t).key for t in asked]
    assert len(set(batch)) == 4 and not set(batch) & set(keys)
    observed, _ = sampler._history(study, number=-1)
    believed = sampler._with_pending(observed)
    pending = set(believed) - set(observed)
    assert {sampler._keys[i] for i in pending} == set(batch)
    mean, _ = sampler.fit(observed).predict(sampler._codes[sorted(pending)])
    assert [believed[i][0] for i in sorted(pending)] == pytest.approx(list(mean))
    # The same study state gives the same batch (proposals stay reproducible).
    again_study, _ = run(space, seed=1, n_trials=8)
    assert [space.suggest(again_study.ask()).key for _ in range(4)] == batch


def test_the_model_tells_seed_noise_from_what_is_particular_to_an_architecture():
    """Seed noise averages away over repeats; an architecture's own deviation from the
    low-order terms (the nugget) does not. With 3 seeds per architecture the model tells one
    from the other, in both directions."""
    from poolnas.search import AccuracyModel, Observations

    space = small_space()
    rows = [space.params_of(a) for a in space]
    rng = np.random.default_rng(5)
    own = rng.normal(0, 0.02, len(rows))
    for deviation, noise in ((own, 0.004), (0 * own, 0.02)):
        truth = np.array([accuracy_of(p) for p in rows]) + deviation
        obs = [[t + rng.normal(0, noise) for _ in range(3)] for t in truth]
        model = AccuracyModel(space.parameters()).fit(Observations.of(rows, obs))
        summary = model.summary()
        assert noise / 2 < summary["noise_sd"] < noise * 2, summary
        if deviation.any():
            assert summary["nugget_sd"] > noise, summary
        mean, sd = model.predict(model.encode(rows))
        assert np.mean(np.abs(mean - truth) <= 1.96 * sd) > 0.85


def test_a_noiseless_landscape_is_seldom_re_evaluated():
    """Re-evaluation is on; a training of an architecture repeats its first value exactly (a
    noiseless table): once the repeats show no scatter the model stops spending trainings on
    them (before the nugget, misfit passed for noise and half the trainings were repeats)."""
    space = small_space()
    study, keys = run(space, seed=2, n_trials=40, reevaluate=True)
    repeats = sum("repeat_of" in t.user_attrs for t in study.trials)
    assert repeats <= 6, repeats
    assert len(set(keys)) >= 34


def test_a_training_with_extra_variance_weighs_less():
    """A lower-fidelity accuracy (moved to the full budget's scale, with the variance of that
    move) informs its architecture less than a full training does."""
    from poolnas.search import AccuracyModel, Observations

    space = small_space()
    rows = [space.params_of(a) for a in space]
    rng = np.random.default_rng(3)
    accuracies = [[accuracy_of(p) + rng.normal(0, 0.005)] for p in rows]
    accuracies[0] = [0.95, 0.75]  # one full training and one far-off lower-fidelity value

    def fitted(extra_of_second):
        extra = [[0.0] * len(a) for a in accuracies]
        extra[0] = [0.0, extra_of_second]
        model = AccuracyModel(space.parameters()).fit(Observations.of(rows, accuracies, extra))
        return model.predict(model.encode(rows[:1]))

    (plain,), _ = fitted(0.0)
    (weighed,), (sd,) = fitted(0.05 ** 2)
    assert weighed > plain + 0.01  # pulled towards the full training's 0.95
    assert sd > 0
    with pytest.raises(ValueError, match="extra"):
        Observations.of(rows[:1], [[0.9]], [[-1.0]])


def test_a_multi_fidelity_search_learns_from_its_lower_rungs():
    """Architectures stopped at a lower rung (FAIL to the sampler, with rung_accuracies) are
    observations once their rung's gap to the top is measured on 3 complete trials: moved by
    the mean gap, weighed by its variance."""
    from optuna.distributions import CategoricalDistribution

    space = small_space()
    archs = list(space)
    sampler = ParetoSurrogateSampler(space, flops_of, seed=0, reevaluate=False)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    dists = {n: CategoricalDistribution(list(v)) for n, v in space.parameters().items()}

    def add(arch, state, rungs):
        params = space.params_of(arch)
        study.add_trial(optuna.trial.create_trial(
            state=state, params=params, distributions=dists,
            values=[rungs[-1], flops_of(params)] if state == TrialState.COMPLETE else None,
            user_attrs={"rung_accuracies": rungs, "architecture": arch.key}))

    from optuna.trial import TrialState

    gaps = [0.10, 0.12, 0.14]
    for arch, gap in zip(archs[:3], gaps):
        add(arch, TrialState.COMPLETE, [0.8, 0.8 + gap])
    add(archs[3], TrialState.FAIL, [0.7])
    add(archs[4], TrialState.FAIL, [0.6, 0.75])  # rung 1: no gap measured: not used
    sampler._prepare()
    observed, blocked = sampler._history(study, number=-1)
    assert sorted(observed) == sorted(sampler._index[a.key] for a in archs[:3])
    assert sampler._index[archs[3].key] in blocked
    believed, extra = sampler._with_lower_fidelity(observed)
    third = sampler._index[archs[3].key]
    assert set(believed) - set(observed) == {third}
    assert believed[third] == [pytest.approx(0.7 + 0.12)]
    assert extra == {third: [pytest.approx(np.var(gaps, ddof=1), rel=1e-3)]}
    # The extra variance reaches the model: the stopped architecture stays less certain than
    # if its corrected value had been a training at the top fidelity.
    code = sampler._codes[[third]]
    _, sd_lower = sampler.fit(believed, extra).predict(code)
    _, sd_top = sampler.fit(believed).predict(code)
    assert sd_lower[0] > sd_top[0]


def test_more_trainings_is_rough_and_only_within_the_budget_s_scale() -> None:
    """`front --explain` once said "roughly 62661 more trainings" for an effect of 0.0 pp after
    30: the 1/sqrt(n) extrapolation means nothing that far out, so beyond 10x the trainings so
    far there is no number, and a number has two significant figures."""
    from poolnas.search import MORE_TRAININGS_HORIZON, more_trainings

    # Effect 1 pp with sd 1 pp after 30: the sd must fall 1.96x, so ~3.84x the trainings.
    assert more_trainings(30, 0.01, 0.01) == 86  # ceil(30 * 2.84)
    assert more_trainings(300, 0.01, 0.01) == 850  # 852, to two figures
    # An effect a twentieth of its sd: 30 * (1.96 * 20)^2 = 46,000 more. No number.
    assert more_trainings(30, 0.0005, 0.01) is None
    assert more_trainings(30, 0.0, 0.01) is None
    # Just inside the horizon a number; just beyond it none.
    z = 1.959963984540054
    inside = more_trainings(30, 0.01, 0.01 / z * (MORE_TRAININGS_HORIZON + 0.9) ** 0.5)
    assert inside is not None and 250 <= inside <= MORE_TRAININGS_HORIZON * 30
    assert more_trainings(30, 0.01, 0.01 / z * (MORE_TRAININGS_HORIZON + 1.1) ** 0.5) is None
    # More uncertainty never needs fewer trainings.
    values = [more_trainings(40, 0.01, sd) for sd in (0.006, 0.008, 0.01, 0.012)]
    assert values == sorted(values)
