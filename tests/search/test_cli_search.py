"""End to end through the real CLI: search, resume, dedup, snapshots, front, export, reload."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from poolnas.search._cli import main
from poolnas.search._snapshots import SnapshotStore

TINY = ["--epochs", "1", "--batch-size", "128"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One small real search on digits, shared by the tests that only read it."""
    where = tmp_path_factory.mktemp("search")
    db = where / "s.db"
    code = main(["search", "--storage", f"sqlite:///{db}", "--study", "s", "--trials", "4",
                 "--seed", "3", *TINY])
    assert code == 0
    return where, db


def _study(db: Path, name: str = "s") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def test_search_records_what_the_design_promises(searched) -> None:
    _, db = searched
    study = _study(db)
    assert study.metric_names == ["accuracy", "flops"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 4
    for trial in complete:
        attrs = trial.user_attrs
        for key in ("architecture", "flops", "macs", "params", "epochs", "train_seconds"):
            assert key in attrs, key
        assert attrs["flops"] == trial.values[1]
        assert 0.0 <= trial.values[0] <= 1.0
        assert attrs["epochs"] == 1
    assert (db.parent / "s-artifacts").is_dir()


def test_a_snapshot_after_every_complete_trial(searched) -> None:
    _, db = searched
    study = _study(db)
    history = SnapshotStore(f"sqlite:///{db}").history("s")
    complete = {t.number: t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert sorted(s.after_trial_number for s in history) == sorted(complete)
    for snapshot in history:
        assert 0.0 < snapshot.hypervolume <= 1.0
        for member in snapshot.members:
            assert member.trial_number in complete
            assert member.trial_number <= snapshot.after_trial_number
    volumes = [s.hypervolume for s in sorted(history, key=lambda s: s.after_trial_number)]
    assert volumes == sorted(volumes)  # the front only ever improves


def test_front_formats_agree(searched, capsys, monkeypatch) -> None:
    _, db = searched
    storage = f"sqlite:///{db}"
    code, table, _ = run(capsys, "front", "--storage", storage, "--study", "s")
    assert code == 0 and "architecture" in table
    code, text, _ = run(capsys, "front", "--storage", storage, "--study", "s", "--format", "json")
    rows = json.loads(text)
    code, text, _ = run(capsys, "front", "--storage", storage, "--study", "s", "--format", "csv")
    listed = [int(r["trial"]) for r in csv.DictReader(io.StringIO(text))]
    assert listed == [r["trial"] for r in rows]
    flops = [r["flops"] for r in rows]
    assert flops == sorted(flops)
    # The raw front by raw accuracies, the model's by posterior means: each a real front.
    raw = [r["accuracy"] for r in rows if r["front_by"] in ("raw", "both")]
    means = [r["accuracy_mean"] for r in rows if r["front_by"] in ("model", "both")]
    assert raw and raw == sorted(raw) and means == sorted(means)
    assert {r["front_by"] for r in rows} <= {"raw", "model", "both"}
    for row in rows:
        assert row["architecture"] in table


def test_export_reloads_in_plain_keras_and_reproduces_accuracy(searched, capsys,
                                                                tmp_path) -> None:
    _, db = searched
    out = tmp_path / "models"
    code, text, err = run(capsys, "export", "--storage", f"sqlite:///{db}", "--study", "s",
                          "--out", str(out))
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input_shape"] == [8, 8, 1] and manifest["num_classes"] == 10
    assert manifest["models"]
    # The accuracy model's numbers, the same as `poolnas front --format json`.
    code, text, _ = run(capsys, "front", "--storage", f"sqlite:///{db}", "--study", "s",
                        "--format", "json")
    front = {r["trial"]: r for r in json.loads(text)}
    for entry in manifest["models"]:
        assert entry["accuracy_mean"] is not None and entry["accuracy_sd"] > 0
        assert 0 <= entry["p_front"] <= 1
        row = front[entry["trial"]]
        assert (entry["accuracy_mean"], entry["accuracy_sd"], entry["p_front"]) == (
            row["accuracy_mean"], row["accuracy_sd"], row["p_front"])
    # A separate process that imports only keras (and numpy/sklearn for the data).
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import keras
        from sklearn.datasets import load_digits
        from poolnas.evaluators import load_dataset
        data = load_dataset("digits", seed=3)
        manifest = json.load(open({str(out / 'manifest.json')!r}))
        for entry in manifest["models"]:
            model = keras.saving.load_model({str(out)!r} + "/" + entry["file"])
            pred = model.predict(data.x_val, verbose=0).argmax(axis=1)
            print(entry["trial"], float((pred == data.y_val).mean()), entry["accuracy"])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    lines = [line.split() for line in result.stdout.strip().splitlines()]
    assert len(lines) == len(manifest["models"])
    for _, measured, recorded in lines:
        assert float(measured) == pytest.approx(float(recorded), abs=1e-6)
    # Exporting again into the same folder refuses to overwrite…
    before = digest(out / "manifest.json")
    code, _, err = run(capsys, "export", "--storage", f"sqlite:///{db}", "--study", "s",
                       "--out", str(out))
    assert code == 2 and err.startswith("poolnas: error:") and "--overwrite" in err
    assert digest(out / "manifest.json") == before
    # …and with --overwrite and one chosen trial the folder holds exactly what the manifest lists.
    chosen = manifest["models"][0]["trial"]
    code, _, err = run(capsys, "export", "--storage", f"sqlite:///{db}", "--study", "s",
                       "--out", str(out), "--overwrite", "--trial", str(chosen))
    assert code == 0, err
    again = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.glob("*.keras")) == [m["file"] for m in again["models"]]


def test_export_chosen_trials_and_flops_match_the_profiler(searched, capsys, tmp_path) -> None:
    import keras

    from poolnas.evaluators import profiler_flops

    _, db = searched
    study = _study(db)
    numbers = [t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    args = ["export", "--storage", f"sqlite:///{db}", "--study", "s", "--out", str(tmp_path)]
    for n in numbers[:2]:
        args += ["--trial", str(n)]
    assert run(capsys, *args)[0] == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [m["trial"] for m in manifest["models"]] == numbers[:2]
    for entry in manifest["models"]:
        model = keras.saving.load_model(tmp_path / entry["file"])
        assert profiler_flops(model) == entry["flops"]


def test_resume_finishes_the_budget_without_overshooting(tmp_path, capsys) -> None:
    storage = f"sqlite:///{tmp_path / 'r.db'}"
    args = ["search", "--storage", storage, "--study", "r", *TINY]
    assert run(capsys, *args, "--trials", "2")[0] == 0
    code, out, _ = run(capsys, *args, "--trials", "3")
    assert code == 0 and "resuming" in out and "2/3 trials done" in out
    assert run(capsys, *args, "--trials", "3")[0] == 0  # already done: trains nothing
    study = optuna.load_study(study_name="r", storage=storage)
    assert len(study.get_trials()) == 3


def test_resume_with_other_settings_is_refused_and_changes_nothing(tmp_path, capsys) -> None:
    db = tmp_path / "r.db"
    args = ["search", "--storage", f"sqlite:///{db}", "--study", "r", "--trials", "1"]
    assert run(capsys, *args, *TINY)[0] == 0
    before = digest(db)
    code, _, err = run(capsys, *args, "--epochs", "2")
    assert code == 2 and "different budget" in err and err.count("\n") == 1
    assert digest(db) == before


def test_duplicates_are_not_trained_again(tmp_path, capsys) -> None:
    space = tmp_path / "two.toml"
    space.write_text('points = 2\nops = ["max"]\nskips = [["none", "pool_pad"], ["none"]]\n'
                     "widths = [8, 16, 32]\n")
    storage = f"sqlite:///{tmp_path / 'd.db'}"
    code, out, _ = run(capsys, "search", "--storage", storage, "--study", "d", "--trials", "5",
                       "--sampler", "random", "--space", str(space), *TINY)
    assert code == 0
    trials = optuna.load_study(study_name="d", storage=storage).get_trials()
    assert len(trials) == 5
    originals = {t.user_attrs["architecture"]: t for t in trials
                 if "duplicate_of" not in t.user_attrs}
    assert len(originals) == 2
    for t in trials:
        if "duplicate_of" in t.user_attrs:
            first = trials[t.user_attrs["duplicate_of"]]
            assert first.user_attrs["architecture"] == t.user_attrs["architecture"]
            assert t.values == first.values
            assert t.user_attrs["model_artifact"] == first.user_attrs["model_artifact"]
            assert "seconds" not in t.user_attrs  # nothing was trained
    assert "same as trial" in out


def test_grid_visits_every_architecture_once_across_a_resume(tmp_path, capsys) -> None:
    space = tmp_path / "four.toml"
    space.write_text('points = 2\nops = ["max", "avg"]\nskips = ["none"]\nwidths = [8, 16, 32]\n')
    storage = f"sqlite:///{tmp_path / 'g.db'}"
    args = ["search", "--storage", storage, "--study", "g", "--sampler", "grid",
            "--space", str(space), *TINY, "--quiet"]
    assert run(capsys, *args, "--trials", "2")[0] == 0
    assert run(capsys, *args, "--trials", "4")[0] == 0  # Resumed: the same grid order.
    trials = optuna.load_study(study_name="g", storage=storage).get_trials()
    assert len({t.user_attrs["architecture"] for t in trials}) == len(trials) == 4
    assert not [t for t in trials if "duplicate_of" in t.user_attrs]


def test_max_flops_marks_infeasible_without_training(tmp_path, capsys) -> None:
    storage = f"sqlite:///{tmp_path / 'f.db'}"
    code, out, _ = run(capsys, "search", "--storage", storage, "--study", "f", "--trials", "3",
                       "--max-flops", "1k", *TINY)
    assert code == 0 and "over the budget: " in out and "FLOPs > budget 1000" in out
    for t in optuna.load_study(study_name="f", storage=storage).get_trials():
        assert t.constraints["flops_budget"] > 0
        assert t.user_attrs["train_seconds"] == 0.0 and "model_artifact" not in t.user_attrs
    code, _, err = run(capsys, "export", "--storage", storage, "--study", "f", "--out",
                       str(tmp_path / "none"))
    assert code == 2 and "no complete feasible trial" in err


def test_diverging_trials_fail_with_their_reason(tmp_path, capsys) -> None:
    storage = f"sqlite:///{tmp_path / 'n.db'}"
    code, out, err = run(capsys, "search", "--storage", storage, "--study", "n", "--trials", "2",
                         "--learning-rate", "1e30", "--optimizer", "sgd", *TINY)
    assert code == 2 and "failed in a row" in err
    trials = optuna.load_study(study_name="n", storage=storage).get_trials()
    assert len(trials) == 5
    assert all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert all("diverged" in t.user_attrs["fail_reason"].lower() for t in trials)
