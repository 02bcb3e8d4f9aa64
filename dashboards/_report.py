"""A static report of a study: one HTML file with its figures embedded, and the figures as PNGs.

``report.html`` opens in any browser without a server or network: the answer in words, the
Pareto front (accuracy against FLOPs, points labelled by trial number, keys in a table), the
answer table (per point, op and skip type) with its like-for-like comparisons, the hypervolume
over the search (from poolnas' snapshot tables), a picture of each front member, and every
trial. Beside it: ``pareto_front.png``, ``hypervolume.png``, ``choices.png`` and
``answer.json`` (the answer table as data).

Like ``export``, a report never overwrites a file silently: if any of its files exists in the
output folder, nothing is written unless ``overwrite`` is passed.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poolnas.dashboards._analysis import (
    ANSWER_COLUMNS,
    KINDS,
    ChoiceAnalysis,
    analyse_study,
    answer_rows,
    flops_text,
    summarise,
)
from poolnas.dashboards._diagram import architecture_png
from poolnas.search import STUDY_ATTR, TrialAttrs, front_by_text, write_file_atomically
from poolnas.spaces import Architecture, PoolnasError

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from poolnas.search import Snapshot, StorageHandle

REPORT = "report.html"
PARETO_FIGURE = "pareto_front.png"
HYPERVOLUME_FIGURE = "hypervolume.png"
CHOICES_FIGURE = "choices.png"
ANSWER = "answer.json"
#: Every file a report writes, in the order it writes them (the HTML last).
REPORT_FILES = (PARETO_FIGURE, HYPERVOLUME_FIGURE, CHOICES_FIGURE, ANSWER, REPORT)
#: Above this many trials only front members get a number beside their point.
_LABEL_ALL_UP_TO = 40


# ---------------------------------------------------------------------- figures
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def pareto_png(trials: Sequence[FrozenTrial], analysis: ChoiceAnalysis, *,
               title: str = "") -> bytes:
    """Accuracy against FLOPs: the front in colour with its steps, dominated trials in grey,
    trials over the FLOPs budget as red crosses along the bottom; points numbered by trial."""
    figure = _figure(7.5, 4.6)
    ax = figure.add_subplot()
    trained = [c for c in analysis.candidates if c.feasible]
    over = [c for c in analysis.candidates if not c.feasible]
    front = [c for c in trained if c.on_front]
    dominated = [c for c in trained if not c.on_front]
    ax.scatter([c.flops for c in dominated], [c.accuracy for c in dominated], s=22,
               color="#bdbdbd", label=f"dominated ({len(dominated)})", zorder=2)
    front.sort(key=lambda c: c.flops)
    if front:
        xs = [c.flops for c in front]
        ys = [c.accuracy for c in front]
        ax.step(xs, ys, where="post", color="#3182bd", linewidth=1, zorder=3)
        ax.scatter(xs, ys, s=36, color="#3182bd", label=f"Pareto front ({len(front)})", zorder=4)
        models = [analysis.estimate(c.key) for c in front]
        bars = [(c.flops, m["accuracy_mean"], m["accuracy_sd"]) for c, m in zip(front, models)
                if m["accuracy_mean"] is not None]
        if bars:
            ax.errorbar([b[0] for b in bars], [b[1] for b in bars],
                        yerr=[1.959964 * b[2] for b in bars], fmt="_", color="#fd8d3c",
                        elinewidth=1, capsize=3, zorder=3,
                        label="model mean, 95 % interval")
    label_all = len(analysis.candidates) <= _LABEL_ALL_UP_TO
    for c in trained:
        if c.on_front or label_all:
            ax.annotate(str(c.number), (c.flops, c.accuracy), textcoords="offset points",
                        xytext=(4, 4), fontsize=7,
                        color="#08519c" if c.on_front else "#757575")
    if trained:
        low = min(c.accuracy for c in trained)
        high = max(c.accuracy for c in trained)
        margin = max((high - low) * 0.12, 0.01)
        bottom = low - margin
        ax.set_ylim(bottom - margin, min(high + margin, 1.0 + margin))
    else:
        bottom = 0.0
    if over:
        ax.scatter([c.flops for c in over], [bottom] * len(over), marker="x", s=30,
                   color="#de2d26", label=f"over the FLOPs budget, not trained ({len(over)})",
                   zorder=4)
        for c in over:
            ax.annotate(str(c.number), (c.flops, bottom), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color="#de2d26")
    flops = [c.flops for c in analysis.candidates if c.flops > 0]
    if flops and max(flops) / min(flops) > 20:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_flops_formatter())
    ax.set_xlabel("FLOPs (TensorFlow profiler convention, batch 1)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "Pareto front", fontsize=11)
    ax.grid(True, color="#eeeeee", zorder=0)
    if analysis.candidates:
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no complete trial yet", ha="center", transform=ax.transAxes)
    return _png(figure)


def hypervolume_points(snapshots: Sequence[Snapshot]) -> list[tuple[int, float]]:
    """``(complete trials, hypervolume)`` after each snapshot, in the order they were taken."""
    ordered = sorted(snapshots, key=lambda s: (s.n_complete or 0, s.created_at, s.id))
    return [(s.n_complete if s.n_complete is not None else i, s.hypervolume)
            for i, s in enumerate(ordered, start=1)]


def hypervolume_png(points: Sequence[tuple[int, float]], *, reference_flops: float | None,
                    title: str = "") -> bytes:
    """The hypervolume of the front after each completed trial."""
    figure = _figure(7.5, 3.2)
    ax = figure.add_subplot()
    if points:
        ax.step([n for n, _ in points], [v for _, v in points], where="post", color="#31a354")
        ax.scatter([n for n, _ in points], [v for _, v in points], s=12, color="#31a354")
        ax.set_ylim(0, max(max(v for _, v in points) * 1.1, 0.05))
    else:
        ax.text(0.5, 0.5, "no snapshots recorded yet", ha="center", transform=ax.transAxes)
    ax.set_xlabel("complete trials")
    reference = f" (reference: accuracy 0, {flops_text(reference_flops)} FLOPs)" \
        if reference_flops else ""
    ax.set_ylabel("hypervolume")
    ax.set_title((title or "Hypervolume of the front") + reference, fontsize=10)
    ax.grid(True, color="#eeeeee")
    return _png(figure)


def choices_png(analysis: ChoiceAnalysis) -> bytes:
    """Per point (columns) and kind (rows): how many front members use each choice."""
    points = max(analysis.points, 1)
    figure = _figure(max(2.8 * points, 5.0), 4.8)
    axes = figure.subplots(len(KINDS), points, squeeze=False)
    colours = {"op": "#3182bd", "skip": "#756bb1"}
    for row, kind in enumerate(KINDS):
        for column in range(points):
            ax = axes[row][column]
            stats = analysis.rows(column + 1, kind)
            names = [s.choice for s in stats]
            ax.bar(range(len(stats)), [s.on_front for s in stats], color=colours[kind])
            ax.set_xticks(range(len(stats)), names, rotation=30, ha="right", fontsize=7)
            ax.set_title(f"point {column + 1}: {kind}", fontsize=9)
            top = max([s.on_front for s in stats] + [1])
            ax.set_ylim(0, top * 1.35)
            ax.yaxis.set_major_locator(_integer_locator())
            for i, s in enumerate(stats):
                text = "-" if s.mean_accuracy is None else f"{s.mean_accuracy:.3f}"
                ax.text(i, s.on_front + top * 0.04, text, ha="center", fontsize=6,
                        color="#444444")
            if column == 0:
                ax.set_ylabel("on the front", fontsize=8)
    figure.suptitle(f"Front members using each choice (of {len(analysis.front)}); "
                    "numbers: mean accuracy of its trials", fontsize=9)
    figure.tight_layout()
    return _png(figure)


def _flops_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: flops_text(value))


def _integer_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


# ---------------------------------------------------------------------- the report
def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _ms(value: float | None) -> str:
    """A latency in ms, or ``-`` where the study has none (a FLOPs study)."""
    return "-" if value is None else f"{float(value):.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], *,
           classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f"<td>{c if isinstance(c, _Raw) else html.escape(str(c))}</td>"
                        for c in row)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Raw(str):
    """Markup that a table cell takes as it is."""


def _trial_note(trial: FrozenTrial) -> str:
    attrs = trial.user_attrs
    if TrialAttrs.DUPLICATE_OF in attrs:
        return f"same architecture as trial {attrs[TrialAttrs.DUPLICATE_OF]}"
    if TrialAttrs.INFEASIBLE in attrs:
        return f"not trained: {attrs[TrialAttrs.INFEASIBLE]}"
    if TrialAttrs.FAIL_REASON in attrs:
        return f"failed: {attrs[TrialAttrs.FAIL_REASON]}"
    return ""


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;
padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f5f5f5}tr.front td{background:#eef5fc}tr.over td{color:#b00}
code{font-size:.8rem}h1 code{font-size:inherit}img{max-width:100%}
.meta td:first-child{font-weight:600}
.summary li{margin:.2rem 0}.muted{color:#777;font-size:.85rem}
"""


