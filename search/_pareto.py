"""The Pareto front of a poolnas study and its hypervolume.

A poolnas study has two objectives: objective 0 is validation accuracy (maximized) and
objective 1 is FLOPs (minimized). The functions here are pure: they read frozen trials or plain
``(accuracy, flops)`` pairs and never touch storage, so the study runner, the ``front`` command
and the snapshot history all agree on what "the front" and "its hypervolume" mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from optuna.trial import TrialState

from poolnas.search._trial_attrs import TrialAttrs
from poolnas.spaces import PoolnasError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

#: Where Optuna keeps constraint values in ``trial.system_attrs``: ``"constraints"`` holds a list
#: (what ``constraints_func`` of the samplers writes), ``"constraints:<name>"`` one value each
#: (what ``trial.set_constraint(name, value)`` writes in Optuna 5).
CONSTRAINTS_KEY = "constraints"


def constraint_values(trial: FrozenTrial) -> list[float]:
    """All constraint values of a trial, in either of Optuna's two storage formats."""
    values: list[float] = []
    for key, value in trial.system_attrs.items():
        if key == CONSTRAINTS_KEY and value is not None:
            values.extend(float(v) for v in value)
        elif key.startswith(CONSTRAINTS_KEY + ":"):
            values.append(float(value))
    return values


def is_feasible(trial: FrozenTrial) -> bool:
    """Whether a trial satisfies its constraints.

    Optuna stores constraint values in ``trial.system_attrs``: as a list under
    ``"constraints"`` (``constraints_func`` of its samplers) or one per key under
    ``"constraints:<name>"`` (``trial.set_constraint``). A trial is feasible when every value is
    ``<= 0``; a trial without constraints is feasible.

    Args:
        trial: A trial of any state.

    Returns:
        ``True`` when the trial has no constraints or all of them are satisfied.
    """
    return all(value <= 0 for value in constraint_values(trial))


