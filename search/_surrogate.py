"""A sampler for small, enumerable categorical spaces whose cost objective is known beforehand.

:class:`ParetoSurrogateSampler` is an Optuna sampler for poolnas' two-objective search
(maximize validation accuracy, minimize FLOPs) when the space is small enough to list every
architecture. It exploits two facts that Optuna's generic samplers cannot know:

1. **The space can be enumerated.** Every candidate is scored and the best untrained one is
   proposed, so an architecture is never proposed twice while an untrained one remains (no
   wasted "duplicate" proposals, which TPE and NSGA-II make on small categorical spaces).
2. **FLOPs are known exactly before training.** Only accuracy is uncertain; the FLOPs of every
   candidate come from a callable given at construction (poolnas counts them in closed form
   from the architecture, without building a model).

The model
---------
:class:`~poolnas.search.AccuracyModel` (``_accuracy_model``): a Gaussian process over the
choices with an overlap kernel, additive plus pairwise terms, every training an observation,
noise and complexity chosen by the evidence. The same model gives the front its posterior means
and ``p_front`` and the answer its intervals, so the sampler, the front and the answer agree.

The acquisition
---------------
For every untrained candidate ``x`` with exact FLOPs ``f(x)`` and posterior predictive accuracy
``A ~ N(mu(x), s(x)^2)``, the sampler computes the *expected hypervolume improvement* (EHVI,
Emmerich, Giannakoglou and Naujoks, IEEE TEVC 2006) of the (accuracy, FLOPs) front of the trained
architectures. Because only one objective is uncertain, the 2-D EHVI is exact and closed-form:
with ``F(t)`` the smallest FLOPs of a trained architecture whose posterior mean accuracy is at
least ``t`` (capped at
the reference, the space's largest FLOPs), a candidate of accuracy ``a`` adds
``HVI(a) = integral_lo^a max(0, F(t) - f(x)) dt``; ``F`` is a step function, so
``E[HVI(A)] = sum_k w_k * integral_{t_k}^{t_k+1} P(A > t) dt`` and each integral is
``s * (psi(z_k) - psi(z_k+1))`` with ``psi(z) = phi(z) - z * (1 - Phi(z))``. The accuracy floor
``lo`` is the lowest posterior mean of a trained architecture (a range-normalised view, so
that the empty area below the worst model does not dominate). Alternatively
(``acquisition="thompson"``) one draw of every candidate's accuracy is made and the candidate with
the largest hypervolume improvement under that draw is proposed (Thompson sampling).

Re-evaluation
-------------
With ``reevaluate`` (the default), every model-based proposal weighs one more training of a
trained architecture against a new one by the value of the information (the knowledge gradient
in hypervolume, Frazier, Powell and Dayanik, 2008): one training moves a posterior mean by a
Gaussian of sd ``s^2 / sqrt(s^2 + noise)``, and its value is the expected hypervolume
improvement of the moved mean minus that of the current mean (exact with :func:`
expected_improvement`, since the improvement is convex in accuracy): for a trained architecture
against the front of the others, for an untried one against the whole front. The larger wins;
a repeat is the same architecture with ``repeat_of`` set on its trial, which the recorder trains
with the trial's own seed instead of copying earlier results. A repeat must also be worth at least
``MIN_REPEAT_VALUE`` of the front's hypervolume. Only seed noise makes a repeat worth anything:
the model learns it from the scatter within architectures, and puts what its terms cannot fit
in the nugget, which a repeat does not reduce (docs/benchmarks.md: on the noiseless
PoolBench-digits replay re-evaluation now costs nothing). An architecture with a trial running
(another worker) is not repeated. Once every architecture within the budget is trained
(and none failed untrained), every further proposal is the most valuable repeat (ties: the
largest posterior sd), never one being trained, instead of a copy of a trained one.

The first objective of the study must be the accuracy (maximized), as in poolnas; the second
(FLOPs) is never read from the trials, it comes from ``flops_of``.

Start-up: the first ``n_startup_trials`` proposals are the cheapest architecture (exact FLOPs;
ties broken at random: the cheapest architecture of a space is always on the Pareto front when it
is unique) and then a random *balanced* design that gives every value of every parameter to
about the same number of trials, which is what an additive model needs first.

Evidence (``benchmarks/replay.py``: strategies replayed against the PoolBench-digits table of
trained architectures, as tabular NAS benchmarks such as NAS-Bench-201 are used): see
docs/benchmarks.md, "Sample efficiency" and "Sample efficiency of the new default". The Thompson
variant, a higher noise floor, random exploration and more start-up trials were measured with
the earlier, additive model and were no better there.

What it reads from the study: ``COMPLETE`` trials' accuracies, one per seed (the user attr
``accuracies``, else the first value); a duplicate trial (``duplicate_of``), which copies stored
values, adds nothing. In a multi-fidelity search (``--min-epochs``) a stopped architecture's
trials are ``FAIL`` to the sampler; their ``rung_accuracies`` still count, moved to the top
rung's scale by each rung's measured gap and weighed by that gap's variance
(:meth:`ParetoSurrogateSampler._with_lower_fidelity`). A complete trial with the user attr
``infeasible`` (over a FLOPs budget, never
trained) is neither modelled nor proposed again. ``FAIL`` trials and trials still ``RUNNING``
(other workers, or the earlier candidates of a batch) are proposed again only when nothing
untried is left; while they train, the model believes each at its posterior mean
(:meth:`ParetoSurrogateSampler._with_pending`), so that proposals made in a row complement
each other. Proposals are
deterministic given ``seed`` and the trials so far (the random stream of a trial is seeded by
``(seed, trial.number)``, so a resumed study proposes what an uninterrupted one would).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import TrialState
from scipy.special import erfc

from poolnas.search._accuracy_model import SAMPLER_COMPONENTS, AccuracyModel, Observations
from poolnas.search._costs import MAX_CANDIDATES
from poolnas.search._trial_attrs import TrialAttrs

__all__ = ["ParetoSurrogateSampler"]

#: A re-evaluation must be worth at least this share of the front's hypervolume: where the
#: model is all but certain (a noiseless table once repeats agreed exactly), a repeat's value
#: and a new candidate's are both vanishing numbers, and comparing them sent every training to
#: the repeat of one of two tied architectures.
MIN_REPEAT_VALUE = 1e-4

#: Candidates scored under the accuracy model's whole average of hyper-parameter settings, after
#: a screen of every candidate under the most probable one (a space with more untried
#: architectures than this).
SCREEN = 2048


def _phi(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _upper_tail(z: np.ndarray) -> np.ndarray:
    """1 - Phi(z), accurate in the tails."""
    return 0.5 * erfc(np.asarray(z, float) / math.sqrt(2.0))


def _psi(z: np.ndarray) -> np.ndarray:
    """E[(Z - z)^+] for standard normal Z; d/dz psi = -(1 - Phi(z))."""
    return _phi(z) - z * _upper_tail(z)


def front_steps(points: Sequence[tuple[float, float]], reference: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """The step function F(t) of a set of (accuracy, flops) points.

    Returns ``(levels, caps)``: ``levels`` ascending accuracies ``t_0 < t_1 < ...`` of the
    non-dominated points and ``caps[k]`` = F(t) for ``t`` in ``(t_{k-1}, t_k]`` (``caps[0]`` for
    ``t <= t_0``), the smallest FLOPs of a point at least that accurate. Above the last level
    F is the reference.
    """
    # Non-dominated points, by accuracy descending, with strictly decreasing FLOPs.
    ordered = sorted(points, key=lambda p: (-p[0], p[1]))
    levels, caps, best = [], [], math.inf
    for accuracy, flops in ordered:
        if flops < best and flops < reference:
            levels.append(accuracy)
            caps.append(flops)
            best = flops
    # levels descend here; F(t) for t <= level_k is min flops of points with acc >= t.
    levels.reverse()
    caps.reverse()
    return np.asarray(levels, float), np.asarray(caps, float)


def expected_improvement(mu: np.ndarray, sd: np.ndarray, flops: np.ndarray,
                         levels: np.ndarray, caps: np.ndarray, floor: float,
                         reference: float) -> np.ndarray:
    """Exact expected 2-D hypervolume improvement of candidates with Gaussian accuracy.

    The region is accuracy in ``[floor, inf)`` x FLOPs in ``(-inf, reference]``; ``levels``,
    ``caps`` describe the current front (:func:`front_steps`). ``sd`` may be 0 (a point value).
    """
    # Breakpoints: floor, then each level above the floor, then +inf.
    bounds = [floor] + [t for t in levels if t > floor] + [math.inf]
    # F on each segment (bounds[k], bounds[k+1]]: the cap of the first level >= the segment top.
    widths_f = []
    for k in range(len(bounds) - 1):
        top = bounds[k + 1]
        above = np.nonzero(levels >= top)[0] if math.isfinite(top) else np.array([], int)
        widths_f.append(caps[above[0]] if above.size else reference)
    total = np.zeros_like(mu, dtype=float)
    sd_safe = np.maximum(sd, 1e-12)
    for k, cap in enumerate(widths_f):
        width = np.maximum(cap - flops, 0.0)
        if not np.any(width > 0):
            continue
        lo, hi = bounds[k], bounds[k + 1]
        z_lo = (lo - mu) / sd_safe
        part = _psi(z_lo)
        if math.isfinite(hi):
            part = part - _psi((hi - mu) / sd_safe)
        total += width * sd_safe * part
    return total


def front_area(levels: np.ndarray, caps: np.ndarray, floor: float, reference: float) -> float:
    """The hypervolume of a front (:func:`front_steps`) above the accuracy ``floor``."""
    area, below = 0.0, floor
    for level, cap in zip(levels, caps):
        if level > below:
            area += (level - below) * max(reference - cap, 0.0)
            below = level
    return area


def improvement(acc: np.ndarray, flops: np.ndarray, levels: np.ndarray, caps: np.ndarray,
                floor: float, reference: float) -> np.ndarray:
    """Hypervolume improvement of candidates with known accuracy ``acc`` (the sd -> 0 limit)."""
    bounds = [floor] + [t for t in levels if t > floor] + [math.inf]
    total = np.zeros_like(acc, dtype=float)
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        above = np.nonzero(levels >= hi)[0] if math.isfinite(hi) else np.array([], int)
        cap = caps[above[0]] if above.size else reference
        width = np.maximum(cap - flops, 0.0)
        total += width * np.clip(np.minimum(acc, hi) - lo, 0.0, None)
    return total


class ParetoSurrogateSampler(BaseSampler):
    """Gaussian-process model of accuracy + exact-FLOPs expected hypervolume improvement.

    See the module docstring for the model and the acquisition.

    Args:
        space: A :class:`poolnas.spaces.SearchSpace` (anything with ``parameters()``,
            ``params_of(arch)``, ``architecture(params)`` and iteration over its distinct
            architectures, each with a ``key``).
        flops_of: ``flops_of(params) -> int``: the exact FLOPs of the architecture with these
            parameter values (called once per architecture, lazily, at the first proposal).
        seed: Seed; proposals are deterministic given it and the study's trials.
        n_startup_trials: Proposals before the model is used (cheapest architecture first,
            then a balanced random design); the model also waits for 2 trained architectures.
        acquisition: ``"ehvi"`` (expected hypervolume improvement, default) or
            ``"thompson"`` (hypervolume improvement under one posterior draw).
        interactions: Let the accuracy model add pairwise terms where the evidence wants
            them (default); False: additive only.
        reevaluate: Decide per proposal between a new architecture and another training of a
            trained one (a *re-evaluation*, user attr ``repeat_of``), by which is worth more
            (default: True).
        repeat_margin: A re-evaluation must be worth this many times the best new candidate.
        cheapest_first: Make the first start-up proposal the cheapest architecture.
        max_flops: A FLOPs budget: architectures over it are known to be infeasible before
            training and are proposed only when nothing within it is left untried.
        explore: Probability that a model-based proposal is instead a uniformly random untried
            architecture (0 by default: measured no better).
    """

    def __init__(self, space: Any, flops_of: Callable[[Mapping[str, Any]], float], *,
                 seed: int | None = None, n_startup_trials: int = 3,
                 acquisition: str = "ehvi", interactions: bool = True,
                 reevaluate: bool = True, repeat_margin: float = 1.0,
                 cheapest_first: bool = True, explore: float = 0.0,
                 max_flops: float | None = None) -> None:
        if acquisition not in ("ehvi", "thompson"):
            raise ValueError(f"acquisition must be 'ehvi' or 'thompson', not {acquisition!r}")
        if n_startup_trials < 0:
            raise ValueError("n_startup_trials must be >= 0")
        self._space = space
        self._flops_of = flops_of
        self._seed = seed
        self._n_startup = int(n_startup_trials)
        self._acquisition = acquisition
        self._interactions = bool(interactions)
        self._reevaluate = bool(reevaluate)
        self._repeat_margin = float(repeat_margin)
        self._explore = float(explore)
        self._max_flops = None if max_flops is None else float(max_flops)
        self._cheapest_first = bool(cheapest_first)
        self._params = {name: tuple(values) for name, values in space.parameters().items()}
        self._search_space = {name: CategoricalDistribution(list(values))
                              for name, values in self._params.items()}
        self._fallback = RandomSampler(seed=seed)
        self._candidates: list[dict[str, Any]] | None = None
        self._fresh_entropy = np.random.SeedSequence().entropy if seed is None else None

    # ------------------------------------------------------------------ candidates
    def _prepare(self) -> None:
        if self._candidates is not None:
            return
        size = getattr(self._space, "size", None)
        if size is not None and size > MAX_CANDIDATES:
            raise ValueError(f"the space has {size:,} architectures; "
                             f"ParetoSurrogateSampler scores at most {MAX_CANDIDATES:,}")
        archs = list(self._space)
        self._keys = [a.key for a in archs]
        self._index = {k: i for i, k in enumerate(self._keys)}
        self._candidates = [dict(self._space.params_of(a)) for a in archs]
        self._flops = np.array([float(self._flops_of(p)) for p in self._candidates])
        self._reference = float(self._flops.max())
        self._allowed = (np.ones(len(self._keys), bool) if self._max_flops is None
                         else self._flops <= self._max_flops)
        self._codes = AccuracyModel(self._params).encode(self._candidates)

    # ------------------------------------------------------------------ Optuna API
    def infer_relative_search_space(self, study, trial):
        return dict(self._search_space)

    def sample_relative(self, study, trial, search_space):
        if not search_space:
            return {}
        if set(search_space) != set(self._search_space) or any(
                search_space[n] != self._search_space[n] for n in search_space):
            return {}  # not our space: Optuna falls back to sample_independent
        self._prepare()
        rng = self._rng(trial.number)
        observed, blocked = self._history(study, trial.number)
        untried = [i for i in range(len(self._keys))
                   if i not in observed and i not in blocked and self._allowed[i]]
        if not untried:
            # Every architecture within the budget is trained: with re-evaluation, another
            # training of the one where it is worth most (never of one being trained now).
            repeatable = (set() if not self._reevaluate or len(observed) < 2 else
                          {i for i in observed if self._allowed[i] and i not in self._busy})
            failed = [i for i in blocked if blocked[i] and self._allowed[i] and i not in self._busy]
            if repeatable and not failed:
                choice = -1 - self._acquire([], observed, rng, repeatable=repeatable)
                self._mark_repeat(study, trial, self._first[choice])
                return dict(self._candidates[choice])
            # Nothing untried within the budget: failed/running ones first, then untried ones
            # over the budget (poolnas rules them out without training), then any (poolnas
            # dedups).
            pool = ([i for i in blocked if blocked[i] and self._allowed[i]]
                    or [i for i in range(len(self._keys)) if i not in observed and i not in blocked]
                    or list(range(len(self._keys))))
            return dict(self._candidates[pool[int(rng.integers(len(pool)))]])
        count = len(observed) + sum(1 for i in blocked if blocked[i])
        if (self._explore > 0 and count >= self._n_startup and len(observed) >= 2
                and rng.random() < self._explore):
            return dict(self._candidates[untried[int(rng.integers(len(untried)))]])
        if count < self._n_startup or len(observed) < 2:
            choice = self._startup(untried, observed, blocked, rng)
        else:
            repeatable = (set() if not self._reevaluate else
                          {i for i in observed if self._allowed[i] and i not in self._busy})
            observed, extra = self._with_lower_fidelity(observed)
            choice = self._acquire(untried, self._with_pending(observed, extra), rng,
                                   extra=extra, repeatable=repeatable)
            if choice < 0:
                choice = -1 - choice
                # A re-evaluation: the recorder trains it again (another seed) instead of
                # copying the results of the trial it repeats.
                self._mark_repeat(study, trial, self._first[choice])
        return dict(self._candidates[choice])

    @staticmethod
    def _mark_repeat(study, trial, first: int) -> None:
        """Set ``repeat_of`` on the trial being sampled: in the storage, and in the frozen
        trial Optuna gave us, which is the running ``optuna.Trial``'s cache of its attrs
        (without it ``trial.user_attrs`` in the objective would not show the mark, and the
        recorder would copy the repeated trial's results instead of training again)."""
        study._storage.set_trial_user_attr(trial._trial_id, TrialAttrs.REPEAT_OF, first)
        attrs = getattr(trial, "user_attrs", None)
        if isinstance(attrs, dict):
            attrs[TrialAttrs.REPEAT_OF] = first

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    # ------------------------------------------------------------------ internals
    def _rng(self, number: int) -> np.random.Generator:
        base = self._seed if self._seed is not None else self._fresh_entropy
        return np.random.default_rng([int(base) & 0xFFFFFFFFFFFFFFFF, int(number)])

    def _key_of(self, params: Mapping[str, Any]) -> str | None:
        try:
            return self._space.architecture(
                {n: params[n] for n in self._params if n in params}).key
        except Exception:  # noqa: BLE001  (a trial from another space: ignore it)
            return None

    def _history(self, study, number: int):
        """``observed``: candidate index -> accuracies, one per training (complete, trained
        trials; a duplicate, which copies another trial's results, adds nothing; every seed
        of ``--repeats`` and every re-evaluation adds its own); ``blocked``: index -> True for
        failed/running/infeasible (not to be proposed while something untried is left;
        infeasible ones are never worth proposing: value False marks them as tried but not
        retry-able). Also sets ``_first`` (index -> its first trained trial), ``_busy``
        (indices with a trial running) and ``_seeds`` (accuracies per training)."""
        observed: dict[int, list[float]] = {}
        blocked: dict[int, bool] = {}
        self._first: dict[int, int] = {}
        self._busy: set[int] = set()
        self._lower: dict[int, tuple[int, float]] = {}
        self._rung_pairs: dict[int, list[tuple[float, float]]] = {}
        seeds = []
        for t in study.get_trials(deepcopy=False):
            if t.number == number:
                continue
            key = self._key_of(t.params)
            index = self._index.get(key) if key is not None else None
            if index is None:
                continue
            self._read_rungs(t, index)
            if t.state == TrialState.COMPLETE and t.values:
                if TrialAttrs.INFEASIBLE in t.user_attrs:
                    blocked[index] = False
                    continue
                if TrialAttrs.DUPLICATE_OF in t.user_attrs and index in observed:
                    continue
                values = t.user_attrs.get(TrialAttrs.ACCURACIES)
                if not isinstance(values, list) or not values:
                    values = [t.values[0]]
                values = [float(v) for v in values if math.isfinite(float(v))]
                if values:
                    observed.setdefault(index, []).extend(values)
                    self._first.setdefault(index, t.number)
                    seeds.append(len(values))
            elif t.state in (TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
                blocked.setdefault(index, True)
                if t.state != TrialState.FAIL:
                    self._busy.add(index)
        for index in observed:
            blocked.pop(index, None)
        self._seeds = max(set(seeds), key=seeds.count) if seeds else 1
        return observed, blocked

    def _read_rungs(self, trial, index: int) -> None:
        """A multi-fidelity trial's accuracy at every rung it reached (``rung_accuracies``):
        a complete one's pairs (rung accuracy, accuracy at the top rung) give each rung's
        correction; a stopped one's highest rung is its architecture's lower-fidelity value."""
        rungs = trial.user_attrs.get(TrialAttrs.RUNG_ACCURACIES)
        if not isinstance(rungs, list) or not rungs:
            return
        rungs = [float(v) for v in rungs]
        if trial.state == TrialState.COMPLETE:
            for rung, value in enumerate(rungs[:-1]):
                self._rung_pairs.setdefault(rung, []).append((value, rungs[-1]))
        elif trial.state in (TrialState.FAIL, TrialState.PRUNED):
            highest = (len(rungs) - 1, rungs[-1])
            if highest[0] >= self._lower.get(index, (-1, 0.0))[0]:
                self._lower[index] = highest

    def _with_lower_fidelity(self, observed):
        """``observed`` plus the architectures a multi-fidelity search stopped below the top
        rung, each as its highest rung's accuracy moved by that rung's mean gap to the top
        (over the complete trials that passed both), with the variance of that gap as the
        value's extra variance: the sampler learns from every fidelity (a per-rung
        correction), and a rung whose gap is not measured yet (fewer than 3 pairs) is not
        used.

        Returns:
            ``(observed, extra)``: the values, and index -> extra variance per value for the
            lower-fidelity ones (:meth:`fit`).
        """
        extra: dict[int, list[float]] = {}
        correction = {}
        for rung, pairs in self._rung_pairs.items():
            if len(pairs) >= 3:
                gaps = np.array([top - low for low, top in pairs])
                correction[rung] = (float(gaps.mean()), float(gaps.var(ddof=1)) + 1e-8)
        out = dict(observed)
        for index, (rung, value) in self._lower.items():
            if index in observed or rung not in correction:
                continue
            shift, var = correction[rung]
            out[index] = [value + shift]
            extra[index] = [var]
        return out, extra

    def _startup(self, untried, observed, blocked, rng) -> int:
        tried = len(observed) + len(blocked)
        untried_arr = np.array(untried)
        if tried == 0 and self._cheapest_first:
            flops = self._flops[untried_arr]
            cheapest = untried_arr[flops == flops.min()]
            return int(cheapest[rng.integers(len(cheapest))])
        # Balanced design: prefer candidates whose values have been tried least often.
        counts = {n: {v: 0 for v in vals} for n, vals in self._params.items()}
        for i in list(observed) + list(blocked):
            for n, v in self._candidates[i].items():
                counts[n][v] += 1
        score = np.array([sum(counts[n][self._candidates[i][n]] for n in self._params)
                          for i in untried], float)
        best = untried_arr[score == score.min()]
        return int(best[rng.integers(len(best))])

    def fit(self, observed, extra=None) -> AccuracyModel:
        """The accuracy model conditioned on ``observed`` (index -> accuracies), a value of
        ``extra`` (index -> variance per value: a lower fidelity's, :meth:`_with_lower_fidelity`)
        weighing less than a training at the top fidelity."""
        index = sorted(observed)
        extra = extra or {}
        model = AccuracyModel(self._params, interactions=self._interactions,
                              components=SAMPLER_COMPONENTS)
        return model.fit(Observations.of(
            [self._candidates[i] for i in index], [observed[i] for i in index],
            [extra.get(i, [0.0] * len(observed[i])) for i in index]))

    def _with_pending(self, observed, extra=None):
        """``observed`` plus the architectures being trained now (other workers, or the
        earlier candidates of a batch asked together), each *believed* at its posterior mean
        (the "kriging believer" of Ginsbourger, Le Riche and Carraro, 2010): the front they
        will probably join and the model's certainty near them steer the next proposal away
        from what is already being trained, so K proposals in a row are K different,
        complementary candidates."""
        pending = sorted(i for i in self._busy if i not in observed)
        if not pending or len(observed) < 2:
            return observed
        mean, _ = self.fit(observed, extra).predict(self._codes[pending])
        return {**observed, **{i: [float(m)] for i, m in zip(pending, mean)}}

    def _acquire(self, untried, observed, rng, *, extra=None, repeatable=()) -> int:
        """The next candidate: the best untried one by EHVI, or (``repeatable``: trained
        indices that may be trained again) a trained one, where another training of it is
        worth more (module docstring, "Re-evaluation"). A repeat is returned as ``-1 - i``.
        ``extra``: the extra variance of lower-fidelity values (:meth:`fit`)."""
        model = self.fit(observed, extra)
        trained = sorted(observed)
        t_mu, _ = model.predict(self._codes[trained])
        t_flops = self._flops[trained]
        levels, caps = front_steps(list(zip(t_mu, t_flops)), self._reference)
        floor = float(min(t_mu))
        noise = model.noise_sd ** 2 / max(self._seeds_per_trial(observed), 1)
        if not untried:
            # Only repeats are possible: the most valuable one (by value, then posterior sd).
            return -1 - self._best_repeat(model, trained, t_flops, floor, noise, repeatable,
                                          -math.inf)[0]
        cand = np.array(untried)
        if self._acquisition == "ehvi" and len(cand) > SCREEN:
            # Screen with the most probable hyper-parameter setting, then score the SCREEN
            # best under the model's whole average (one setting's prediction of every
            # candidate instead of several: docs/benchmarks.md, "Proposal time").
            mu, sd = model.predict(self._codes[cand], components=1)
            first = expected_improvement(mu, np.sqrt(sd ** 2 + noise), self._flops[cand],
                                         levels, caps, floor, self._reference)
            cand = cand[np.sort(np.argsort(-first, kind="stable")[:SCREEN])]
        flops = self._flops[cand]
        mu, sd = model.predict(self._codes[cand])
        if self._acquisition == "thompson":
            draw = mu + sd * rng.standard_normal(mu.size)
            score = improvement(draw, flops, levels, caps, floor, self._reference)
            if not np.any(score > 0):  # nothing improves under this draw: its best guess
                score = draw - flops / self._reference * 1e-9
        else:
            score = expected_improvement(mu, np.sqrt(sd ** 2 + noise), flops, levels, caps,
                                         floor, self._reference)
        top = cand[score >= score.max() * (1 - 1e-12)] if score.max() > 0 else cand
        choice = int(top[rng.integers(len(top))])
        if repeatable:
            # Value of information of one more training, in hypervolume: new vs repeat.
            change = sd ** 2 / np.sqrt(sd ** 2 + noise)
            new_value = float(np.max(
                expected_improvement(mu, change, flops, levels, caps, floor, self._reference)
                - improvement(mu, flops, levels, caps, floor, self._reference)))
            best_repeat, _ = self._best_repeat(model, trained, t_flops, floor, noise,
                                               repeatable,
                                               max(new_value * self._repeat_margin,
                                                   MIN_REPEAT_VALUE * front_area(
                                                       levels, caps, floor, self._reference)))
            if best_repeat is not None:
                return -1 - best_repeat
        return choice

    def _best_repeat(self, model, trained, t_flops, floor, noise, repeatable, threshold):
        """The trained architecture (index) whose next training is worth most in hypervolume,
        if that is worth more than ``threshold`` (else None), and its value. Ties (e.g. every
        value 0) go to the larger posterior sd."""
        best, best_key = None, (threshold, -math.inf)
        t_mean, t_cov = model.joint(self._codes[trained])
        t_sd = np.sqrt(np.maximum(np.diag(t_cov), 0.0))
        for j, i in enumerate(trained):
            if i not in repeatable:
                continue
            others = [k for k in range(len(trained)) if k != j]
            lv, cp = front_steps([(t_mean[k], t_flops[k]) for k in others], self._reference)
            ch = t_sd[j] ** 2 / math.sqrt(t_sd[j] ** 2 + noise)
            mu_j, f_j = np.array([t_mean[j]]), np.array([t_flops[j]])
            value = float(expected_improvement(mu_j, np.array([ch]), f_j, lv, cp, floor,
                                               self._reference)[0]
                          - improvement(mu_j, f_j, lv, cp, floor, self._reference)[0])
            key = (value, float(t_sd[j]))
            if value > threshold and key > best_key:
                best, best_key = i, key
        return best, best_key[0]

    def _seeds_per_trial(self, observed) -> int:
        """Seeds one training gives (``--repeats``): the most common count per trial."""
        return int(getattr(self, "_seeds", 1))
