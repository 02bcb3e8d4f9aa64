"""What optuna-dashboard shows for a poolnas study, written by the search as it runs.

Per trial: a note (the architecture in words and a table of its downsampling points, each with
its op, skip, merge, width and FLOPs) and a PNG block diagram as an artifact, which the
dashboard previews beside the trained ``.keras`` model. Per study: a Plotly figure of which op
and skip type the Pareto front uses at each point, refreshed after every completed trial.

Annotation is a courtesy: every function here logs a warning and returns ``False`` instead of
raising, so a failure to draw or store a picture never fails a trial.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna

from poolnas.dashboards._analysis import (
    KINDS,
    ChoiceAnalysis,
    analyse_study,
    flops_text,
    pp_bound,
)
from poolnas.dashboards._diagram import architecture_png
from poolnas.evaluators import point_costs
from poolnas.search import TrialAttrs, TrialEvent, TrialHooks

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

    from poolnas.evaluators import PointCost
    from poolnas.spaces import Architecture

logger = logging.getLogger("poolnas.dashboards")

#: The id of the study figure in optuna-dashboard; saving it again replaces it.
CHOICES_FIGURE_ID = "poolnas-choices"


def trial_note(arch: Architecture, costs: Sequence[PointCost] | None = None, *,
               remark: str | None = None, latency_ms: float | None = None) -> str:
    """The Markdown note of one trial: the key, the architecture in words, a table of points.

    Args:
        arch: The trial's architecture.
        costs: :func:`poolnas.evaluators.point_costs` of it (stem, each point, head); without
            them the table has no FLOPs column.
        remark: A line to put under the heading (e.g. why the trial was not trained).
        latency_ms: The predicted latency of a ``--cost latency`` study, shown beside FLOPs.

    Returns:
        Markdown.
    """
    lines = [f"### `{arch.key}`", ""]
    if remark:
        lines += [remark, ""]
    lines += [f"- {line}" for line in arch.describe().splitlines()]
    by_part = {c.part: c for c in costs} if costs else {}
    flops = "| FLOPs |" if by_part else "|"
    lines += ["", f"| point | op | skip | merge | width × blocks {flops}",
              "|---|---|---|---|---" + ("|---:|" if by_part else "|")]

    def cell(part: str) -> str:
        return f" {flops_text(by_part[part].cost.flops)} |" if part in by_part else ""

    lines.append(f"| stem | {arch.stem} | | | {arch.width} × {arch.blocks} |{cell('stem')}")
    for index, p in enumerate(arch.points, start=1):
        merge = p.merge if p.residual else ""
        lines.append(f"| {index} | {p.op} | {p.skip} | {merge} | {p.width} × {p.blocks} |"
                     f"{cell(f'point {index}')}")
    if by_part:
        total = sum(c.cost.flops for c in by_part.values())
        lines.append(f"| head | avg pool, dense | | | |{cell('head')}")
        lines.append(f"| **total** | | | | | **{flops_text(total)}** |")
    if latency_ms is not None:
        lines += ["", f"Predicted latency: **{latency_ms:.4f} ms** (the study's calibrated "
                  "kernel table; the cost objective of this study)"]
    return "\n".join(lines) + "\n"


def annotate_trial(trial: optuna.Trial, arch: Architecture, *,
                   input_shape: Sequence[int], num_classes: int,
                   artifact_store: ArtifactStore | None = None,
                   remark: str | None = None, model: Any = None) -> bool:
    """Give a running trial its dashboard note and, with a store, its architecture picture.

    The note holds :meth:`~poolnas.spaces.Architecture.describe` and a table of the points with
    the FLOPs of each (:func:`poolnas.evaluators.point_costs`, ``compare=False``). The picture
    (:func:`architecture_png`) is uploaded as ``architecture-trialNNNNN.png`` and its artifact id
    kept in the trial's user attr ``diagram_artifact``.

    Args:
        trial: The running trial (not yet told its values).
        arch: Its architecture.
        input_shape: ``(H, W, C)`` of the study's images.
        num_classes: Classes of the study's data.
        artifact_store: Where the picture goes; None: note only.
        remark: An extra line for the note.
        model: ``arch``'s Keras model if the caller has one (trained or not): its layers give
            the FLOPs per point, so nothing is rebuilt.

    Returns:
        Whether everything was stored. Failures are logged as warnings, never raised.
    """
    ok = True
    costs = None
    try:
        costs = point_costs(arch, tuple(input_shape), num_classes, compare=False, model=model)
    except Exception as error:  # the note is still worth having without FLOPs
        ok = _warn(f"trial {trial.number}: cannot count FLOPs per point", error)
    try:
        from optuna_dashboard import save_note

        latency = trial.user_attrs.get(TrialAttrs.LATENCY_MS)
        save_note(trial, trial_note(arch, costs, remark=remark, latency_ms=latency))
    except Exception as error:
        ok = _warn(f"trial {trial.number}: cannot save the dashboard note", error)
    if artifact_store is None:
        return ok
    try:
        point_flops = [c.cost.flops for c in costs if c.part.startswith("point ")] if costs \
            else None
        png = architecture_png(arch, input_shape=input_shape, num_classes=num_classes,
                               point_flops=point_flops)
        artifact_id = _upload(trial, artifact_store, png,
                              f"architecture-trial{trial.number:05d}.png", "image/png")
        trial.set_user_attr(TrialAttrs.DIAGRAM_ARTIFACT, artifact_id)
    except Exception as error:
        ok = _warn(f"trial {trial.number}: cannot store the architecture picture", error)
    return ok


def annotate(event: TrialEvent) -> bool:
    """:func:`annotate_trial` as a search hook (``TrialHooks(on_trial=(annotate,))``)."""
    return annotate_trial(event.trial, event.arch, input_shape=event.input_shape,
                          num_classes=event.num_classes, artifact_store=event.artifact_store,
                          remark=event.remark, model=event.model)


def _upload(trial: optuna.Trial, store: ArtifactStore, body: bytes, name: str,
            mimetype: str) -> str:
    with tempfile.TemporaryDirectory(prefix="poolnas-") as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as handle:
            handle.write(body)
        return optuna.artifacts.upload_artifact(artifact_store=store, file_path=path,
                                                study_or_trial=trial, mimetype=mimetype)


def _warn(what: str, error: BaseException) -> bool:
    logger.warning("poolnas: warning: %s (%s: %s); the search goes on", what,
                   type(error).__name__, error)
    return False


# ---------------------------------------------------------------------- the study figure
def choices_figure(analysis: ChoiceAnalysis) -> Any:
    """A Plotly figure of the answer table: per point (columns) and kind (rows), how many front
    members use each choice; hovering a bar shows its trials, mean accuracy and FLOPs, the
    paired accuracy difference and the accuracy model's effect with its 95 % interval (the
    numbers of ``front --explain`` and report.html).

    Returns:
        A ``plotly.graph_objects.Figure`` of plain lists (small, and any plotly.js draws it).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    points = max(analysis.points, 1)
    titles = [f"point {p}: {kind}" for kind in KINDS for p in range(1, points + 1)]
    figure = make_subplots(rows=len(KINDS), cols=points, subplot_titles=titles,
                           vertical_spacing=0.22, horizontal_spacing=0.06)
    colours = {"op": "#3182bd", "skip": "#756bb1"}
    for row, kind in enumerate(KINDS, start=1):
        for point in range(1, analysis.points + 1):
            stats = analysis.rows(point, kind)
            hover = []
            for s in stats:
                accuracy = "-" if s.mean_accuracy is None else f"{s.mean_accuracy:.4f}"
                flops = "-" if s.mean_flops is None else flops_text(int(s.mean_flops))
                paired = ("no like-for-like pairs" if s.paired_accuracy_delta is None else
                          f"paired Δacc {s.paired_accuracy_delta * 100:+.2f} pp, FLOPs "
                          f"×{s.paired_flops_ratio:.2f} ({s.pairs} pairs)")
                model = ("" if s.effect is None else
                         f"<br>effect vs rest {s.effect * 100:+.1f} pp "
                         f"[{pp_bound(s.effect_low)}, {pp_bound(s.effect_high)}] (95%), "
                         + ("decided" if s.decided else "not decided"))
                hover.append(f"{s.choice}: {s.on_front}/{s.front_size} on the front<br>"
                             f"{s.trials} trials, mean acc {accuracy}, mean FLOPs {flops}<br>"
                             f"{paired}{model}")
            figure.add_trace(go.Bar(
                x=[s.choice for s in stats], y=[s.on_front for s in stats],
                text=[f"{s.on_front}/{s.front_size}" for s in stats], textposition="auto",
                hovertext=hover, hoverinfo="text", marker={"color": colours[kind]},
                showlegend=False, name=f"point {point} {kind}",
            ), row=row, col=point)
    figure.update_yaxes(rangemode="tozero", dtick=1)
    figure.update_layout(
        template="none", height=460, margin={"l": 40, "r": 10, "t": 70, "b": 40},
        title={"text": f"Which op and skip type the Pareto front uses "
                       f"({len(analysis.front)} members)", "font": {"size": 14}},
        font={"size": 10},
    )
    return figure


def refresh_study_figures(study: optuna.Study,
                          trials: Sequence[optuna.trial.FrozenTrial] | None = None) -> bool:
    """Replace the study's op-choice figure in optuna-dashboard with one of its current trials.

    Cheap enough for every completed trial: one pass over the trials and a few small writes.

    Args:
        study: The study (its storage is written).
        trials: Its trials, if the caller already has them.

    Returns:
        Whether the figure was stored. Failures are logged as warnings, never raised.
    """
    try:
        from optuna_dashboard import save_plotly_graph_object

        figure = choices_figure(analyse_study(study, trials))
        save_plotly_graph_object(study, figure, graph_object_id=CHOICES_FIGURE_ID)
        return True
    except Exception as error:
        return _warn(f"study {study.study_name!r}: cannot refresh the dashboard figure", error)


#: What the search runs after each trial for optuna-dashboard: the trial's note and picture,
#: the study's op-choice figure. The CLI passes these to every runner it makes.
DASHBOARD_HOOKS = TrialHooks(on_trial=(annotate,), on_front=(refresh_study_figures,))
