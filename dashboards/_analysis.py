"""The answer to "pool or stride?": which op and which skip type win at each downsampling point.

Pure functions over the frozen trials of a poolnas study; nothing here touches storage. For
every downsampling point, every op and every skip type, :func:`analyse_choices` counts how
often the choice is on the Pareto front, averages the accuracy and FLOPs of the trials that used
it, and, where the study holds like-for-like pairs (two architectures that differ only in that
point's op, or only in that point's skip), the accuracy difference the choice makes with the
rest of the network held equal.

Which trials count: complete trials with two values and a readable ``architecture`` user attr,
one per architecture (a trial that reused another's results, ``duplicate_of``, is the same
architecture and is not counted twice). Trials that broke the FLOPs budget were not trained, so
their accuracy means nothing: they are counted as infeasible and left out of the means and pairs.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from optuna.trial import TrialState

from poolnas.search import (
    MORE_TRAININGS_HORIZON,
    STUDY_ATTR,
    ChoiceEffect,
    StudyModel,
    TrialAttrs,
    fit_accuracy_model,
    is_feasible,
    model_fields,
    pareto_front,
    reported_front,
)
from poolnas.spaces import OPS, SKIPS, Architecture, PoolnasError, SearchSpace

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

#: The two choices the answer table is about, in the order it shows them.
KINDS = ("op", "skip")


@dataclass(frozen=True)
class Candidate:
    """One architecture of the study, as the analysis sees it.

    Attributes:
        number: The trial that evaluated it (the first one, if it was drawn again).
        key: Its canonical key.
        architecture: The parsed key.
        accuracy: Validation accuracy (meaningless when not ``feasible``).
        flops: FLOPs.
        feasible: Whether it met the FLOPs budget (and so was trained).
        on_front: Whether it is on the Pareto front.
    """

    number: int
    key: str
    architecture: Architecture
    accuracy: float
    flops: float
    feasible: bool
    on_front: bool


@dataclass(frozen=True)
class ChoiceStat:
    """One row of the answer table: one op (or skip type) at one downsampling point.

    Attributes:
        point: The downsampling point, from 1.
        kind: ``"op"`` or ``"skip"``.
        choice: The op or skip name.
        trials: Trained (feasible) architectures that used it.
        infeasible: Architectures that used it and broke the FLOPs budget.
        on_front: Front members that use it.
        front_size: Members of the front.
        mean_accuracy: Mean accuracy of the ``trials`` (None when there are none).
        mean_flops: Mean FLOPs of the ``trials`` (None when there are none).
        pairs: Like-for-like pairs with this choice on one side and another choice of the same
            kind on the other, everything else equal.
        paired_accuracy_delta: Mean of (accuracy with this choice - accuracy with the other)
            over those pairs, as a fraction (None without pairs).
        paired_flops_ratio: Geometric mean of (FLOPs with this choice / FLOPs with the other)
            over those pairs (None without pairs).
        effect: The accuracy model's effect of this choice against the mean of the other
            choices (a fraction; over every trained architecture, only this choice changed),
            None without a model.
        effect_low: Lower end of its 95 % credible interval.
        effect_high: Upper end.
        decided: Whether that interval excludes zero.
        flops_ratio: Exact FLOPs with this choice / with the others (geometric mean over the
            same architectures).
        more_trainings: Roughly how many more trainings would decide it (None: decided, or
            more than :data:`~poolnas.search.MORE_TRAININGS_HORIZON` times the study's
            trainings: this budget's scale will not).
    """

    point: int
    kind: str
    choice: str
    trials: int
    infeasible: int
    on_front: int
    front_size: int
    mean_accuracy: float | None
    mean_flops: float | None
    pairs: int
    paired_accuracy_delta: float | None
    paired_flops_ratio: float | None
    effect: float | None = None
    effect_low: float | None = None
    effect_high: float | None = None
    decided: bool | None = None
    flops_ratio: float | None = None
    more_trainings: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The row as plain JSON values."""
        return {
            "point": self.point, "kind": self.kind, "choice": self.choice, "trials": self.trials,
            "infeasible": self.infeasible, "on_front": self.on_front,
            "front_size": self.front_size, "mean_accuracy": self.mean_accuracy,
            "mean_flops": self.mean_flops, "pairs": self.pairs,
            "paired_accuracy_delta": self.paired_accuracy_delta,
            "paired_flops_ratio": self.paired_flops_ratio,
            "effect": self.effect, "effect_low": self.effect_low,
            "effect_high": self.effect_high, "decided": self.decided,
            "flops_ratio": self.flops_ratio, "more_trainings": self.more_trainings,
        }


@dataclass(frozen=True)
class PairedComparison:
    """Two choices of one kind at one point, compared over like-for-like pairs.

    Attributes:
        point: The downsampling point, from 1.
        kind: ``"op"`` or ``"skip"``.
        choice: The first choice.
        other: The second choice.
        pairs: Pairs of trained architectures that differ only there (``choice`` vs ``other``).
        trial_pairs: The trial numbers of each pair, ``(with choice, with other)``.
        accuracy_delta: Mean accuracy with ``choice`` minus with ``other``, as a fraction.
        flops_ratio: Geometric mean of FLOPs with ``choice`` / FLOPs with ``other``.
    """

    point: int
    kind: str
    choice: str
    other: str
    pairs: int
    trial_pairs: tuple[tuple[int, int], ...]
    accuracy_delta: float
    flops_ratio: float

    def flipped(self) -> PairedComparison:
        """The same comparison seen from ``other``."""
        return PairedComparison(
            point=self.point, kind=self.kind, choice=self.other, other=self.choice,
            pairs=self.pairs, trial_pairs=tuple((b, a) for a, b in self.trial_pairs),
            accuracy_delta=-self.accuracy_delta,
            flops_ratio=1.0 / self.flops_ratio if self.flops_ratio else math.inf,
        )

    def as_dict(self) -> dict[str, Any]:
        """The comparison as plain JSON values."""
        return {
            "point": self.point, "kind": self.kind, "choice": self.choice, "other": self.other,
            "pairs": self.pairs, "trial_pairs": [list(p) for p in self.trial_pairs],
            "accuracy_delta": self.accuracy_delta, "flops_ratio": self.flops_ratio,
        }


@dataclass(frozen=True)
class ChoiceAnalysis:
    """What a study says about the choices at its downsampling points.

    Attributes:
        candidates: Every counted architecture, by trial number.
        front: The Pareto front's trial numbers, cheapest first.
        points: How many downsampling points the architectures have.
        stats: The answer table: per point, per kind, per choice.
        comparisons: Every pair of choices with like-for-like pairs.
        effects: The accuracy model's effect of each choice against the others.
        model: The accuracy model of the study (None: too few trainings).
        front_by: Per front member, why it is on the front: ``raw`` (the raw accuracies'
            front), ``model`` (the model's front only) or ``both``.
    """

    candidates: tuple[Candidate, ...]
    front: tuple[int, ...]
    points: int
    stats: tuple[ChoiceStat, ...]
    comparisons: tuple[PairedComparison, ...]
    effects: tuple[ChoiceEffect, ...] = ()
    model: StudyModel | None = None
    front_by: Mapping[int, str] = field(default_factory=dict)

    def estimate(self, key: str) -> dict[str, Any]:
        """The accuracy model's ``accuracy_mean``, ``accuracy_sd``, ``p_front`` and
        ``trainings`` of one architecture (all None without a model): the numbers of
        ``poolnas front`` and ``manifest.json``."""
        return model_fields(self.model, key)

    def stat(self, point: int, kind: str, choice: str) -> ChoiceStat:
        """The row for one choice.

        Raises:
            KeyError: The table has no such row.
        """
        for row in self.stats:
            if (row.point, row.kind, row.choice) == (point, kind, choice):
                return row
        raise KeyError((point, kind, choice))

    def rows(self, point: int, kind: str) -> list[ChoiceStat]:
        """The rows of one point and kind, in catalogue order."""
        return [r for r in self.stats if r.point == point and r.kind == kind]

    def comparison(self, point: int, kind: str, choice: str, other: str) -> PairedComparison | None:
        """The like-for-like comparison ``choice`` vs ``other`` (None when there are no pairs)."""
        for c in self.comparisons:
            if (c.point, c.kind) != (point, kind):
                continue
            if (c.choice, c.other) == (choice, other):
                return c
            if (c.choice, c.other) == (other, choice):
                return c.flipped()
        return None

    def as_dict(self) -> dict[str, Any]:
        """The analysis as plain JSON values (what ``front --explain --format json`` prints)."""
        return {
            "front": list(self.front),
            "choices": [s.as_dict() for s in self.stats],
            "comparisons": [c.as_dict() for c in self.comparisons],
            "effects": [e.as_dict() for e in self.effects if e.other is not None],
            # The front's architectures under the accuracy model (the raw accuracies stay in
            # the trials): the same numbers as `poolnas front` and manifest.json.
            "front_models": [{"trial": c.number, "architecture": c.key, "accuracy": c.accuracy,
                              "front_by": self.front_by.get(c.number), **self.estimate(c.key)}
                             for c in sorted((c for c in self.candidates if c.on_front),
                                             key=lambda c: self.front.index(c.number))],
            "summary": summarise(self),
        }


# ---------------------------------------------------------------------- building the analysis
@functools.lru_cache(maxsize=8192)
def _parse(key: str) -> Architecture | None:
    """The architecture of a key, or None; cached, since every refresh reads every trial."""
    try:
        return Architecture.from_key(key)
    except PoolnasError:
        return None


def candidates_of(trials: Iterable[FrozenTrial], *,
                  front: Iterable[int] | None = None) -> list[Candidate]:
    """The architectures of a study, one per key, each with its first complete trial.

    Args:
        trials: Frozen trials of a poolnas study, any states.
        front: The numbers of the Pareto front's trials, if the caller has them.

    Returns:
        Complete trials with two values and a readable architecture key, by trial number.
    """
    trials = list(trials)
    front = {t.number for t in pareto_front(trials)} if front is None else set(front)
    seen: set[str] = set()
    result = []
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state != TrialState.COMPLETE or not trial.values or len(trial.values) != 2:
            continue
        key = trial.user_attrs.get(TrialAttrs.ARCHITECTURE)
        if not isinstance(key, str) or key in seen:
            continue
        arch = _parse(key)
        if arch is None:
            continue
        seen.add(key)
        feasible = is_feasible(trial) and TrialAttrs.INFEASIBLE not in trial.user_attrs
        result.append(Candidate(
            number=trial.number, key=key, architecture=arch,
            # FLOPs from the trial's attrs: in a ``--cost latency`` study the second value is ms.
            accuracy=float(trial.values[0]),
            flops=float(trial.user_attrs.get(TrialAttrs.FLOPS, trial.values[1])),
            feasible=feasible, on_front=trial.number in front,
        ))
    return result


def _choice(arch: Architecture, point: int, kind: str) -> str:
    p = arch.points[point - 1]
    return p.op if kind == "op" else p.skip


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _geometric_mean(ratios: Sequence[float]) -> float:
    """The mean of ratios that treats 2× and 0.5× as opposites."""
    if any(r <= 0 or math.isinf(r) for r in ratios):
        return math.inf if any(math.isinf(r) for r in ratios) else 0.0
    return math.exp(_mean([math.log(r) for r in ratios]))


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def _vocabulary(kind: str) -> list[str]:
    return list(OPS if kind == "op" else SKIPS)


def _allowed(space: SearchSpace | None, point: int, kind: str) -> list[str]:
    if space is None or point > space.points:
        return []
    return list((space.ops if kind == "op" else space.skips)[point - 1])


def _rest(arch: Architecture, point: int, kind: str) -> tuple:
    """What must be equal for two architectures to differ only in ``kind`` at ``point``."""
    p = arch.points[point - 1]
    masked = (p.skip, p.merge, p.width, p.blocks) if kind == "op" else (p.op, p.width, p.blocks)
    others = tuple(q for i, q in enumerate(arch.points, start=1) if i != point)
    return arch.stem, arch.width, arch.blocks, len(arch.points), masked, others


def _differ_only_in_skip(a: Architecture, b: Architecture, point: int) -> bool:
    """Whether ``a`` and ``b`` differ only in the skip type at ``point``.

    The merge belongs to the shortcut: a point without one has none, so it pairs with a point
    with a shortcut merged either way; two points with shortcuts must merge the same way.
    """
    p, q = a.points[point - 1], b.points[point - 1]
    if p.skip == q.skip:
        return False
    return p.merge == q.merge or not p.residual or not q.residual


def _pairs(candidates: Sequence[Candidate], point: int, kind: str
           ) -> list[tuple[Candidate, Candidate]]:
    """Like-for-like pairs at one point, each ``(a, b)`` with ``a`` first in trial order."""
    groups: dict[tuple, list[Candidate]] = defaultdict(list)
    for c in candidates:
        if c.feasible and len(c.architecture.points) >= point:
            groups[_rest(c.architecture, point, kind)].append(c)
    pairs = []
    for members in groups.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if kind == "op" or _differ_only_in_skip(a.architecture, b.architecture, point):
                    pairs.append((a, b))
    return pairs


def analyse_choices(trials: Iterable[FrozenTrial], *,
                    space: SearchSpace | None = None,
                    model: StudyModel | None = None) -> ChoiceAnalysis:
    """The answer table of a study: per point, op and skip type, what it does to the front.

    Args:
        trials: Frozen trials of a poolnas study, e.g. ``study.get_trials(deepcopy=False)``.
        space: The study's search space. Its choices are listed even when no trial used them
            (with zero counts); without it, only the choices the trials used are listed.
        model: The study's accuracy model (:func:`~poolnas.search.fit_accuracy_model`): the
            effects with credible intervals come from it.

    Returns:
        The analysis; its :attr:`~ChoiceAnalysis.stats` are in catalogue order per point.
    """
    trials = list(trials)
    # The front poolnas reports: the raw front and the model's members it misses.
    reported = reported_front(trials, model)
    front = tuple(t.number for t, _ in reported)
    candidates = candidates_of(trials, front=front)
    front_set = set(front)
    points = max((len(c.architecture.points) for c in candidates),
                 default=space.points if space is not None else 0)
    stats: list[ChoiceStat] = []
    comparisons: list[PairedComparison] = []
    effects: list[ChoiceEffect] = []
    for point in range(1, points + 1):
        for kind in KINDS:
            modelled = model.effects(point, kind) if model is not None else []
            effects.extend(modelled)
            versus_rest = {e.choice: e for e in modelled if e.other is None}
            using = [c for c in candidates if len(c.architecture.points) >= point]
            used = {_choice(c.architecture, point, kind) for c in using}
            allowed = set(_allowed(space, point, kind)) | used
            pairs = _pairs(using, point, kind)
            by_choice: dict[str, list[tuple[float, float]]] = defaultdict(list)
            by_couple: dict[tuple[str, str], list[tuple[Candidate, Candidate]]] = defaultdict(list)
            for a, b in pairs:
                ca, cb = _choice(a.architecture, point, kind), _choice(b.architecture, point, kind)
                by_choice[ca].append((a.accuracy - b.accuracy, _ratio(a.flops, b.flops)))
                by_choice[cb].append((b.accuracy - a.accuracy, _ratio(b.flops, a.flops)))
                order = _vocabulary(kind)
                if order.index(ca) > order.index(cb):
                    a, b, ca, cb = b, a, cb, ca
                by_couple[(ca, cb)].append((a, b))
            for choice in [c for c in _vocabulary(kind) if c in allowed]:
                mine = [c for c in using if _choice(c.architecture, point, kind) == choice]
                trained = [c for c in mine if c.feasible]
                paired = by_choice.get(choice, [])
                e = versus_rest.get(choice)
                stats.append(ChoiceStat(
                    effect=None if e is None else e.effect,
                    effect_low=None if e is None else e.low,
                    effect_high=None if e is None else e.high,
                    decided=None if e is None else e.decided,
                    flops_ratio=None if e is None else e.flops_ratio,
                    more_trainings=None if e is None else e.more_trainings,
                    point=point, kind=kind, choice=choice,
                    trials=len(trained),
                    infeasible=len(mine) - len(trained),
                    on_front=sum(c.number in front_set for c in mine),
                    front_size=len(front),
                    mean_accuracy=_mean([c.accuracy for c in trained]) if trained else None,
                    mean_flops=_mean([c.flops for c in trained]) if trained else None,
                    pairs=len(paired),
                    paired_accuracy_delta=_mean([d for d, _ in paired]) if paired else None,
                    paired_flops_ratio=_geometric_mean([r for _, r in paired]) if paired else None,
                ))
            for (ca, cb), couple in sorted(by_couple.items(), key=lambda item: (
                    _vocabulary(kind).index(item[0][0]), _vocabulary(kind).index(item[0][1]))):
                comparisons.append(PairedComparison(
                    point=point, kind=kind, choice=ca, other=cb, pairs=len(couple),
                    trial_pairs=tuple((a.number, b.number) for a, b in couple),
                    accuracy_delta=_mean([a.accuracy - b.accuracy for a, b in couple]),
                    flops_ratio=_geometric_mean([_ratio(a.flops, b.flops) for a, b in couple]),
                ))
    return ChoiceAnalysis(candidates=tuple(candidates), front=front, points=points,
                          stats=tuple(stats), comparisons=tuple(comparisons),
                          effects=tuple(effects), model=model,
                          front_by={t.number: on for t, on in reported})


def study_space(study: optuna.Study) -> SearchSpace | None:
    """The search space a poolnas study recorded (user attr ``poolnas``), or None."""
    settings = study.user_attrs.get(STUDY_ATTR) or {}
    try:
        return SearchSpace.from_dict(settings["space"]) if "space" in settings else None
    except PoolnasError:
        return None


def analyse_study(study: optuna.Study,
                  trials: Sequence[FrozenTrial] | None = None, *,
                  model: StudyModel | None = None) -> ChoiceAnalysis:
    """:func:`analyse_choices` of a study's trials, with the space it recorded and its
    accuracy model.

    Args:
        study: A poolnas study.
        trials: Its trials, if the caller already has them.
        model: Its accuracy model, if the caller already has it (default: fitted here).
    """
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    if model is None:
        model = fit_accuracy_model(study, trials)
    return analyse_choices(trials, space=study_space(study), model=model)


# ---------------------------------------------------------------------- words and text
def _pp(delta: float) -> str:
    return f"{delta * 100:+.1f} pp"


def pp_bound(value: float, *, sign: bool = True) -> str:
    """An interval's end in percentage points: one decimal, or two where one would print a
    non-zero end as 0.0 (a decided interval "[+0.0, +4.6]" reads as if it touched zero)."""
    points = value * 100
    digits = 1
    while digits < 3 and points != 0 and round(points, digits) == 0:
        digits += 1
    return f"{points:{'+' if sign else ''}.{digits}f}"


def _times(ratio: float) -> str:
    return f"{ratio:.3g}×" if ratio < 100 else f"{ratio:.0f}×"


def _flops_phrase(ratio: float) -> str:
    return "the same FLOPs" if round(ratio, 2) == 1.0 else f"{_times(ratio)} the FLOPs"


#: How the sentences of :func:`summarise` name each choice (the tables use the key names):
#: the catalogue entries' labels.
LABELS = {name: entry.label for entries in (OPS, SKIPS) for name, entry in entries.items()}


def label(choice: str) -> str:
    """The words for an op or skip type in a sentence (``conv`` → ``stride-2 conv``)."""
    return LABELS.get(choice, choice)


def flops_text(flops: float | None) -> str:
    """FLOPs for people: ``2.05 M``, ``310 K``; ``-`` for None."""
    if flops is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(flops) >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.0f}"


