"""The previous default sampler, verbatim: search/_surrogate.py as of commit e911b35 (before
issue 14), kept for the benchmarks (answer_quality.py, replay.py strategy ``previous``) as "the
previous policy": an additive Bayesian surrogate over one-hot features (one observation per
architecture: its mean), EHVI against the front of raw accuracies, no re-evaluation.
The new sampler with ``interactions=False, reevaluate=False`` is *not* the same policy: its GP
sees every training (counts), has other prior and noise grids, and its EHVI uses posterior-mean
fronts. Its model and proposal logic are kept as they were; the EHVI functions, the same
mathematics in both, are imported from the package. Not part of the package."""
# ruff: noqa


from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import TrialState

from poolnas.search._costs import MAX_CANDIDATES
from poolnas.search._trial_attrs import TrialAttrs

__all__ = ["ParetoSurrogateSampler"]


# The exact 2-D EHVI is the same mathematics in both samplers: shared, not copied.
from poolnas.search._surrogate import expected_improvement, front_steps, improvement


class ParetoSurrogateSampler(BaseSampler):
    """Additive Bayesian surrogate of accuracy + exact-FLOPs expected hypervolume improvement.

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
        pairwise: Interaction features: 0 none (purely additive, default), 1 between
            neighbouring parameters, 2 between every pair of parameters.
        pair_scale: Prior variance of the interaction weights relative to the main effects;
            None (default) lets the evidence choose among 0, 0.3 and 1.
        cheapest_first: Make the first start-up proposal the cheapest architecture.
        min_noise: Smallest noise variance (of the standardised accuracies) the evidence may
            choose.
        max_flops: A FLOPs budget: architectures over it are known to be infeasible before
            training and are proposed only when nothing within it is left untried.
        explore: Probability that a model-based proposal is instead a uniformly random untried
            architecture (0 by default: measured no better).
    """

    def __init__(self, space: Any, flops_of: Callable[[Mapping[str, Any]], float], *,
                 seed: int | None = None, n_startup_trials: int = 3,
                 acquisition: str = "ehvi", pairwise: int = 0,
                 pair_scale: float | None = None, cheapest_first: bool = True,
                 min_noise: float = 0.01, explore: float = 0.0,
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
        if pairwise not in (0, 1, 2):
            raise ValueError("pairwise must be 0 (none), 1 (neighbours) or 2 (all pairs)")
        self._pairwise = int(pairwise)
        self._min_noise = float(min_noise)
        self._explore = float(explore)
        self._max_flops = None if max_flops is None else float(max_flops)
        self._pair_scale = None if pair_scale is None else float(pair_scale)
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
        self._features = self._encode(self._candidates)

    def _encode(self, rows: list[dict[str, Any]]) -> np.ndarray:
        names = list(self._params)
        columns: list[np.ndarray] = [np.ones(len(rows))]  # intercept
        groups = [0]  # 0: intercept, 1: main effects, 2: pairwise
        for name in names:
            for value in self._params[name]:
                columns.append(np.array([r[name] == value for r in rows], float))
                groups.append(1)
        if self._pairwise:
            pairs = (list(zip(names, names[1:])) if self._pairwise == 1 else
                     [(a, b) for i, a in enumerate(names) for b in names[i + 1:]])
            for left, right in pairs:
                for a in self._params[left]:
                    for b in self._params[right]:
                        columns.append(np.array(
                            [r[left] == a and r[right] == b for r in rows], float))
                        groups.append(2)
        self._groups = np.array(groups)
        return np.stack(columns, axis=1)

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
            choice = self._acquire(untried, observed, rng)
        return dict(self._candidates[choice])

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
        """``observed``: candidate index -> accuracies (complete, feasible trials);
        ``blocked``: index -> True for failed/running/infeasible (not to be proposed while
        something untried is left; infeasible ones are never worth proposing: value False
        marks them as tried but not retry-able)."""
        observed: dict[int, list[float]] = {}
        blocked: dict[int, bool] = {}
        for t in study.get_trials(deepcopy=False):
            if t.number == number:
                continue
            key = self._key_of(t.params)
            index = self._index.get(key) if key is not None else None
            if index is None:
                continue
            if t.state == TrialState.COMPLETE and t.values:
                if TrialAttrs.INFEASIBLE in t.user_attrs:
                    blocked[index] = False
                    continue
                value = float(t.values[0])
                if math.isfinite(value):
                    observed.setdefault(index, []).append(value)
            elif t.state in (TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING):
                blocked.setdefault(index, True)
        for index in observed:
            blocked.pop(index, None)
        return observed, blocked

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

    def _posterior(self, observed):
        """Bayesian linear regression on standardised accuracies; evidence-chosen scales.

        Returns ``(mean, cov, noise, y_mean, y_scale)`` of the weights."""
        index = np.array(sorted(observed))
        y_raw = np.array([float(np.mean(observed[i])) for i in index])
        X = self._features[index]
        y_mean = float(y_raw.mean())
        y_scale = float(y_raw.std()) if y_raw.size > 1 and y_raw.std() > 1e-9 else 1.0
        y = (y_raw - y_mean) / y_scale
        best = None
        scales = (0.0, 0.3, 1.0) if self._pair_scale is None else (self._pair_scale,)
        if not self._pairwise:
            scales = (0.0,)
        for prior in (0.03, 0.1, 0.3, 1.0):
            for pair in scales:
                variances = np.where(self._groups == 0, 1.0,
                                     np.where(self._groups == 1, prior, prior * pair))
                gram = (X * variances) @ X.T
                # One eigendecomposition serves every noise level: K = Q (lam + noise) Q^T.
                lam, Q = np.linalg.eigh(gram)
                lam = np.maximum(lam, 0.0)
                proj = (Q.T @ y) ** 2
                for noise in (0.01, 0.03, 0.1, 0.3, 1.0):
                    if noise < self._min_noise:
                        continue
                    spread = lam + noise
                    evidence = -0.5 * (proj / spread).sum() - 0.5 * np.log(spread).sum()
                    if best is None or evidence > best[0]:
                        best = (evidence, variances, noise)
        _, variances, noise = best
        keep = variances > 0
        if not keep.all():  # a zero prior variance: that weight is 0
            X = X[:, keep]
        precision = np.diag(1.0 / variances[keep]) + X.T @ X / noise
        cov = np.linalg.inv(precision)
        cov = 0.5 * (cov + cov.T)
        mean = cov @ X.T @ y / noise
        if not keep.all():
            full_mean = np.zeros(len(keep))
            full_cov = np.zeros((len(keep), len(keep)))
            full_mean[keep] = mean
            full_cov[np.ix_(keep, keep)] = cov
            mean, cov = full_mean, full_cov
        return mean, cov, noise, y_mean, y_scale

    def _acquire(self, untried, observed, rng) -> int:
        mean, cov, noise, y_mean, y_scale = self._posterior(observed)
        trained = sorted(observed)
        accuracies = [float(np.mean(observed[i])) for i in trained]
        levels, caps = front_steps(
            [(a, self._flops[i]) for a, i in zip(accuracies, trained)], self._reference)
        floor = min(accuracies)
        cand = np.array(untried)
        X = self._features[cand]
        flops = self._flops[cand]
        if self._acquisition == "thompson":
            draw = rng.multivariate_normal(mean, cov, method="eigh")
            acc = y_mean + y_scale * (X @ draw)
            score = improvement(acc, flops, levels, caps, floor, self._reference)
            if not np.any(score > 0):  # nothing improves under this draw: its best guess
                score = acc - flops / self._reference * 1e-9
        else:
            mu = y_mean + y_scale * (X @ mean)
            var = np.einsum("ij,jk,ik->i", X, cov, X) + noise
            sd = y_scale * np.sqrt(np.maximum(var, 0.0))
            score = expected_improvement(mu, sd, flops, levels, caps, floor,
                                         self._reference)
        top = cand[score >= score.max() * (1 - 1e-12)] if score.max() > 0 else cand
        if top.size > 1 and score.max() <= 0:
            top = cand
        return int(top[rng.integers(len(top))])

