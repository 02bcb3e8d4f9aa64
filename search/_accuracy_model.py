"""The accuracy model: one probabilistic model of validation accuracy over a categorical space.

It is the one source of the sampler's proposals (:class:`~poolnas.search.ParetoSurrogateSampler`),
the noise-aware front (posterior mean ± sd and ``p_front`` per trained architecture) and the
answer ("avg-pool beats max-pool at point 1 by x pp [lo, hi]", :func:`choice_effects`).

The model
---------
A Gaussian process on the architectures' parameter values (``point1_op=avg``, …) with an
*overlap* kernel: with ``m(x, x')`` the number of parameters on which two architectures agree
out of ``P`` and ``C(m, k)`` binomial coefficients,

    k(x, x') = c + a m / P + b C(m, 2) / C(P, 2) + t C(m, 3) / C(P, 3) + d [x = x'].

The ``a`` term is exactly Bayesian linear regression on one-hot features (one weight per value of
each parameter): the additive model. The ``b`` term is the same on one-hot features of every
*pair* of parameters (``C(m, 2)`` pairs agree): interactions between choices (one point's op
changes what another's skip is worth); ``t`` the same for triples (stems x ops x merges). ``c``
is the intercept. ``d`` (the "nugget") is what is particular to one architecture, beyond every
term of lower order. Observations are single trainings: ``y = f(x) + e``, ``e ~ N(0, s^2)``.
Every seed of every trial is an observation, so the scatter *within* an architecture (repeats,
re-evaluations, ``--repeats``) is what tells seed noise ``s^2`` (which more trainings average
away) from ``d`` (which they do not); an architecture's posterior sd shrinks with the number of
its trainings only as far as its noise allows. Without the nugget the model took what its
low-order terms cannot fit for seed noise, and re-evaluated architectures whose trainings
agreed exactly (docs/benchmarks.md, "Answer quality").

Complexity from the data: accuracies are standardised, and ``(a, b, t, r, share)`` (``r = d +
s^2`` the residual variance, ``share = s^2 / r``) are weighed on a grid by the marginal
likelihood (the evidence; Rasmussen and Williams, *Gaussian Processes for Machine Learning*,
2006, ch. 5) times a prior that holds ``a`` off its smallest values unless the data insist
(``LOG_PRIOR``), with ``b = t = 0`` (purely additive) on the grid, so that an additive space keeps
the additive model and a space with interactions gets them. The evidence is climbed from a few
starts (one step in one hyper-parameter at a time) instead of evaluated on the whole grid, and
the model *averages* over the most probable settings the climbs evaluated (a mixture, weighted
by the evidence), rather than betting on one: with 20-60 trainings the data cannot pin the
hyper-parameters down, and a single best setting gave intervals that covered 80 % where they
claimed 95 %. Without any repeat the split ``share`` is not identified (the evidence is flat
along it) and the average keeps the whole range. The data enter through sufficient statistics
per architecture (the precision-weighted mean of its trainings and the likelihood of their
scatter), which is exact and keeps a fit at ``O(u^3)`` for ``u`` distinct trained
architectures. A training may carry an extra variance of its own (a lower-fidelity accuracy
moved to the full budget's scale, in a multi-fidelity search): it then weighs less.

Cost: a proposal predicts every candidate: one ``(N x D) @ (D x u)`` product of one-hot codes
(the overlaps, from which each setting's kernel is a table lookup) and one ``(N x u) @ (u x u)``
product per averaged setting (a sampler averages over at most ``SAMPLER_COMPONENTS``), ``O(N
u^2)``, on one BLAS thread;
``benchmarks/proposal_time.py`` times a whole proposal on a 50,000-architecture space
(docs/benchmarks.md: 0.45 s of one core with 200 trained architectures). A choice effect is a
linear contrast of the accuracies of the trained architectures with that choice changed; its
mean and variance come from ``K^T w`` products (:meth:`AccuracyModel.contrast_components`),
not from the joint covariance of every pair of those architectures: the answer of a study with
200 trained architectures takes about 0.4 s instead of 2.5 s.
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

#: The hyper-parameters' grids (standardised units): main-effect variance, pairwise variance,
#: third-order variance, and the residual variance of one training beyond those terms, split
#: into seed noise s^2 (``noise_share`` of it: repeats average it away) and a per-architecture
#: variance d (the "nugget": what no term of lower order explains, which repeats of one
#: architecture do not average away). Without repeats the split is not identified: the
#: evidence is flat along ``noise_share`` and the average below keeps the whole range, so the
#: grid's points are the prior. Most put most of the residual in seed noise, which retraining
#: a network with another seed is known to change (one seed's sd is 1.3-1.6 pp on
#: PoolBench-digits, as large as the effects); one (0.01) lets a noiseless table, or a nugget
#: that repeats show, take the rest. With the earlier points (1, 0.5, 0.2, 0.05, 0.01) one or
#: two repeats that happened to agree put the seed noise in the nugget: the model then took
#: each single training for its architecture's true accuracy, and 19 % of the decided effect
#: claims after 60 trainings had the wrong sign (7 % with these; docs/benchmarks.md, "Answer
#: quality").
GRIDS = {
    "main": (0.03, 0.1, 0.3, 1.0, 3.0),
    "pair": (0.0, 0.03, 0.1, 0.3, 1.0),
    "triple": (0.0, 0.03, 0.1, 0.3, 1.0),
    "residual": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
    "noise_share": (1.0, 0.7, 0.5, 0.3, 0.1, 0.01),
}
#: Log prior weights of grid points, added to the evidence (a grid not named here: its points
#: weigh alike). The main-effect variance is one for every parameter, so the evidence sets it by
#: the many parameters whose choices barely matter; left to that, it shrank the few that do. A
#: value the sampler had tried once (it soon stops trying a bad one) then got its interval from
#: that prior alone, too narrow: on PoolBench-digits the effects of the ops at points 1 and 3
#: (the largest, 0.5-0.6 pp) held the truth 60-71 % of the time, the effect intervals overall
#: 86 %. With 4 and 2 nats against the two smallest variances: 0.90-0.91 overall, 71-86 % for
#: those ops, and the sampler as efficient as before (NAS-Bench-Graph, PoolBench-digits); the
#: data can still choose them, many trainings outweigh a few nats. One variance per parameter,
#: weighed by the evidence, made it worse (0.77): after an adaptive search the data show least
#: about the parameter whose bad value the sampler avoided. docs/benchmarks.md, "Answer
#: quality".
LOG_PRIOR = {"main": (-4.0, -2.0, 0.0, 0.0, 0.0)}
#: Where the evidence's climbs start (grid indices): additive, then with interactions of each
#: order.
STARTS = ({"main": 2, "pair": 0, "triple": 0, "residual": 4, "noise_share": 1},
          {"main": 2, "pair": 2, "triple": 0, "residual": 3, "noise_share": 1},
          {"main": 2, "pair": 0, "triple": 2, "residual": 3, "noise_share": 1})
INTERCEPT = 1.0
#: Hyper-parameter settings averaged over: the most probable of those the climbs evaluated,
#: holding this much of their posterior mass, at most MAX_COMPONENTS of them (the answer: the
#: front's and the effects' numbers). With 20-40 trainings the posterior is broad: 0.99 of it
#: takes 40-60 settings, and a cap of 16 cut off the wider ones (effect coverage 0.81 → 0.86
#: against PoolBench-digits' 6-seed truth after 30 trainings; docs/benchmarks.md, "Answer
#: quality"); with 200 trainings about 25 hold it.
MASS = 0.99
MAX_COMPONENTS = 64
#: What a sampler's proposal averages over: every candidate of the space is predicted under
#: each setting, so fewer (docs/benchmarks.md, "Proposal time").
SAMPLER_COMPONENTS = 4

#: The BLAS thread pools. The evidence grid factors a few hundred small (u x u) matrices; on a
#: loaded 2-core machine OpenBLAS' threads made each Cholesky 5-20x slower than one thread
#: (measured: 3-11 ms against 0.6 ms at u = 200), so the model's linear algebra runs on one
#: thread.
_THREADS = ThreadpoolController()


@dataclass(frozen=True)
class Observations:
    """Trainings grouped by architecture: what the model is fitted to.

    Attributes:
        rows: Parameter values of each distinct architecture.
        counts: Trainings (seeds) of each.
        means: Their mean accuracy.
        sumsq: Their sum of squared deviations from that mean.
        values: Every training's accuracy, per architecture.
        extra: Per training, a variance it has beyond seed noise (accuracy units squared; 0 for
            a training to the search's full budget; > 0 for a lower-fidelity accuracy moved to
            the full budget's scale, whose error this is).
    """

    rows: tuple[Mapping[str, Any], ...]
    counts: np.ndarray
    means: np.ndarray
    sumsq: np.ndarray
    values: tuple[np.ndarray, ...] = ()
    extra: tuple[np.ndarray, ...] = ()

    @classmethod
    def of(cls, rows: Sequence[Mapping[str, Any]], accuracies: Sequence[Sequence[float]],
           extra: Sequence[Sequence[float]] | None = None) -> Observations:
        """From one row of parameter values and its list of accuracies per architecture (and,
        for lower-fidelity accuracies, the list of their extra variances)."""
        counts = np.array([len(a) for a in accuracies], float)
        if np.any(counts < 1):
            raise ValueError("every architecture needs at least one accuracy")
        values = tuple(np.asarray(a, float) for a in accuracies)
        if extra is None:
            variances = tuple(np.zeros(len(v)) for v in values)
        else:
            variances = tuple(np.asarray(e, float) for e in extra)
            if any(e.shape != v.shape or np.any(e < 0) for e, v in zip(variances, values)):
                raise ValueError("extra needs one variance >= 0 per accuracy")
        means = np.array([float(np.mean(v)) for v in values])
        sumsq = np.array([float(np.sum((v - m) ** 2)) for v, m in zip(values, means)])
        return cls(tuple(rows), counts, means, sumsq, values, variances)


@dataclass(frozen=True)
class _Component:
    """The posterior under one hyper-parameter setting of the grid."""

    weight: float
    main: float
    pair: float
    triple: float
    nugget: float
    noise: float
    chol: tuple
    alpha: np.ndarray
    inverse: np.ndarray
    lower: np.ndarray


class AccuracyModel:
    """Gaussian-process model of accuracy over one categorical space (module docstring).

    Args:
        parameters: The space's parameters and their values (``SearchSpace.parameters()``).
        interactions: Whether pairwise and third-order terms may enter (the evidence still
            decides how much); False: the additive model only.
        components: At most this many hyper-parameter settings are averaged over.
    """

    def __init__(self, parameters: Mapping[str, Sequence[Any]], *,
                 interactions: bool = True, components: int = MAX_COMPONENTS) -> None:
        self.parameters = {name: tuple(values) for name, values in parameters.items()}
        self.interactions = bool(interactions)
        self.max_components = max(int(components), 1)
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

    def _from_overlap(self, m: np.ndarray, a: float, b: float, t: float,
                      d: float) -> np.ndarray:
        """The kernel from the overlap counts ``m`` (a new array; ``m`` is left as it is)."""
        # k = c + a m/P + b C(m,2)/C(P,2) + t C(m,3)/C(P,3) + d [m = P]
        #   = c + m (a/P + (m - 1) (b' + (m - 2) t')) + d [m = P].
        P = self.P
        pair = b / (P * (P - 1)) if b > 0 and P > 1 else 0.0
        triple = t / (P * (P - 1) * (P - 2)) if t > 0 and P > 2 else 0.0
        k = m - 2.0
        k *= triple
        k += pair
        k *= m - 1.0
        k += a / P
        k *= m
        k += INTERCEPT
        if d:
            k += d * (m >= P - 0.5)
        return k

    def _prior_var(self, c: _Component) -> float:
        return (INTERCEPT + c.main + (c.pair if self.P > 1 else 0.0)
                + (c.triple if self.P > 2 else 0.0) + c.nugget)

    # ------------------------------------------------------------------ fit
    def fit(self, observations: Observations) -> AccuracyModel:
        """Weigh the grid's hyper-parameters by the evidence and condition on the observations.

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
        # Every training, standardised, with its architecture and its extra variance.
        owner = np.repeat(np.arange(len(n)), n.astype(int))
        y = (np.concatenate(observations.values) - grand) / scale
        e = np.concatenate(observations.extra) / scale ** 2
        by_s2: dict[float, tuple[np.ndarray, np.ndarray, float]] = {}

        def pooled(s2: float) -> tuple[np.ndarray, np.ndarray, float]:
            """Per architecture the precision-weighted mean of its trainings and that mean's
            noise variance, and the log-likelihood of the scatter around those means (the
            product of the trainings' normals, factored as one normal per architecture)."""
            if s2 not in by_s2:
                v = s2 + e
                w = 1.0 / v
                weight = np.bincount(owner, w, len(n))
                mean = np.bincount(owner, w * y, len(n)) / weight
                rest = (-0.5 * float(np.sum(w * (y - mean[owner]) ** 2))
                        - 0.5 * float(np.sum(np.log(v))) - 0.5 * float(np.sum(np.log(weight))))
                by_s2[s2] = (mean, 1.0 / weight, rest)
            return by_s2[s2]

        m = X @ X.T
        names = tuple(GRIDS)
        fixed = set() if self.interactions else {"pair", "triple"}
        if self.P < 2:
            fixed.add("pair")
        if self.P < 3:
            fixed.add("triple")
        evidence: dict[tuple[int, ...], float] = {}

        def evaluate(at: tuple[int, ...]) -> float:
            if at not in evidence:
                a, b, t, r, share = (GRIDS[name][i] for name, i in zip(names, at))
                d, s2 = r * (1 - share), r * share
                ybar, var, rest = pooled(s2)
                C = self._from_overlap(m, a, b, t, d) + np.diag(var)
                try:
                    L = np.linalg.cholesky(C)
                except np.linalg.LinAlgError:
                    evidence[at] = -math.inf
                    return evidence[at]
                alpha = solve_triangular(L, ybar, lower=True)
                evidence[at] = (-0.5 * float(alpha @ alpha) - float(np.log(np.diag(L)).sum())
                                + rest + sum(LOG_PRIOR[name][i] for name, i in zip(GRIDS, at)
                                             if name in LOG_PRIOR))
            return evidence[at]

        # The evidence's climb over the grid: from START, move to the best neighbour (one step
        # in one hyper-parameter) while that improves it. A few dozen Cholesky factorisations
        # instead of the whole grid's thousands; every evaluated setting is a candidate for the
        # average below, and the climb evaluates every neighbour of the mode.
        best = -math.inf
        for start in dict.fromkeys(tuple(0 if name in fixed else s[name] for name in names)
                                   for s in STARTS):
            at, value = start, evaluate(start)
            while True:
                neighbours = [at[:i] + (at[i] + step,) + at[i + 1:]
                              for i, name in enumerate(names) if name not in fixed
                              for step in (-1, 1) if 0 <= at[i] + step < len(GRIDS[name])]
                top = max(neighbours, key=evaluate, default=at)
                if evaluate(top) <= value + 1e-9:
                    break
                at, value = top, evaluate(top)
            best = max(best, value)
        if not math.isfinite(best):
            raise ValueError("the accuracy model could not be fitted (no positive-definite "
                             "kernel on its grid)")
        settings = sorted(evidence, key=lambda k: -evidence[k])
        log_ev = np.array([evidence[k] for k in settings])
        weights = np.exp(log_ev - log_ev.max())
        weights /= weights.sum()
        count = int(np.searchsorted(np.cumsum(weights), MASS) + 1)
        kept = settings[:min(count, self.max_components)]
        norm = float(weights[:len(kept)].sum())
        self.log_evidence = float(log_ev[0])
        self.evaluations = len(evidence)
        self._X = X.astype(np.float32)
        eye = np.eye(len(n))
        self.components = []
        for rank, key in enumerate(kept):
            a, b, t, r, share = (GRIDS[name][i] for name, i in zip(names, key))
            d, s2 = r * (1 - share), r * share
            ybar, var, _ = pooled(s2)
            chol = cho_factor(self._from_overlap(m, a, b, t, d) + np.diag(var), lower=True)
            self.components.append(_Component(
                weight=float(weights[rank]) / norm, main=a, pair=b, triple=t, nugget=d,
                noise=s2, chol=chol, alpha=cho_solve(chol, ybar),
                inverse=cho_solve(chol, eye).astype(np.float32), lower=np.tril(chol[0])))
        self.fitted = True
        return self

    # ------------------------------------------------------------------ posterior
    @property
    def noise_sd(self) -> float:
        """The sd of one training's accuracy around its architecture's true accuracy
        (posterior mean of the noise variance over the averaged settings, as an sd)."""
        var = sum(c.weight * c.noise for c in self.components)
        return self.y_scale * math.sqrt(var)

    def _overlap(self, codes: np.ndarray) -> np.ndarray:
        return codes @ self._X.T

    def _counts(self, codes: np.ndarray, other: np.ndarray) -> np.ndarray:
        """How many parameters each of ``codes`` shares with each of ``other``, as integers
        to index :meth:`_table` with (sums of ones in float32 are exact integers)."""
        return (codes @ other.T).astype(np.uint8 if self.P < 256 else np.int32)

    def _table(self, c: _Component, dtype: Any = np.float32) -> np.ndarray:
        """The kernel of ``c`` as a function of the overlap 0..P (a lookup table)."""
        return self._from_overlap(np.arange(self.P + 1, dtype=float), c.main, c.pair,
                                  c.triple, c.nugget).astype(dtype)

    def predict(self, codes: np.ndarray, *, components: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd of the true (noise-free) accuracy of encoded architectures
        (the moments of the mixture over the averaged hyper-parameter settings; with
        ``components``, over that many most probable ones only, reweighted)."""
        kept = self.components[:components] if components else self.components
        total = sum(c.weight for c in kept)
        with _THREADS.limit(limits=1, user_api="blas"):
            # The kernel depends on two architectures only through how many parameters they
            # share (0..P): one product of one-hot codes, then a table lookup per setting.
            overlap = self._counts(codes, self._X)
            first = np.zeros(len(codes))
            second = np.zeros(len(codes))
            for c in kept:
                K = self._table(c)[overlap]
                mu = K @ c.alpha.astype(np.float32)
                # One float32 matrix product (BLAS-3) serves every candidate's variance.
                reduced = np.einsum("ij,ij->i", K @ c.inverse, K)
                var = np.maximum(self._prior_var(c) - reduced, 1e-12)
                first += c.weight / total * mu
                second += c.weight / total * (var + mu.astype(float) ** 2)
        var = np.maximum(second - first * first, 1e-12)
        return self.y_mean + self.y_scale * first, self.y_scale * np.sqrt(var)

    def joint_components(self, codes: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """``(weight, mean, cov)`` of the true accuracies (joint) under each averaged setting."""
        out = []
        with _THREADS.limit(limits=1, user_api="blas"):
            m = self._overlap(codes).astype(float)
            mm = (codes @ codes.T).astype(float)
            for c in self.components:
                K = self._from_overlap(m, c.main, c.pair, c.triple, c.nugget)
                V = solve_triangular(c.lower, K.T, lower=True, check_finite=False)
                cov = self._from_overlap(mm, c.main, c.pair, c.triple, c.nugget) - V.T @ V
                cov = 0.5 * (cov + cov.T) * self.y_scale ** 2
                out.append((c.weight, self.y_mean + self.y_scale * (K @ c.alpha), cov))
        return out

    def contrast_components(self, codes: np.ndarray, weights: np.ndarray
                            ) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """``(weight, means, variances)`` of linear combinations ``weights @ f(codes)`` of the
        true accuracies (one per row of ``weights``) under each averaged setting: what
        :meth:`joint_components` gives for ``weights @ mean`` and ``weights @ cov @ weights.T``,
        without the covariance of every pair of ``codes``."""
        out = []
        weights = np.atleast_2d(np.asarray(weights, float))
        with _THREADS.limit(limits=1, user_api="blas"):
            m, mm = self._counts(codes, self._X), self._counts(codes, codes)
            for c in self.components:
                table = self._table(c, float)
                K, prior = table[m], table[mm]
                V = solve_triangular(c.lower, K.T @ weights.T, lower=True, check_finite=False)
                var = np.sum((weights @ prior) * weights, axis=1) - np.sum(V * V, axis=0)
                out.append((c.weight, self.y_mean * weights.sum(axis=1)
                            + self.y_scale * (weights @ (K @ c.alpha)),
                            np.maximum(var, 0.0) * self.y_scale ** 2))
        return out

    def joint(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean vector and covariance matrix of the true accuracies (the mixture's
        first two moments)."""
        return mixture_moments(self.joint_components(codes))

    def summary(self) -> dict[str, float]:
        """The most probable hyper-parameters in accuracy units (what the docs and tests read);
        ``noise_sd`` is averaged over the settings the posterior keeps."""
        top = self.components[0]
        return {"noise_sd": self.noise_sd,
                "main_sd": self.y_scale * math.sqrt(top.main),
                "pair_sd": self.y_scale * math.sqrt(top.pair),
                "triple_sd": self.y_scale * math.sqrt(top.triple),
                "nugget_sd": self.y_scale * math.sqrt(top.nugget),
                "log_evidence": float(self.log_evidence),
                "settings": len(self.components), "evaluated": self.evaluations}


def mixture_moments(parts: Sequence[tuple[float, np.ndarray, np.ndarray]]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector and covariance matrix of a mixture of ``(weight, mean, cov)`` normals."""
    mean = sum(w * mu for w, mu, _ in parts)
    cov = sum(w * (c + np.outer(mu - mean, mu - mean)) for w, mu, c in parts)
    return mean, cov


def dominance_probabilities(mean: np.ndarray, cov: np.ndarray, costs: Sequence[float], *,
                            draws: int = 2000, seed: int = 0,
                            components: Sequence[tuple[float, np.ndarray, np.ndarray]] = ()
                            ) -> np.ndarray:
    """``p_front``: the probability that each point is Pareto-optimal (accuracy up, cost down).

    Monte Carlo over joint posterior draws of the accuracies (from ``components``, a mixture of
    ``(weight, mean, cov)`` as :meth:`AccuracyModel.joint_components` gives, when given; else
    from the one normal ``mean``, ``cov``); the costs are exact. A point is dominated in a draw
    when another point costs at most as much and is more accurate.
    """
    parts = list(components) or [(1.0, np.asarray(mean, float), np.asarray(cov, float))]
    n = np.asarray(parts[0][1]).size
    if n == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(draws, np.array([w for w, _, _ in parts]) / sum(
        w for w, _, _ in parts))
    samples = []
    for count, (_, mu, cv) in zip(counts, parts):
        if count:
            w, Q = np.linalg.eigh(np.asarray(cv, float))
            root = Q * np.sqrt(np.maximum(w, 0.0))
            samples.append(np.asarray(mu, float)[None, :]
                           + rng.standard_normal((int(count), n)) @ root.T)
    samples = np.concatenate(samples)
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
        more_trainings: Roughly how many more trainings would decide it
            (:func:`more_trainings`; None: decided, or more than
            :data:`MORE_TRAININGS_HORIZON` times the trainings so far).
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
#: ``more_trainings`` is given only up to this many times the trainings so far: further out, an
#: effect of a tenth of its sd would read as tens of thousands of trainings, a number that means
#: only "this budget will not tell them apart".
MORE_TRAININGS_HORIZON = 10


def more_trainings(trainings: int, effect: float, sd: float) -> int | None:
    """Roughly how many more trainings would move an undecided ``effect`` (posterior sd ``sd``
    after ``trainings``) out of its 95 % interval's reach of zero: the sd shrinking as one over
    the square root of the trainings, the effect staying where it is. Two significant figures
    (it is rough); None beyond :data:`MORE_TRAININGS_HORIZON` times ``trainings``."""
    target = abs(effect) / Z95
    if target <= 0 or sd <= 0:
        return None
    more = max(1, math.ceil(max(trainings, 1) * ((sd / target) ** 2 - 1)))
    if more > MORE_TRAININGS_HORIZON * max(trainings, 1):
        return None
    digits = max(0, len(str(more)) - 2)
    return int(round(more, -digits)) if digits else more


def mixture_interval(weights: np.ndarray, means: np.ndarray, sds: np.ndarray,
                     level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of a mixture of normals (bisection on its CDF)."""
    from scipy.special import ndtr

    sds = np.maximum(sds, 1e-12)

    def cdf(x: float) -> float:
        return float(weights @ ndtr((x - means) / sds))

    def quantile(q: float) -> float:
        lo = float(np.min(means - 9 * sds))
        hi = float(np.max(means + 9 * sds))
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
        return 0.5 * (lo + hi)

    tail = 0.5 * (1 - level)
    return quantile(tail), quantile(1 - tail)


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
        flops = np.log(np.array([float(self.flops_of(r)) for r in rows]))
        C, k = len(contexts), len(values)
        if k < 2:
            return []
        pairs: list[tuple[int, int | None]] = [(i, None) for i in range(k)]
        pairs += [(i, j) for i in range(k) for j in range(i + 1, k)]
        W = np.zeros((len(pairs), k))
        for row, (i, j) in enumerate(pairs):
            W[row, i] = 1.0
            if j is None:
                W[row, [x for x in range(k) if x != i]] = -1.0 / (k - 1)
            else:
                W[row, j] = -1.0
        # Each contrast averages over the contexts: its weight per row of ``rows``.
        W = np.repeat(W, C, axis=1) / C
        parts = self.model.contrast_components(self.model.encode(rows), W)
        share = np.array([p for p, _, _ in parts])
        # Per contrast (column), its mean and sd under each averaged setting (row).
        all_means = np.array([mu for _, mu, _ in parts])
        all_sds = np.sqrt(np.array([var for _, _, var in parts]))

        def contrast(row: int) -> tuple[float, float, float, float, float]:
            means, sds = all_means[:, row], all_sds[:, row]
            low, high = mixture_interval(share, means, sds)
            sd = math.sqrt(max(float(share @ (sds ** 2 + means ** 2)) - float(share @ means) ** 2,
                               0.0))
            return float(share @ means), sd, low, high, math.exp(float(W[row] @ flops))

        out = []
        for row, (i, j) in enumerate(pairs):
            effect, sd, low, high, ratio = contrast(row)
            decided = low > 0 or high < 0
            more = None if decided else more_trainings(self.trainings, effect, sd)
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
    parts = model.joint_components(model.encode([rows[k] for k in keys]))
    mean, cov = mixture_moments(parts)
    flops = [float(flops_of(rows[k])) for k in keys]
    p_front = dominance_probabilities(mean, cov, flops, draws=draws, components=parts)
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    estimates = {k: ArchitectureEstimate(
        key=k, number=first[k], flops=flops[i], trainings=len(accuracies[k]),
        observed=float(np.mean(accuracies[k])), mean=float(mean[i]), sd=float(sd[i]),
        p_front=float(p_front[i])) for i, k in enumerate(keys)}
    return StudyModel(space, flops_of, model, estimates, rows)
