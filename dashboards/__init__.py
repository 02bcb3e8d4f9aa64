"""Looking at results: optuna-dashboard for a poolnas storage, what it shows, and a static report.

- :func:`serve`: optuna-dashboard on a storage and its artifact store (``poolnas dashboard``).
- :data:`DASHBOARD_HOOKS` (:func:`annotate`, :func:`refresh_study_figures`): what the search
  writes for the dashboard, subscribed to its trial events by the CLI: a note and an
  architecture picture per trial, an op-choice figure per study.
- :func:`analyse_choices`: the answer table, which op and skip type win at each point
  (``poolnas front --explain``).
- :func:`write_report`: a self-contained HTML report with PNG figures (``poolnas report``).
"""

from __future__ import annotations

from poolnas.dashboards._analysis import (
    Candidate,
    ChoiceAnalysis,
    ChoiceStat,
    PairedComparison,
    analyse_choices,
    analyse_study,
    answer_text,
    flops_text,
    summarise,
)
from poolnas.dashboards._annotate import (
    CHOICES_FIGURE_ID,
    DASHBOARD_HOOKS,
    annotate,
    annotate_trial,
    choices_figure,
    refresh_study_figures,
    trial_note,
)
from poolnas.dashboards._diagram import architecture_png
from poolnas.dashboards._report import REPORT_FILES, render_report, write_report
from poolnas.dashboards._server import serve

__all__ = [
    "CHOICES_FIGURE_ID",
    "DASHBOARD_HOOKS",
    "Candidate",
    "ChoiceAnalysis",
    "ChoiceStat",
    "PairedComparison",
    "REPORT_FILES",
    "analyse_choices",
    "analyse_study",
    "annotate",
    "annotate_trial",
    "answer_text",
    "architecture_png",
    "choices_figure",
    "flops_text",
    "refresh_study_figures",
    "render_report",
    "serve",
    "summarise",
    "trial_note",
    "write_report",
]
