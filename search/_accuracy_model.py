"""The accuracy model: one probabilistic model of validation accuracy over a categorical space.

It is the one source of the sampler's proposals (:class:`~poolnas.search.ParetoSurrogateSampler`),
the noise-aware front (posterior mean ± sd and ``p_front`` per trained architecture) and the
answer ("avg-pool beats max-pool at point 1 by x pp [lo, hi]", :func:`choice_effects`).

The model
---------
A Gaussian process on the architectures' parameter values (``point1_op=avg``, …) with an
*overlap* kernel: with ``m(x, x')`` the number of parameters on which two architectures agree
out of ``P``,

    k(x, x') = c + a * m / P + b * m (m - 1) / (P (P - 1)).

The ``a`` term is exactly Bayesian linear regression on one-hot features (one weight per value of
each parameter, prior variance ``a / P``): the additive model. The ``b`` term is the same on
one-hot features of every *pair* of parameters (``m (m - 1) / 2`` pairs agree): interactions
between choices (one point's op changes what another's skip is worth). ``c`` is the intercept.
Observations are single trainings: ``y = f(x) + e``, ``e ~ N(0, s^2)``, one noise level for the
space. Every seed of every trial is an observation, so repeats and re-evaluations of one
architecture are what pins the noise down (the evidence separates the scatter within an
architecture from the differences between architectures), and an architecture's posterior sd
shrinks with the number of its trainings.

Complexity from the data: accuracies are standardised, and ``(a, b, s^2)`` are chosen on a grid
by the marginal likelihood (the evidence; Rasmussen and Williams, *Gaussian Processes for Machine
Learning*, 2006, ch. 5), with ``b = 0`` (purely additive) on the grid, so that an additive space
keeps the additive model and a space with interactions gets them. The data enter through
sufficient statistics per architecture (count, mean, within sum of squares), which is exact and
keeps the fit at ``O(u^3)`` for ``u`` distinct trained architectures.

Cost: a proposal predicts every candidate: one ``(N x D) @ (D x u)`` product of one-hot codes
and one ``(N x u) @ (u x u)`` product, ``O(N u^2)``, on one BLAS thread;
``benchmarks/proposal_time.py`` times a whole proposal on a 50,000-architecture space
(docs/benchmarks.md: 0.53 s with 200 trained architectures).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from threadpoolctl import ThreadpoolController

__all__ = ["AccuracyModel", "ArchitectureEstimate", "ChoiceEffect", "Observations", "StudyModel",
           "dominance_probabilities", "fit_accuracy_model", "model_fields"]

#: The evidence's grid (standardised units): main-effect variance a, pairwise variance b,
#: noise variance s^2.
MAIN_GRID = (0.1, 0.3, 1.0, 3.0)
PAIR_GRID = (0.0, 0.1, 0.3, 1.0)
NOISE_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
INTERCEPT = 1.0

#: The BLAS thread pools. The evidence grid factors ~100 small (u x u) matrices; on a loaded
#: 2-core machine OpenBLAS' threads made each Cholesky 5-20x slower than one thread (measured:
#: 3-11 ms against 0.6 ms at u = 200), so the model's linear algebra runs on one thread.
_THREADS = ThreadpoolController()


@dataclass(frozen=True)
class Observations:
    """Trainings grouped by architecture: the model's sufficient statistics.

    Attributes:
        rows: Parameter values of each distinct architecture.
        counts: Trainings (seeds) of each.
        means: Their mean accuracy.
        sumsq: Their sum of squared deviations from that mean.
    """

    rows: tuple[Mapping[str, Any], ...]
    counts: np.ndarray
    means: np.ndarray
    sumsq: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, Any]],
           accuracies: Sequence[Sequence[float]]) -> Observations:
        """From one row of parameter values and its list of accuracies per architecture."""
        counts = np.array([len(a) for a in accuracies], float)
        if np.any(counts < 1):
            raise ValueError("every architecture needs at least one accuracy")
        means = np.array([float(np.mean(a)) for a in accuracies])
        sumsq = np.array([float(np.sum((np.asarray(a, float) - m) ** 2))
                          for a, m in zip(accuracies, means)])
        return cls(tuple(rows), counts, means, sumsq)


class AccuracyModel:
    """Gaussian-process model of accuracy over one categorical space (module docstring).

    Args:
        parameters: The space's parameters and their values (``SearchSpace.parameters()``).
        interactions: Whether pairwise terms may enter (the evidence still decides how much);
            False: the additive model only.
    """

    def __init__(self, parameters: Mapping[str, Sequence[Any]], *,
                 interactions: bool = True) -> None:
        self.parameters = {name: tuple(values) for name, values in parameters.items()}
        self.interactions = bool(interactions)
        self._offsets: dict[str, int] = {}
        width = 0
        for name, values in self.parameters.items():
            self._offsets[name] = width
            width += len(values)
        self._width = max(width, 1)
        self._lookup = {name: {v: i for i, v in enumerate(values)}
                        for name, values in self.parameters.items()}
        self.fitted = False

    # ------------------------------------------------------------------ encoding
    @property
    def P(self) -> int:  # noqa: N802 (the symbol of the docstring)
        return max(len(self.parameters), 1)

    def encode(self, rows: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """One-hot codes (float32, one column per value of each parameter) of parameter rows."""
        rows = list(rows)
        out = np.zeros((len(rows), self._width), np.float32)
        for r, row in enumerate(rows):
            for name, lookup in self._lookup.items():
                index = lookup.get(row.get(name))
                if index is not None:
                    out[r, self._offsets[name] + index] = 1.0
        return out

    def _kernel(self, left: np.ndarray, right: np.ndarray, a: float, b: float) -> np.ndarray:
        # k = c + a m / P + b m (m - 1) / (P (P - 1)) = c + m (b' m + a / P - b'), in place.
        k = left @ right.T
        P = self.P
        pair = b / (P * (P - 1)) if b > 0 and P > 1 else 0.0
        if pair:
            m = k.copy()
            k *= pair
            k += a / P - pair
            k *= m
        else:
            k *= a / P
        k += INTERCEPT
        return k

    def _prior_var(self, a: float, b: float) -> float:
        return INTERCEPT + a + (b if self.P > 1 else 0.0)

    # ------------------------------------------------------------------ fit
    def fit(self, observations: Observations) -> AccuracyModel:
        """Choose ``(a, b, s^2)`` by the evidence and condition on the observations.

        Raises:
            ValueError: No observation.
        """
        with _THREADS.limit(limits=1, user_api="blas"):
            return self._fit(observations)

    def _fit(self, observations: Observations) -> AccuracyModel:
        if len(observations.rows) == 0:
            raise ValueError("the accuracy model needs at least one trained architecture")
        self.obs = observations
        X = self.encode(observations.rows).astype(float)
        n = observations.counts
        total = float(n.sum())
        grand = float(np.sum(n * observations.means) / total)
        spread = float(np.sum(observations.sumsq) + np.sum(n * (observations.means - grand) ** 2))
        scale = math.sqrt(spread / total) if total > 1 and spread > 1e-12 * total else 0.05
        self.y_mean, self.y_scale = grand, scale
        ybar = (observations.means - grand) / scale
        within = observations.sumsq / scale ** 2
        m = X @ X.T
        P = self.P
        pair = m * (m - 1) / (P * (P - 1)) if P > 1 else np.zeros_like(m)
        best: tuple[float, float, float, float] | None = None
        pairs = PAIR_GRID if self.interactions and P > 1 else (0.0,)
        extra = float(np.sum(n - 1))
        for a in MAIN_GRID:
            for b in pairs:
                K = INTERCEPT + a * m / P + b * pair
                for s2 in NOISE_GRID:
                    C = K + np.diag(s2 / n)
                    try:
                        L = np.linalg.cholesky(C)
                    except np.linalg.LinAlgError:
                        continue
                    alpha = solve_triangular(L, ybar, lower=True)
                    evidence = (-0.5 * float(alpha @ alpha) - float(np.log(np.diag(L)).sum())
                                - 0.5 * float(within.sum()) / s2
                                - 0.5 * extra * math.log(s2))
                    if best is None or evidence > best[0]:
                        best = (evidence, a, b, s2)
        assert best is not None
        self.log_evidence, self.main_var, self.pair_var, self.noise_var = best
        self._X = X.astype(np.float32)
        K = self._kernel(X, X, self.main_var, self.pair_var)
        self._chol = cho_factor(K + np.diag(self.noise_var / n), lower=True)
        self._alpha = cho_solve(self._chol, ybar)
        self._L = np.tril(self._chol[0])
        self._inverse = cho_solve(self._chol, np.eye(len(n))).astype(np.float32)
        self.fitted = True
        return self

    # ------------------------------------------------------------------ posterior
    @property
    def noise_sd(self) -> float:
        """The sd of one training's accuracy around its architecture's true accuracy."""
        return self.y_scale * math.sqrt(self.noise_var)

    def predict(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of the true (noise-free) accuracy of encoded architectures."""
        with _THREADS.limit(limits=1, user_api="blas"):
            K = self._kernel(codes, self._X, self.main_var, self.pair_var)
            mean = self.y_mean + self.y_scale * (K @ self._alpha)
            # One float32 matrix product (BLAS-3) serves every candidate's variance.
            reduced = np.einsum("ij,ij->i", K @ self._inverse, K)
        var = self._prior_var(self.main_var, self.pair_var) - reduced
        return mean, self.y_scale * np.sqrt(np.maximum(var, 1e-12))

    def joint(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean vector and covariance matrix of the true accuracies (joint)."""
        with _THREADS.limit(limits=1, user_api="blas"):
            K = self._kernel(codes, self._X, self.main_var, self.pair_var)
            mean = self.y_mean + self.y_scale * (K @ self._alpha)
            V = solve_triangular(self._L, K.T.astype(float), lower=True, check_finite=False)
            prior = self._kernel(codes, codes, self.main_var, self.pair_var).astype(float)
            cov = prior - V.T @ V
        cov = 0.5 * (cov + cov.T) * self.y_scale ** 2
        return mean, cov

    def summary(self) -> dict[str, float]:
        """The chosen hyper-parameters in accuracy units (what the docs and tests read)."""
        return {"noise_sd": self.noise_sd,
                "main_sd": self.y_scale * math.sqrt(self.main_var),
                "pair_sd": self.y_scale * math.sqrt(self.pair_var),
                "log_evidence": float(self.log_evidence)}


def dominance_probabilities(mean: np.ndarray, cov: np.ndarray, costs: Sequence[float], *,
                            draws: int = 2000, seed: int = 0) -> np.ndarray:
    """``p_front``: the probability that each point is Pareto-optimal (accuracy up, cost down).

    Monte Carlo over joint posterior draws of the accuracies; the costs are exact. A point is
    dominated in a draw when another point costs at most as much and is more accurate.
    """
    mean = np.asarray(mean, float)
    n = mean.size
    if n == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    w, Q = np.linalg.eigh(np.asarray(cov, float))
    root = Q * np.sqrt(np.maximum(w, 0.0))
    samples = mean[None, :] + rng.standard_normal((draws, n)) @ root.T
    costs = np.asarray(costs, float)
    optimal = np.zeros(n)
    for i in range(n):
        rivals = (costs <= costs[i]) & (np.arange(n) != i)
        if not rivals.any():
            optimal[i] = 1.0
            continue
        best = samples[:, rivals].max(axis=1)
        optimal[i] = float(np.mean(samples[:, i] > best))
    return optimal


# ---------------------------------------------------------------------- a study's model
@dataclass(frozen=True)
class ArchitectureEstimate:
    """What the model says about one trained architecture of a study.

    Attributes:
        key: Its architecture key.
        number: Its first trained trial.
        flops: Its FLOPs (exact).
        trainings: Accuracies observed (seeds of every trial of it).
        observed: Their mean (the raw number).
        mean: Posterior mean of its true accuracy.
        sd: Posterior sd.
        p_front: Probability that it is Pareto-optimal among the trained architectures.
    """

    key: str
    number: int
    flops: float
    trainings: int
    observed: float
    mean: float
    sd: float
    p_front: float


@dataclass(frozen=True)
class ChoiceEffect:
    """One choice at one point against the others (``other`` None) or against one other.

    Attributes:
        point: The downsampling point, from 1.
        kind: ``"op"`` or ``"skip"``.
        choice: The choice.
        other: The choice it is compared with; None: the mean of the other choices.
        effect: Posterior mean of the accuracy difference (a fraction), averaged over the
            trained architectures with only this choice changed.
        low: Lower end of its 95 % credible interval.
        high: Upper end.
        decided: Whether the interval excludes zero.
        flops_ratio: Exact FLOPs with ``choice`` / FLOPs with the other(s), geometric mean over
            the same architectures.
        more_trainings: Roughly how many more trainings would decide it (None: decided, or the
            effect is too close to zero to say).
    """

    point: int
    kind: str
    choice: str
    other: str | None
    effect: float
    low: float
    high: float
    decided: bool
    flops_ratio: float
    more_trainings: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"point": self.point, "kind": self.kind, "choice": self.choice,
                "other": self.other, "effect": self.effect, "effect_low": self.low,
                "effect_high": self.high, "decided": self.decided,
                "flops_ratio": self.flops_ratio, "more_trainings": self.more_trainings}


Z95 = 1.959963984540054


class StudyModel:
    """The accuracy model of one poolnas study: estimates per architecture and choice effects.

    Made by :func:`fit_accuracy_model`.
    """

    def __init__(self, space: Any, flops_of: Any, model: AccuracyModel,
                 estimates: dict[str, ArchitectureEstimate], rows: dict[str, dict]) -> None:
        self.space = space
        self.flops_of = flops_of
        self.model = model
        self.estimates = estimates
        self._rows = rows
        self.trainings = int(sum(e.trainings for e in estimates.values()))

    def estimate(self, key: str) -> ArchitectureEstimate | None:
        return self.estimates.get(key)

    def fields(self, key: Any) -> dict[str, float | int | None]:
        """``accuracy_mean``, ``accuracy_sd``, ``p_front`` and ``trainings`` of one
        architecture (None where the model has no estimate of it): the one set of numbers that
        ``front --format json|csv``, ``manifest.json`` and ``answer.json`` carry."""
        return model_fields(self, key)

    def front(self) -> list[ArchitectureEstimate]:
        """The non-dominated architectures by posterior mean accuracy and FLOPs, cheapest first."""
        ordered = sorted(self.estimates.values(), key=lambda e: (e.flops, -e.mean, e.number))
        front, best = [], -math.inf
        for e in ordered:
            if e.mean > best:
                front.append(e)
                best = e.mean
        return front

    def effects(self, point: int, kind: str) -> list[ChoiceEffect]:
        """Every choice of ``kind`` at ``point`` against the rest, then every pair of choices.

        The contrast is a linear function of the accuracies, so its posterior is exact: the
        trained architectures are the contexts, each with only this choice changed.
        """
        name = f"point{point}_{kind}"
        values = self.model.parameters.get(name)
        if not values:
            return []
        contexts = list(self._rows.values())
        rows = [{**c, name: v} for v in values for c in contexts]
        mean, cov = self.model.joint(self.model.encode(rows))
        flops = np.log(np.array([float(self.flops_of(r)) for r in rows]))
        C, k = len(contexts), len(values)

        def contrast(weights: np.ndarray) -> tuple[float, float, float]:
            w = np.repeat(weights, C) / C
            return (float(w @ mean), math.sqrt(max(float(w @ cov @ w), 0.0)),
                    math.exp(float(w @ flops)))

        out = []
        pairs: list[tuple[int, int | None]] = [(i, None) for i in range(k)]
        pairs += [(i, j) for i in range(k) for j in range(i + 1, k)]
        for i, j in pairs:
            weights = np.zeros(k)
            weights[i] = 1.0
            if j is None:
                if k < 2:
                    continue
                weights[[x for x in range(k) if x != i]] = -1.0 / (k - 1)
            else:
                weights[j] = -1.0
            effect, sd, ratio = contrast(weights)
            low, high = effect - Z95 * sd, effect + Z95 * sd
            decided = low > 0 or high < 0
            more = None
            if not decided and abs(effect) > 1e-6 and sd > 0:
                target = abs(effect) / Z95
                more = int(math.ceil(self.trainings * ((sd / target) ** 2 - 1)))
                more = max(more, 1)
            out.append(ChoiceEffect(point, kind, values[i], None if j is None else values[j],
                                    effect, low, high, decided, ratio, more))
        return out


def model_fields(model: StudyModel | None, key: Any) -> dict[str, float | int | None]:
    """The model's numbers of architecture ``key`` as plain fields (all None without a model
    or an estimate): ``accuracy_mean``, ``accuracy_sd``, ``p_front``, ``trainings``."""
    e = model.estimate(key) if model is not None and isinstance(key, str) else None
    return {"accuracy_mean": None if e is None else e.mean,
            "accuracy_sd": None if e is None else e.sd,
            "p_front": None if e is None else e.p_front,
            "trainings": None if e is None else e.trainings}


def fit_accuracy_model(study: Any, trials: Sequence[Any] | None = None, *,
                       draws: int = 2000) -> StudyModel | None:
    """The accuracy model of a poolnas study, fitted to every training it holds.

    Every complete, trained trial counts (each seed of ``accuracies``; re-evaluations
    included; duplicates, which copy another trial's values, and trials over the FLOPs budget,
    never trained, do not).

    Args:
        study: A poolnas study (its settings name the space and the costs).
        trials: Its trials, if the caller has them.
        draws: Monte Carlo draws for ``p_front``.

    Returns:
        The model, or None when the study records no space or has no trained architecture.
    """
    from optuna.trial import TrialState

    from poolnas.search._costs import CostModel
    from poolnas.search._pareto import is_feasible
    from poolnas.search._trial_attrs import STUDY_ATTR, TrialAttrs
    from poolnas.spaces import Architecture, PoolnasError, SearchSpace

    settings = study.user_attrs.get(STUDY_ATTR) or {}
    try:
        space = SearchSpace.from_dict(settings["space"])
        flops_of = CostModel.of_settings(settings).flops_of(space)
    except (KeyError, PoolnasError, TypeError, ValueError):
        return None
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    accuracies: dict[str, list[float]] = {}
    first: dict[str, int] = {}
    rows: dict[str, dict] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.state != TrialState.COMPLETE or not t.values or len(t.values) != 2:
            continue
        attrs = t.user_attrs
        if (TrialAttrs.DUPLICATE_OF in attrs or TrialAttrs.INFEASIBLE in attrs
                or not is_feasible(t)):
            continue
        key = attrs.get(TrialAttrs.ARCHITECTURE)
        if not isinstance(key, str):
            continue
        try:
            params = dict(space.params_of(Architecture.from_key(key)))
        except PoolnasError:
            continue
        values = attrs.get(TrialAttrs.ACCURACIES)
        if not isinstance(values, list) or not values:
            values = [t.values[0]]
        values = [float(v) for v in values if math.isfinite(float(v))]
        if not values:
            continue
        accuracies.setdefault(key, []).extend(values)
        first.setdefault(key, t.number)
        rows[key] = params
    if not rows:
        return None
    keys = list(rows)
    model = AccuracyModel(space.parameters()).fit(
        Observations.of([rows[k] for k in keys], [accuracies[k] for k in keys]))
    mean, cov = model.joint(model.encode([rows[k] for k in keys]))
    flops = [float(flops_of(rows[k])) for k in keys]
    p_front = dominance_probabilities(mean, cov, flops, draws=draws)
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    estimates = {k: ArchitectureEstimate(
        key=k, number=first[k], flops=flops[i], trainings=len(accuracies[k]),
        observed=float(np.mean(accuracies[k])), mean=float(mean[i]), sd=float(sd[i]),
        p_front=float(p_front[i])) for i, k in enumerate(keys)}
    return StudyModel(space, flops_of, model, estimates, rows)
