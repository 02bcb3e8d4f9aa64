"""Multi-fidelity search: asynchronous successive halving with two-objective promotion.

``poolnas search --min-epochs m --reduction-factor η`` trains most architectures for a few
epochs only. The epochs of a study form *rungs* ``m, m·η, m·η², …`` below ``--epochs E``, and
``E`` itself is the top rung (:class:`RungSchedule`). As in ASHA (Li et al. 2020, "A System for
Massively Parallel Hyperparameter Tuning", promotion variant), a free worker never waits for a
rung to fill: it promotes an architecture when one is among the best ``1/η`` of the
architectures that finished its rung and was not promoted yet (the highest rung first), and
otherwise starts a new architecture at the lowest rung. "Best" has two objectives here, as in
MO-ASHA (Schmucker et al. 2021, "Multi-objective Asynchronous Successive Halving"): the
architectures of a rung are ordered by non-dominated rank on (accuracy at that rung, cost),
then by crowding distance (:func:`promotion_order`).

How it maps onto Optuna (which cannot prune a multi-objective trial): one Optuna trial is one
stretch of training of one architecture, from one rung to the next.

- A trial that ends below ``E`` is ``PRUNED``: it keeps ``rung``, ``epochs_trained``,
  ``rung_accuracies`` (accuracy at every rung so far), its model (weights *and* optimizer state:
  the checkpoint a promotion continues from) and an intermediate value per rung, so
  optuna-dashboard draws its curve. Only a trial trained to ``E`` is ``COMPLETE``; the front,
  the answer, ``export`` and the report read complete trials, so they never mix fidelities.
- A promotion is a trial enqueued with the architecture's parameters and ``promoted_from``
  (the trial it continues) and ``rung``. It is decided and enqueued while the worker holds the
  study lock (:class:`~poolnas.search.StudyLock`), and every trial that names a parent in
  ``promoted_from`` (waiting, running, finished or failed) uses up that parent's promotion, so
  a rung slot is never promoted twice, whatever the number of workers and machines.
- The sampler proposes new architectures only. It sees a stopped architecture's trials as
  ``FAIL`` trials (:class:`FullFidelityView`): tried, so proposed again only when nothing
  untried is left, and never an observation of accuracy at ``E``. The rung accuracies stay in
  the trials' user attrs for a model that takes the rung as an input.

What must stay true: the training a promotion continues is the one an uninterrupted
``E``-epoch training would have done (same seed, same batch order:
:class:`~poolnas.evaluators.TrainingState`); a killed or interrupted promotion is retried with
its ``promoted_from`` and ``rung`` (they are kept by a retry), so no lower rung is lost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from poolnas.search._trial_attrs import TrialAttrs
from poolnas.spaces import PoolnasError


@dataclass(frozen=True)
class RungSchedule:
    """The rungs of a multi-fidelity search.

    Args:
        min_epochs: Epochs of the lowest rung (``--min-epochs``).
        reduction_factor: η: a rung promotes its best ``1/η`` and the next rung trains ``η``
            times as many epochs (``--reduction-factor``).
        max_epochs: The top rung (``--epochs``).

    Raises:
        PoolnasError: ``min_epochs`` above ``max_epochs`` or ``reduction_factor`` below 2.
    """

    min_epochs: int
    reduction_factor: int
    max_epochs: int

    def __post_init__(self) -> None:
        for name, option in (("min_epochs", "--min-epochs"), ("max_epochs", "--epochs")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PoolnasError(f"{option} must be a positive whole number, got {value!r}")
        eta = self.reduction_factor
        if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
            raise PoolnasError(f"--reduction-factor must be a whole number of at least 2, "
                               f"got {eta!r}")
        if self.min_epochs > self.max_epochs:
            raise PoolnasError(f"--min-epochs {self.min_epochs} is above --epochs "
                               f"{self.max_epochs}; the lowest rung cannot train more than the "
                               "top one")

    @property
    def rungs(self) -> tuple[int, ...]:
        """Epochs of each rung, lowest first; the last is ``max_epochs``."""
        rungs = []
        epochs = self.min_epochs
        while epochs < self.max_epochs:
            rungs.append(epochs)
            epochs *= self.reduction_factor
        rungs.append(self.max_epochs)
        return tuple(rungs)

    @property
    def top(self) -> int:
        """The index of the top rung."""
        return len(self.rungs) - 1

    def as_setting(self) -> dict[str, int]:
        """What the study stores (a resume with another schedule is refused)."""
        return {"min_epochs": self.min_epochs, "reduction_factor": self.reduction_factor,
                "rungs": list(self.rungs)}

    @classmethod
    def of_setting(cls, setting: Mapping[str, Any] | None,
                   max_epochs: int) -> RungSchedule | None:
        """The schedule a study stored (None: a study of single-fidelity trials)."""
        if not setting:
            return None
        return cls(int(setting["min_epochs"]), int(setting["reduction_factor"]), max_epochs)


# ------------------------------------------------------------------------------ promotion rule
def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether ``a`` dominates ``b``: accuracy (first) up, cost (second) down."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def non_dominated_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Each point's non-dominated rank (0: the Pareto front), accuracy up and cost down.

    Two objectives: one sweep per front in order of accuracy (then cost), keeping the lowest
    cost seen; equal points share a rank.
    """
    ranks = [-1] * len(points)
    left = sorted(range(len(points)), key=lambda i: (-points[i][0], points[i][1]))
    rank = 0
    while left:
        rest = []
        low_cost, low_accuracy = math.inf, -math.inf
        for i in left:
            accuracy, cost = points[i]
            if cost > low_cost or (cost == low_cost and accuracy < low_accuracy):
                rest.append(i)  # an earlier point dominates it
                continue
            ranks[i] = rank
            if cost < low_cost:
                low_cost, low_accuracy = cost, accuracy
        left = rest
        rank += 1
    return ranks