def _winner(rows: Sequence[ChoiceStat]) -> ChoiceStat | None:
    """The choice most often on the front (then: best mean accuracy, then: most trials)."""
    tried = [r for r in rows if r.trials]
    if not tried:
        return None
    return max(tried, key=lambda r: (r.on_front, r.mean_accuracy or 0.0, r.trials))


def _point_sentence(analysis: ChoiceAnalysis, point: int, kind: str) -> str | None:
    rows = analysis.rows(point, kind)
    best = _winner(rows)
    if best is None:
        return None
    name = label(best.choice)
    n = len(analysis.front)
    if best.on_front:
        head = f"at point {point}, {name} is on {best.on_front} of {n} front members"
    else:
        head = (f"at point {point}, no {kind} is on the front; {name} has the best mean "
                f"accuracy ({best.mean_accuracy:.4f})")
    clauses = []
    for row in rows:
        if row.choice == best.choice:
            continue
        c = analysis.comparison(point, kind, row.choice, best.choice)
        if c is not None:
            clauses.append(f"{label(row.choice)} costs {_flops_phrase(c.flops_ratio)} for "
                           f"{_pp(c.accuracy_delta)} ({c.pairs} like-for-like "
                           f"pair{'s' if c.pairs != 1 else ''})")
    if clauses:
        return f"{head}; " + "; ".join(clauses)
    others = [r for r in rows if r.choice != best.choice and r.trials]
    if not others or best.mean_accuracy is None or best.mean_flops is None:
        return f"{head} (no other {kind} trained yet)"
    runner = max(others, key=lambda r: (r.on_front, r.mean_accuracy or 0.0, r.trials))
    return (f"{head}; no like-for-like pairs yet: {label(runner.choice)} averages "
            f"{_pp((runner.mean_accuracy or 0.0) - best.mean_accuracy)} at "
            f"{_flops_phrase(_ratio(runner.mean_flops or 0.0, best.mean_flops))} "
            f"({runner.trials} vs {best.trials} trials)")