def _calibration_text(table: Mapping[str, Any]) -> str:
    """How a stored latency table turns kernel sums into ms, for the report's settings."""
    name = table.get("calibration")
    calibration = (table.get("calibrations") or {}).get(name) if name else None
    if calibration is None:
        return ", uncalibrated"
    return (f", calibrated on {calibration['architectures']} architectures measured whole: "
            f"fit error {calibration['median_abs_error']:.1%} median")


def render_report(*, study_name: str, trials: Sequence[FrozenTrial], analysis: ChoiceAnalysis,
                  settings: dict[str, Any], storage: str,
                  snapshots: Sequence[Snapshot]) -> dict[str, bytes]:
    """Every file of the report, rendered in memory (nothing is written).

    Args:
        study_name: The study's name.
        trials: All its trials.
        analysis: :func:`~poolnas.dashboards.analyse_choices` of them.
        settings: The study's ``poolnas`` user attr (data set, budget, space, …), or ``{}``.
        storage: The storage, as shown to people (no password).
        snapshots: Its front snapshots (:meth:`SnapshotStore.history`).

    Returns:
        File name → content, for every name in :data:`REPORT_FILES`.
    """
    reference = settings.get("reference_flops")
    if snapshots:
        reference = snapshots[-1].reference_flops
    volumes = hypervolume_points(snapshots)
    title = f"study {study_name!r}"
    pareto = pareto_png(trials, analysis, title=f"Pareto front of {title}")
    latency = settings.get("cost") == "latency"
    hypervolume = hypervolume_png(volumes, reference_flops=None if latency else reference,
                                  title=f"Hypervolume of {title}"
                                  + (f" (reference: {reference:.3f} ms)" if latency and reference
                                     else ""))
    choices = choices_png(analysis)

    by_number = {t.number: t for t in trials}
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    budget = settings.get("budget") or {}
    input_shape = settings.get("input_shape")
    num_classes = settings.get("num_classes")
    meta = [
        ("storage", storage),
        ("data", f"{settings.get('dataset', '?')}"
                 + (f", {'×'.join(map(str, input_shape))}" if input_shape else "")
                 + (f", {num_classes} classes" if num_classes else "")),
        ("training", ", ".join(f"{k} {v}" for k, v in budget.items()
                               if k in ("epochs", "batch_size", "learning_rate", "optimizer",
                                        "repeats")) or "-"),
        ("FLOPs budget", flops_text(settings.get("max_flops"))
         if settings.get("max_flops") else "none"),
        ("cost objective", "predicted latency (ms, "
         f"{settings.get('latency_runtime', 'keras')}, per-kernel table of "
         f"{(settings.get('latency_table') or {}).get('machine', '?')}"
         f"{_calibration_text(settings.get('latency_table') or {})})"
         + (f"; budget {settings['max_latency']:g} ms" if settings.get("max_latency") else "")
         if settings.get("cost") == "latency" else "FLOPs"),
        ("trials", ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"),
        ("architectures", f"{len(analysis.candidates)} distinct, "
                          f"{sum(c.feasible for c in analysis.candidates)} trained"),
        ("Pareto front", f"{len(analysis.front)} architectures"),
        ("hypervolume", f"{volumes[-1][1]:.4f}" if volumes else "-"),
    ]

    front_rows, front_pictures = [], []
    for number in analysis.front:
        trial = by_number[number]
        attrs = trial.user_attrs
        key = attrs.get(TrialAttrs.ARCHITECTURE, "?")
        model = analysis.estimate(key)
        front_rows.append([number, f"{trial.values[0]:.4f}",
                           "-" if model["accuracy_mean"] is None else
                           f"{model['accuracy_mean']:.4f} ± {model['accuracy_sd']:.4f}",
                           "-" if model["p_front"] is None else f"{model['p_front']:.2f}",
                           front_by_text(analysis.front_by[number]),
                           flops_text(attrs.get(TrialAttrs.FLOPS, trial.values[1])),
                           _ms(attrs.get(TrialAttrs.LATENCY_MS)),
                           flops_text(attrs.get("macs")), attrs.get("params", "-"),
                           _Raw(f"<code>{html.escape(key)}</code>")])
        try:
            arch = Architecture.from_key(key)
        except PoolnasError:
            continue
        png = architecture_png(arch, input_shape=input_shape, num_classes=num_classes)
        front_pictures.append(
            f"<figure><figcaption>trial {number}: <code>{html.escape(key)}</code>"
            f"</figcaption><img alt=\"architecture of trial {number}\" "
            f"src=\"{_data_uri(png)}\"></figure>"
        )

    answer = answer_rows(analysis)
    comparisons = [
        [c.point, c.kind, f"{c.choice} vs {c.other}", c.pairs,
         f"{c.accuracy_delta * 100:+.2f} pp", f"{c.flops_ratio:.2f}×",
         ", ".join(f"{a}/{b}" for a, b in c.trial_pairs[:8])
         + (" …" if len(c.trial_pairs) > 8 else "")]
        for c in analysis.comparisons
    ]
    front_set = set(analysis.front)
    counted = {c.number for c in analysis.candidates}
    all_rows, all_classes = [], []
    for t in sorted(trials, key=lambda t: t.number):
        values = t.values if t.values and len(t.values) == 2 else None
        all_rows.append([
            t.number, t.state.name.lower(),
            "-" if values is None or TrialAttrs.INFEASIBLE in t.user_attrs else f"{values[0]:.4f}",
            "-" if values is None else flops_text(t.user_attrs.get(TrialAttrs.FLOPS, values[1])),
            _ms(t.user_attrs.get(TrialAttrs.LATENCY_MS)),
            front_by_text(analysis.front_by[t.number]) if t.number in front_set else "",
            _trial_note(t),
            _Raw("<code>" + html.escape(str(t.user_attrs.get(TrialAttrs.ARCHITECTURE, "-")))
                 + "</code>"),
        ])
        over = TrialAttrs.INFEASIBLE in t.user_attrs and t.number in counted
        all_classes.append("front" if t.number in front_set else ("over" if over else ""))

    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>poolnas report: {html.escape(study_name)}</title>
<style>{_STYLE}</style></head><body>
<h1>poolnas report: study <code>{html.escape(study_name)}</code></h1>
<table class="meta">{''.join(f'<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>'
                             for k, v in meta)}</table>
<h2>The answer</h2>
<ul class="summary">{''.join(f'<li>{html.escape(line)}</li>' for line in summarise(analysis))}</ul>
<p class="muted">pp: percentage points of validation accuracy. A like-for-like pair is two
architectures of this study that differ only in that point's op (or only in its skip type).</p>
<h2>Pareto front</h2>
<img alt="Pareto front: accuracy against FLOPs" src="{_data_uri(pareto)}">
{_table(["trial", "accuracy", "model mean ± sd", "p_front", "front", "FLOPs", "latency ms",
         "MACs", "params", "architecture"], front_rows)
 if front_rows else "<p>No complete feasible trial yet.</p>"}
<p class="muted">accuracy: the trial's observed validation accuracy. model mean ± sd: the
accuracy model's posterior mean and sd of the architecture's accuracy (every training of the
study informs it); p_front: its probability of being Pareto-optimal. The same numbers as
<code>poolnas front</code> and the export's manifest.json; the figure's bars are the model's 95 %
intervals. front: why it is shown — on the raw accuracies' front (raw), on the model's front
where a seed kept it off the raw one (model), or both (raw+model).</p>
<h2>Op and skip type at each downsampling point</h2>
{_table([h for _, h in ANSWER_COLUMNS], [[r[k] for k, _ in ANSWER_COLUMNS] for r in answer])}
<p class="muted">on front: front members that use the choice. trials, mean acc, mean FLOPs: the
trained architectures that use it. paired Δacc and paired FLOPs: accuracy difference and FLOPs
ratio to the other choices over like-for-like pairs (geometric mean for the ratio).</p>
<img alt="front members using each choice" src="{_data_uri(choices)}">
<h3>Like-for-like comparisons</h3>
{_table(["point", "kind", "choice vs other", "pairs", "Δ accuracy", "FLOPs ratio",
         "trial pairs"], comparisons)
 if comparisons else "<p>No pair of trials differs in only one op or skip type yet.</p>"}
<h2>Hypervolume over the search</h2>
<img alt="hypervolume over trials" src="{_data_uri(hypervolume)}">
<h2>Front members</h2>
{''.join(front_pictures) or "<p>None yet.</p>"}
<h2>All trials</h2>
{_table(["trial", "state", "accuracy", "FLOPs", "latency ms", "front", "note", "architecture"],
        all_rows,
        classes=all_classes)}
<p class="muted">Written by poolnas on {generated}.</p>
</body></html>
"""
    answer_json = json.dumps({"study": study_name, **analysis.as_dict()}, indent=2) + "\n"
    return {PARETO_FIGURE: pareto, HYPERVOLUME_FIGURE: hypervolume, CHOICES_FIGURE: choices,
            ANSWER: answer_json.encode("utf-8"), REPORT: page.encode("utf-8")}


def write_report(handle: StorageHandle, study: optuna.Study, out_dir: str | os.PathLike[str], *,
                 overwrite: bool = False) -> list[Path]:
    """Write the report of ``study`` into ``out_dir`` (created if missing, its parent must exist).

    Everything is rendered before the first file is written, and each file is written under a
    temporary name and renamed into place.

    Args:
        handle: The opened storage (for the snapshots).
        study: A poolnas study.
        out_dir: The output folder.
        overwrite: Replace existing report files.

    Returns:
        The paths written, :data:`REPORT_FILES` in ``out_dir``.

    Raises:
        PoolnasError: ``out_dir`` is a file, its parent is missing, it already holds report files
            (without ``overwrite``), or it cannot be written.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PoolnasError(f"--out {str(out)!r} exists and is not a directory")
    if not overwrite:
        clashes = [name for name in REPORT_FILES if (out / name).exists()]
        if clashes:
            raise PoolnasError(
                f"{str(out)!r} already holds {', '.join(clashes)}; choose an empty --out or pass "
                "--overwrite"
            )
    if not out.exists() and not out.parent.is_dir():
        raise PoolnasError(f"the parent directory of --out {str(out)!r} does not exist")

    trials = study.get_trials(deepcopy=False)
    settings = study.user_attrs.get(STUDY_ATTR) or {}
    snapshots = handle.snapshots.history(study.study_name) if handle.snapshots else []
    files = render_report(study_name=study.study_name, trials=trials,
                          analysis=analyse_study(study, trials), settings=settings,
                          storage=handle.display_url, snapshots=snapshots)
    written = []
    try:
        out.mkdir(exist_ok=True)
        for name in REPORT_FILES:
            write_file_atomically(out / name, files[name])
            written.append(out / name)
    except OSError as error:
        raise PoolnasError(f"cannot write to {str(out)!r}: {error.strerror or error}") from None
    return written