def crowding_distances(points: Sequence[tuple[float, float]]) -> list[float]:
    """NSGA-II's crowding distance of each point within ``points`` (one front): the sum over
    both objectives of the normalised gap between its neighbours; the extremes get infinity."""
    n = len(points)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for objective in (0, 1):
        order = sorted(range(n), key=lambda i: points[i][objective])
        low, high = points[order[0]][objective], points[order[-1]][objective]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for before, here, after in zip(order, order[1:], order[2:]):
            distance[here] += (points[after][objective] - points[before][objective]) / (high - low)
    return distance


def promotion_order(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of ``points`` (accuracy, cost), best first: by non-dominated rank, then by
    crowding distance within a rank (larger first: the front's spread is kept), then by index
    (the earlier trial first, so the order is deterministic)."""
    ranks = non_dominated_ranks(points)
    crowding = [0.0] * len(points)
    for rank in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == rank]
        for i, d in zip(members, crowding_distances([points[i] for i in members])):
            crowding[i] = d
    return sorted(range(len(points)), key=lambda i: (ranks[i], -crowding[i], i))


def promotable(points: Sequence[tuple[float, float]], reduction_factor: int) -> list[int]:
    """The indices among the best ``⌊n/η⌋`` of ``points`` (best first): those a rung may
    promote. Fewer than η points promote nothing yet (ASHA)."""
    return promotion_order(points)[:len(points) // reduction_factor]


# ------------------------------------------------------------------------------ the study's rungs
@dataclass(frozen=True)
class RungEntry:
    """One architecture that finished a rung: the trial that trained it there."""

    number: int
    key: str
    rung: int
    accuracy: float
    cost: float


def is_rung_trial(trial: FrozenTrial) -> bool:
    """Whether ``trial`` trained an architecture to a rung (not a duplicate, not infeasible)."""
    attrs = trial.user_attrs
    return (TrialAttrs.RUNG in attrs and TrialAttrs.DUPLICATE_OF not in attrs
            and TrialAttrs.INFEASIBLE not in attrs
            and bool(attrs.get(TrialAttrs.RUNG_ACCURACIES)))


def rung_entries(trials: Sequence[FrozenTrial]) -> dict[int, list[RungEntry]]:
    """The architectures that finished each rung, by rung, in trial order."""
    rungs: dict[int, list[RungEntry]] = {}
    for t in trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED) or not is_rung_trial(t):
            continue
        rung = int(t.user_attrs[TrialAttrs.RUNG])
        accuracy = float(t.user_attrs[TrialAttrs.RUNG_ACCURACIES][-1])
        cost = float(t.user_attrs.get(TrialAttrs.LATENCY_MS, t.user_attrs.get(TrialAttrs.FLOPS, 0)))
        rungs.setdefault(rung, []).append(RungEntry(
            t.number, str(t.user_attrs.get(TrialAttrs.ARCHITECTURE)), rung, accuracy, cost))
    return rungs


def promoted_parents(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the trials already promoted: named by another trial's ``promoted_from``, in
    whatever state that trial is (waiting, running, finished or failed)."""
    return {int(t.user_attrs[TrialAttrs.PROMOTED_FROM]) for t in trials
            if TrialAttrs.PROMOTED_FROM in t.user_attrs}


def next_promotion(trials: Sequence[FrozenTrial], schedule: RungSchedule, *,
                   exhausted: bool = False) -> RungEntry | None:
    """The architecture to promote now (ASHA: the highest rung first), or None.

    Args:
        trials: The study's trials.
        schedule: Its rungs.
        exhausted: Every architecture of the space was tried, so no new one can fill the
            rungs: then, when the ``1/η`` rule promotes nothing, the best architecture not yet
            promoted at the highest rung that has one goes on (ASHA assumes an endless supply
            of new configurations; a finite space runs out, and the search still has to end
            with ``--trials`` architectures at the top rung).

    Call it while holding the study lock, and enqueue the promotion before releasing it.
    """
    rungs = rung_entries(trials)
    taken = promoted_parents(trials)
    for rung in range(schedule.top - 1, -1, -1):
        entries = rungs.get(rung, [])
        points = [(e.accuracy, e.cost) for e in entries]
        for index in promotable(points, schedule.reduction_factor):
            if entries[index].number not in taken:
                return entries[index]
    if exhausted:
        for rung in range(schedule.top - 1, -1, -1):
            entries = rungs.get(rung, [])
            for index in promotion_order([(e.accuracy, e.cost) for e in entries]):
                if entries[index].number not in taken:
                    return entries[index]
    return None


def lineage_root(trials: Sequence[FrozenTrial], number: int) -> int:
    """The first trial of the architecture's training that trial ``number`` continues."""
    by_number = {t.number: t for t in trials}
    seen = set()
    while number not in seen:
        seen.add(number)
        parent = by_number.get(number)
        if parent is None or TrialAttrs.PROMOTED_FROM not in parent.user_attrs:
            return number
        number = int(parent.user_attrs[TrialAttrs.PROMOTED_FROM])
    return number


def trained_lineage(trials: Sequence[FrozenTrial], key: str,
                    number: int) -> FrozenTrial | None:
    """A trial other than ``number`` that trains (or trained) architecture ``key`` at a rung."""
    for t in trials:
        if (t.number != number and t.user_attrs.get(TrialAttrs.ARCHITECTURE) == key
                and TrialAttrs.RUNG in t.user_attrs
                and TrialAttrs.DUPLICATE_OF not in t.user_attrs
                and t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
            return t
    return None


def epochs_spent(trials: Sequence[FrozenTrial], schedule: RungSchedule | None = None) -> int:
    """Training epochs the study's trials have spent or are spending (``--epoch-budget``).

    A rung trial counts the epochs beyond the checkpoint it continued; another trained trial
    its ``epochs`` times its trainings (``--repeats``); a duplicate, an infeasible or a failed
    trial nothing. A running trial counts what it will train, so workers do not overrun the
    budget together."""
    total = 0
    for t in trials:
        attrs = t.user_attrs
        if (TrialAttrs.DUPLICATE_OF in attrs or TrialAttrs.INFEASIBLE in attrs
                or t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
            continue
        if TrialAttrs.RUNG in attrs and schedule is not None:
            rung = int(attrs[TrialAttrs.RUNG])
            if rung > schedule.top:
                continue
            start = schedule.rungs[rung - 1] if rung > 0 else 0
            total += schedule.rungs[rung] - start
        elif TrialAttrs.EPOCHS in attrs:
            trainings = len(attrs.get(TrialAttrs.ACCURACIES) or ()) or 1
            total += int(attrs[TrialAttrs.EPOCHS]) * trainings
    return total


# ------------------------------------------------------------------------------ the sampler's view
class _StudyView:
    """A study whose trials a sampler reads with stopped architectures shown as failed."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def get_trials(self, deepcopy: bool = True,
                   states: Sequence[TrialState] | None = None) -> list[FrozenTrial]:
        shown = []
        for t in self._study.get_trials(deepcopy=deepcopy):
            if t.state == TrialState.PRUNED and TrialAttrs.RUNG in t.user_attrs:
                t = optuna.trial.FrozenTrial(
                    number=t.number, state=TrialState.FAIL, value=None, values=None,
                    datetime_start=t.datetime_start, datetime_complete=t.datetime_complete,
                    params=t.params, distributions=t.distributions, user_attrs=t.user_attrs,
                    system_attrs=t.system_attrs, intermediate_values=t.intermediate_values,
                    trial_id=t._trial_id)
            if states is None or t.state in states:
                shown.append(t)
        return shown


class FullFidelityView(optuna.samplers.BaseSampler):
    """Wraps a sampler so that it learns from full-fidelity trials only.

    The wrapped sampler sees a ``PRUNED`` rung trial (an architecture stopped below
    ``--epochs``, or waiting for its promotion) as a ``FAIL`` trial: tried, proposed again only
    when nothing untried is left (poolnas' surrogate sampler), never an observation of
    accuracy at ``--epochs``. Everything else is the wrapped sampler's.

    Args:
        sampler: The sampler that proposes new architectures.
    """

    def __init__(self, sampler: optuna.samplers.BaseSampler) -> None:
        self.inner = sampler

    def infer_relative_search_space(self, study, trial):
        return self.inner.infer_relative_search_space(_StudyView(study), trial)

    def sample_relative(self, study, trial, search_space):
        return self.inner.sample_relative(_StudyView(study), trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(_StudyView(study), trial, param_name,
                                             param_distribution)

    def before_trial(self, study, trial):
        self.inner.before_trial(_StudyView(study), trial)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(_StudyView(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