def _interval(e: ChoiceEffect) -> str:
    return (f"{e.effect * 100:.1f} pp [{pp_bound(e.low, sign=False)}, "
            f"{pp_bound(e.high, sign=False)}]")


def _model_sentences(point: int, kind: str, pairs: Sequence[ChoiceEffect]) -> list[str]:
    """The model's verdict for one point and kind: a winner only where the 95 % interval
    excludes zero, else that the budget cannot tell them apart (and how many trainings might)."""
    lines = []
    for e in pairs:
        if not e.decided:
            continue
        win, lose, sign = (e.choice, e.other, 1) if e.effect > 0 else (e.other, e.choice, -1)
        ratio = e.flops_ratio if sign > 0 else 1.0 / e.flops_ratio
        lines.append(f"at point {point}, {label(win)} beats {label(lose or '')} by "
                     f"{abs(e.effect) * 100:.1f} pp "
                     f"[{pp_bound(min(sign * e.low, sign * e.high), sign=False)}, "
                     f"{pp_bound(max(sign * e.low, sign * e.high), sign=False)}], "
                     f"{_flops_phrase(ratio)}")
    open_ = [e for e in pairs if not e.decided]
    if open_:
        names = ", ".join(f"{label(e.choice)} vs {label(e.other or '')} {_interval(e)}"
                          for e in open_)
        more = [e.more_trainings for e in open_ if e.more_trainings is not None]
        hint = (f"; roughly {min(more)} more trainings might decide the closest"
                if more else f"; the effects are too close to zero for even "
                f"{MORE_TRAININGS_HORIZON}× this study's trainings to decide them")
        lines.append(f"at point {point}, the budget cannot tell these {kind}s apart: "
                     f"{names}{hint}")
    return lines