def pareto_front(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The non-dominated complete, feasible trials of an (accuracy, flops) study.

    A trial dominates another when its accuracy is at least as high, its FLOPs at most as high,
    and one of the two strictly better. Trials that are not ``COMPLETE``, have no two values,
    or violate a constraint (see :func:`is_feasible`) are ignored. When several trials have
    exactly the same values (an architecture evaluated twice), only the one with the smallest
    trial number is kept.

    The sweep sorts once, so the cost is O(n log n).

    Args:
        trials: Frozen trials of a two-objective study, e.g. ``study.get_trials(deepcopy=False)``.

    Returns:
        The front, sorted by FLOPs ascending (and so by accuracy ascending).
    """
    candidates = [
        trial
        for trial in trials
        if trial.state == TrialState.COMPLETE
        and trial.values is not None
        and len(trial.values) == 2
        and is_feasible(trial)
    ]
    # Cheapest first; among equal FLOPs the most accurate first; among equal values the oldest.
    candidates.sort(key=lambda t: (t.values[1], -t.values[0], t.number))
    front: list[FrozenTrial] = []
    best_accuracy = -math.inf
    for trial in candidates:
        accuracy = trial.values[0]
        if accuracy > best_accuracy:
            front.append(trial)
            best_accuracy = accuracy
    return front


def front_by_text(on: str) -> str:
    """How a :func:`reported_front` place is written for people: ``raw``, ``model`` or
    ``raw+model``."""
    return "raw+model" if on == "both" else on


def reported_front(trials: Sequence[FrozenTrial], model: Any = None
                   ) -> list[tuple[FrozenTrial, str]]:
    """What poolnas shows as the front: the raw front (:func:`pareto_front`, each trial's own
    measurement) and, with the study's accuracy model
    (:func:`~poolnas.search.fit_accuracy_model`), the architectures on the model's front
    (by posterior mean) that the raw front misses, as their first trained trial.

    A lucky seed can put an architecture on the raw front and keep a better one off it; the
    model's front is what the data say once the noise is accounted for. Each trial comes with
    where it is on the front: ``"both"``, ``"raw"`` or ``"model"``.

    Returns:
        ``(trial, on)`` pairs, by FLOPs ascending (then accuracy descending).
    """
    raw = pareto_front(trials)
    model_front = [] if model is None else model.front()
    on_model = {e.key for e in model_front}
    out, shown = [], set()
    for trial in raw:
        key = trial.user_attrs.get(TrialAttrs.ARCHITECTURE)
        out.append((trial, "both" if key in on_model else "raw"))
        shown.add(key)
    by_number = {t.number: t for t in trials}
    for estimate in model_front:
        trial = by_number.get(estimate.number)
        if estimate.key not in shown and trial is not None:
            out.append((trial, "model"))
    out.sort(key=lambda pair: (pair[0].values[1], -pair[0].values[0], pair[0].number))
    return out


def hypervolume(points: Iterable[Sequence[float]], *, reference_flops: float) -> float:
    """The normalised 2-D hypervolume of ``(accuracy, flops)`` points.

    Convention: each point is mapped into the unit square as
    ``x = accuracy`` and ``y = 1 - flops / reference_flops``, both clipped to ``[0, 1]``, so that
    both coordinates are to be maximized. The reference point is ``(0, 0)`` in that space:
    accuracy 0 and ``flops == reference_flops``. The hypervolume is the area of the union of the
    rectangles ``[0, x] × [0, y]``, a number in ``[0, 1]``; 1 would be a perfect model costing
    nothing. Points at or beyond ``reference_flops`` add nothing; dominated points add nothing.
    Points with a non-finite coordinate after clipping (NaN) are ignored.

    Computed exactly by one sweep over the points sorted by accuracy, O(n log n).

    Args:
        points: ``(accuracy, flops)`` pairs, e.g. ``trial.values`` of the front.
        reference_flops: The FLOPs that count as "worth nothing"; must be positive. Use the same
            value for every hypervolume you want to compare (the snapshots store it).

    Returns:
        The dominated area, in ``[0, 1]``.

    Raises:
        PoolnasError: If ``reference_flops`` is not a positive finite number.
    """
    if not (isinstance(reference_flops, (int, float)) and 0 < reference_flops < math.inf):
        raise PoolnasError(
            f"hypervolume: reference_flops must be a positive number, got {reference_flops!r}"
        )
    mapped: list[tuple[float, float]] = []
    for accuracy, flops in points:
        x = min(max(float(accuracy), 0.0), 1.0)
        y = min(max(1.0 - float(flops) / reference_flops, 0.0), 1.0)
        if math.isnan(x) or math.isnan(y):
            continue
        if x > 0.0 and y > 0.0:
            mapped.append((x, y))
    # Most accurate first: the first point to reach a height covers it furthest to the right.
    mapped.sort(reverse=True)
    area = 0.0
    covered_height = 0.0
    for x, y in mapped:
        if y > covered_height:
            area += x * (y - covered_height)
            covered_height = y
    return min(area, 1.0)


def rank_by_fronts(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of ``points`` best first: NSGA-II's order for any number of objectives.

    The first Pareto front comes first, then the front of what remains, and so on
    (non-dominated sorting); within a front, points with the larger crowding distance come
    first (the ends of a front, whose distance is infinite, before its inside), then the better
    first objective, then the lower index. With one objective this is sorting by it.

    Args:
        points: One objective vector per candidate.
        directions: ``"max"`` or ``"min"`` (or ``"maximize"``/``"minimize"``) per objective.

    Returns:
        A permutation of ``range(len(points))``.
    """
    signs = [-1.0 if str(d).lower().startswith("max") else 1.0 for d in directions]
    # Minimized copies: a dominates b when no worse in all objectives and better in one.
    costs = [[s * float(v) for s, v in zip(signs, p, strict=True)] for p in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    remaining = list(range(len(costs)))
    order: list[int] = []
    while remaining:
        front = [i for i in remaining
                 if not any(dominates(costs[j], costs[i]) for j in remaining if j != i)]
        crowding = _crowding_distance([costs[i] for i in front])
        front_order = sorted(range(len(front)),
                             key=lambda k: (-crowding[k], costs[front[k]][0], front[k]))
        order.extend(front[k] for k in front_order)
        chosen = set(front)
        remaining = [i for i in remaining if i not in chosen]
    return order


def _crowding_distance(costs: list[list[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point of one front (ends: infinity)."""
    n = len(costs)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for m in range(len(costs[0])):
        order = sorted(range(n), key=lambda i: costs[i][m])
        low, high = costs[order[0]][m], costs[order[-1]][m]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for k in range(1, n - 1):
            distance[order[k]] += (costs[order[k + 1]][m] - costs[order[k - 1]][m]) / (high - low)
    return distance
