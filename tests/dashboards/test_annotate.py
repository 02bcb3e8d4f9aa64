"""What the search writes for optuna-dashboard: trial notes, architecture pictures, the figure."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import pytest
from known_study import known_trials
from optuna_dashboard import get_note

from poolnas.dashboards import (
    CHOICES_FIGURE_ID,
    analyse_study,
    annotate_trial,
    architecture_png,
    choices_figure,
    refresh_study_figures,
    trial_note,
)
from poolnas.evaluators import count_cost, point_costs
from poolnas.search._storage import open_storage
from poolnas.spaces import Architecture, build_model

PNG = b"\x89PNG\r\n\x1a\n"
KEY = "conv3:16x1/max+projection:32x1/conv+none:64x1/avg+pool_pad.concat:128x2"


def test_note_has_the_words_and_a_row_per_point_with_its_flops() -> None:
    arch = Architecture.from_key(KEY)
    costs = point_costs(arch, (8, 8, 1), 10, compare=False)
    note = trial_note(arch, costs, remark="Not trained.")
    assert note.startswith(f"### `{KEY}`\n\nNot trained.\n")
    for line in arch.describe().splitlines():
        assert f"- {line}" in note
    rows = [line for line in note.splitlines() if line.startswith("| ")]
    assert rows[2].startswith("| 1 | max | projection | add | 32 × 1 |")
    assert rows[3].startswith("| 2 | conv | none |  | 64 × 1 |")
    assert rows[4].startswith("| 3 | avg | pool_pad | concat | 128 × 2 |")
    total = count_cost(build_model(arch, (8, 8, 1), 10)).flops
    from poolnas.dashboards._analysis import flops_text

    assert rows[-1] == f"| **total** | | | | | **{flops_text(total)}** |"
    assert "latency" not in note  # a FLOPs study's note has no latency
    assert "Predicted latency: **0.3412 ms**" in trial_note(arch, costs, latency_ms=0.34123)


def test_picture_is_a_png() -> None:
    png = architecture_png(Architecture.from_key(KEY), input_shape=(8, 8, 1), num_classes=10,
                           point_flops=[1, 2, 3])
    assert png.startswith(PNG) and len(png) > 5_000


@pytest.fixture
def running(tmp_path: Path):
    """A running trial of a fresh study in SQLite, and the storage's artifact store."""
    handle = open_storage(f"sqlite:///{tmp_path / 'a.db'}", create=True,
                          heartbeat_interval=None)
    study = optuna.create_study(storage=handle.optuna_storage,
                                directions=["maximize", "minimize"])
    trial = study.ask()
    yield handle, study, trial
    handle.close()


def test_annotate_trial_saves_the_note_and_uploads_the_picture(running) -> None:
    handle, study, trial = running
    arch = Architecture.from_key(KEY)
    assert annotate_trial(trial, arch, input_shape=(8, 8, 1), num_classes=10,
                          artifact_store=handle.artifact_store())
    assert get_note(trial).startswith(f"### `{KEY}`")
    artifacts = optuna.artifacts.get_all_artifact_meta(trial, storage=handle.optuna_storage)
    assert [(a.filename, a.mimetype) for a in artifacts] == [
        (f"architecture-trial{trial.number:05d}.png", "image/png")]
    assert trial.user_attrs["diagram_artifact"] == artifacts[0].artifact_id
    with handle.artifact_store().open_reader(artifacts[0].artifact_id) as reader:
        assert reader.read(8) == PNG


def test_annotation_failures_are_warnings_not_errors(running, tmp_path, caplog) -> None:
    handle, study, trial = running
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the artifact directory should be")
    store = optuna.artifacts.FileSystemArtifactStore(blocker)  # every write fails: ENOTDIR
    with caplog.at_level(logging.WARNING, logger="poolnas.dashboards"):
        ok = annotate_trial(trial, Architecture.from_key(KEY), input_shape=(8, 8, 1),
                            num_classes=10, artifact_store=store)
    assert ok is False
    assert "cannot store the architecture picture" in caplog.text
    assert get_note(trial).startswith(f"### `{KEY}`")  # what could be saved was saved
    study.tell(trial, [0.5, 1e6])  # and the trial still completes
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def _figure_json(study: optuna.Study) -> dict:
    storage = study._storage
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(study.study_name))
    prefix = f"dashboard:plot_data:{CHOICES_FIGURE_ID}:"
    chunks = {int(k[len(prefix):]): v for k, v in attrs.items() if k.startswith(prefix)}
    return json.loads("".join(chunks[i] for i in sorted(chunks) if chunks[i]))


def test_study_figure_is_stored_and_replaced(known_study) -> None:
    _, study, _ = known_study
    assert refresh_study_figures(study)
    figure = _figure_json(study)
    bars = {trace["name"]: dict(zip(trace["x"], trace["y"])) for trace in figure["data"]}
    assert bars["point 1 op"] == {"max": 2, "avg": 0, "conv": 1}
    assert bars["point 1 skip"] == {"none": 2, "projection": 1}
    assert bars["point 2 op"] == {"max": 3, "avg": 0, "conv": 0}
    assert "3 members" in figure["layout"]["title"]["text"]
    # A later refresh replaces it (same id), it does not add a second figure.
    study.add_trial(optuna.trial.create_trial(
        values=[0.99, 0.5e6], user_attrs={"architecture": known_trials()[2].user_attrs[
            "architecture"].replace("avg+none:32x1", "avg+projection:32x1")}))
    assert refresh_study_figures(study)
    bars = {t["name"]: dict(zip(t["x"], t["y"])) for t in _figure_json(study)["data"]}
    assert bars["point 1 op"]["avg"] == 1


def test_figure_shows_the_analysis(known_study) -> None:
    _, study, _ = known_study
    analysis = analyse_study(study)
    figure = choices_figure(analysis)
    assert len(figure.data) == 2 * analysis.points
    hover = figure.data[0].hovertext[0]
    assert hover.startswith("max: 2/3 on the front") and "paired Δacc" in hover


def test_search_annotates_untrained_trials_too(tmp_path) -> None:
    """Over the FLOPs budget: not trained, but the note says why and the picture is there."""
    from poolnas.search._cli import main

    storage = f"sqlite:///{tmp_path / 'f.db'}"
    space = tmp_path / "small.toml"
    space.write_text('points = 1\nops = ["max", "conv"]\nskips = ["none"]\n')
    assert main(["search", "--storage", storage, "--study", "f", "--trials", "2",
                 "--space", str(space), "--sampler", "grid", "--max-flops", "1k", "--quiet",
                 "--epochs", "1", "--batch-size", "128"]) == 0
    study = optuna.load_study(study_name="f", storage=storage)
    originals = [t for t in study.trials if "duplicate_of" not in t.user_attrs]
    assert originals
    for trial in study.trials:
        note = get_note(optuna.trial.Trial(study, trial._trial_id))
        if "duplicate_of" in trial.user_attrs:  # the sampler may propose an architecture twice
            assert "Same architecture as trial" in note
            continue
        assert note.startswith(f"### `{trial.user_attrs['architecture']}`\n\nNot trained: ")
        assert "over the budget of 1,000" in note
        artifacts = optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
        assert [a.mimetype for a in artifacts] == ["image/png"]
    assert _figure_json(study)["data"]  # the study figure exists, with an empty front