def summarise(analysis: ChoiceAnalysis) -> list[str]:
    """The conclusion in words, one sentence per point and kind.

    Example: ``at point 1, max-pool is on 4 of 5 front members; stride-2 conv costs 2.1× the
    FLOPs for +0.3 pp (3 like-for-like pairs)``: the choice most often on the front, then each
    other choice against it over like-for-like pairs (or, without pairs, the means of their
    trials). Accuracy differences are in percentage points (pp).
    """
    if not analysis.front:
        return ["no complete feasible trial yet: nothing to conclude"]
    lines = []
    for point in range(1, analysis.points + 1):
        for kind in KINDS:
            pairs = [e for e in analysis.effects
                     if e.point == point and e.kind == kind and e.other is not None]
            if pairs:
                lines.extend(_model_sentences(point, kind, pairs))
                continue
            sentence = _point_sentence(analysis, point, kind)
            if sentence is not None:
                lines.append(sentence)
    return lines


ANSWER_COLUMNS = (
    ("point", "point"), ("kind", "kind"), ("choice", "choice"), ("front", "on front"),
    ("trials", "trials"), ("accuracy", "mean acc"), ("flops", "mean FLOPs"),
    ("effect", "effect vs rest [95% CI]"), ("ratio", "FLOPs vs rest"), ("decided", "decided"),
)


def answer_rows(analysis: ChoiceAnalysis) -> list[dict[str, str]]:
    """The answer table as rows of display strings (keys: :data:`ANSWER_COLUMNS`)."""
    rows = []
    for s in analysis.stats:
        infeasible = f" (+{s.infeasible} over budget)" if s.infeasible else ""
        rows.append({
            "point": str(s.point), "kind": s.kind, "choice": s.choice,
            "front": f"{s.on_front}/{s.front_size}",
            "trials": f"{s.trials}{infeasible}",
            "accuracy": "-" if s.mean_accuracy is None else f"{s.mean_accuracy:.4f}",
            "flops": flops_text(s.mean_flops),
            "effect": "-" if s.effect is None else (
                f"{_pp(s.effect)} [{pp_bound(s.effect_low)}, {pp_bound(s.effect_high)}]"),
            "ratio": "-" if s.flops_ratio is None else _times(s.flops_ratio),
            "decided": "-" if s.decided is None else ("yes" if s.decided else "no"),
            # The raw like-for-like pairs, kept beside the model's numbers.
            "delta": "-" if s.paired_accuracy_delta is None else _pp(s.paired_accuracy_delta),
            "pairs": str(s.pairs),
        })
    return rows


def answer_text(analysis: ChoiceAnalysis) -> str:
    """The answer table and the summary as plain text, for the terminal."""
    rows = answer_rows(analysis)
    header = [h for _, h in ANSWER_COLUMNS]
    cells = [header] + [[r[k] for k, _ in ANSWER_COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = ("effect vs rest: the accuracy model's difference to the mean of the other choices, "
             "over every trained architecture with only this choice changed, with its 95% "
             "credible interval; decided: the interval excludes zero; FLOPs vs rest: the exact "
             "FLOPs ratio over the same architectures")
    return "\n".join([*lines, "", notes, "", *summarise(analysis)])
