"""Users' own data through the real CLI: .npz files, image folders, Keras data sets offline,
repeated seeds, export of raw-image models, retrain + test, and reproducible searches."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
from PIL import Image

from poolnas.evaluators import load_dataset
from poolnas.search._cli import main
from poolnas.search._retrain import kendall_tau

TINY = ["--epochs", "1", "--batch-size", "32"]
#: A small space (two points, narrow stages), so that a trial is about a second.
SPACE = ('points = 2\nops = ["max", "avg", "conv"]\nskips = ["none", "pool_pad"]\n'
         "widths = [8, 16, 16]\n")


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as stop:  # argparse's own mistakes
        code = int(stop.code)
    out, err = capsys.readouterr()
    return code, out, err


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict(x, verbose=0).argmax(axis=1) == y))


def _coloured(n: int, size: tuple[int, int], seed: int, *, signal: int = 150,
              noise: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 RGB images in 3 classes: class c is brighter by ``signal`` in channel c, on
    uniform noise in ``0 .. noise``."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, noise, (n, *size, 3))
    x[np.arange(n), :, :, y] += signal
    return x.astype(np.uint8), y


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("data")
    (where / "small.toml").write_text(SPACE)
    return where


# ---------------------------------------------------------------------------------------- .npz
@pytest.fixture(scope="module")
def npz_study(workdir):
    """A search with 2 seeds per architecture on an .npz of raw uint8 images, one-hot labels.

    The classes are hard to tell apart (a faint colour cast under strong noise), so two seeds
    reach different accuracies."""
    x, y = _coloured(600, (8, 8), seed=0, signal=12, noise=200)
    np.savez(workdir / "colours.npz", x_train=x, y_train=np.eye(3, dtype=np.uint8)[y])
    storage = f"sqlite:///{workdir / 'npz.db'}"
    code = main(["search", "--storage", storage, "--study", "c", "--trials", "2", "--seed", "4",
                 "--dataset", str(workdir / "colours.npz"), "--space", str(workdir / "small.toml"),
                 "--repeats", "2", "--epochs", "3", "--batch-size", "8", "--quiet"])
    assert code == 0
    return storage, workdir / "colours.npz"


def test_npz_search_takes_shape_and_classes_from_the_data(npz_study) -> None:
    storage, npz = npz_study
    study = optuna.load_study(study_name="c", storage=storage)
    settings = study.user_attrs["poolnas"]
    assert settings["dataset"] == str(npz)
    assert settings["input_shape"] == [8, 8, 3] and settings["num_classes"] == 3
    assert settings["input_scale"] == pytest.approx(1 / 255)
    assert settings["seed"] == 4 and settings["budget"]["repeats"] == 2


def test_repeats_store_the_mean_and_front_shows_the_spread(npz_study, capsys) -> None:
    storage, _ = npz_study
    trials = optuna.load_study(study_name="c", storage=storage).get_trials()
    for trial in trials:
        accuracies = trial.user_attrs["accuracies"]
        assert len(accuracies) == 2
        assert trial.values[0] == pytest.approx(statistics.fmean(accuracies))
        assert trial.user_attrs["accuracy_std"] == pytest.approx(statistics.stdev(accuracies))
    code, table, _ = run(capsys, "front", "--storage", storage, "--study", "c")
    assert code == 0
    code, text, _ = run(capsys, "front", "--storage", storage, "--study", "c", "--format", "json")
    rows = json.loads(text)
    assert rows and "±" in table
    for row in rows:
        std = trials[row["trial"]].user_attrs["accuracy_std"]
        assert row["accuracy_std"] == pytest.approx(std)
        # Two seeds: the table says by how much they disagree, by nothing too.
        assert f"{row['accuracy']:.4f} ± {std:.4f}" in table


def test_exported_model_takes_raw_uint8_images(npz_study, capsys, tmp_path) -> None:
    storage, npz = npz_study
    out = tmp_path / "models"
    code, _, err = run(capsys, "export", "--storage", storage, "--study", "c", "--out", str(out))
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"] == "search" and manifest["seed"] == 4
    # The manifest is as readable as the models beside it (not a temporary file's 0600).
    model_mode = (out / manifest["models"][0]["file"]).stat().st_mode & 0o777
    assert (out / "manifest.json").stat().st_mode & 0o777 == model_mode
    data = load_dataset(npz, seed=4)
    assert data.x_val.dtype == np.uint8 and data.x_val.max() > 200
    trials = optuna.load_study(study_name="c", storage=storage).get_trials()
    for entry in manifest["models"]:
        assert entry["weights"] == "search" and entry["test_accuracy"] is None
        model = keras.saving.load_model(out / entry["file"])  # safe_mode, no custom objects
        # The stored images, as they are: the model rescales them. The exported model is the
        # last seed's, so it scores that seed's validation accuracy.
        last = trials[entry["trial"]].user_attrs["accuracies"][-1]
        assert _accuracy(model, data.x_val, data.y_val) == pytest.approx(last, abs=1e-6)


def test_retrain_writes_test_accuracy_and_kendall_tau(npz_study, capsys, tmp_path) -> None:
    storage, npz = npz_study
    out = tmp_path / "retrained"
    code, text, err = run(capsys, "export", "--storage", storage, "--study", "c", "--out",
                          str(out), "--trial", "0", "--trial", "1", "--retrain-epochs", "1")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["retrain_epochs"] == 1
    assert manifest["weights"] == "retrained on train+val for 1 epochs"
    data = load_dataset(npz, seed=4)
    assert manifest["test_examples"] == len(data.y_test)
    models = manifest["models"]
    assert [m["trial"] for m in models] == [0, 1]
    for entry in models:
        assert entry["weights"] == manifest["weights"]
        assert 0.0 <= entry["test_accuracy"] <= 1.0
        assert f"test acc {entry['test_accuracy']:.4f}" in text
        # The file is the retrained model: it scores exactly the recorded test accuracy.
        model = keras.saving.load_model(out / entry["file"])
        assert _accuracy(model, data.x_test, data.y_test) == pytest.approx(
            entry["test_accuracy"], abs=1e-6)
    tau = kendall_tau([m["accuracy"] for m in models], [m["test_accuracy"] for m in models])
    assert manifest["kendall_tau"] == tau
    assert "Kendall tau" in text


def test_retrain_needs_the_data_where_the_study_found_it(npz_study, capsys, tmp_path) -> None:
    storage, npz = npz_study
    moved = npz.with_name("moved.npz")
    npz.rename(moved)
    try:
        before = _tree(tmp_path)
        code, _, err = run(capsys, "export", "--storage", storage, "--study", "c", "--out",
                           str(tmp_path / "m"), "--retrain-epochs", "1")
    finally:
        moved.rename(npz)
    assert code == 2 and err.startswith("poolnas: error: cannot reload the study's data set")
    assert err.count("\n") == 1 and _tree(tmp_path) == before


def test_resume_with_another_seed_is_refused(npz_study, capsys) -> None:
    storage, npz = npz_study
    code, _, err = run(capsys, "search", "--storage", storage, "--study", "c", "--trials", "3",
                       "--seed", "5", "--dataset", str(npz), "--space",
                       str(npz.with_name("small.toml")), "--repeats", "2", "--epochs", "3",
                       "--batch-size", "8")
    assert code == 2 and "--seed 4" in err and err.count("\n") == 1
    assert len(optuna.load_study(study_name="c", storage=storage).get_trials()) == 2


# ---------------------------------------------------------------------------------------- folder
def test_image_folder_search_export_and_resume(workdir, capsys, tmp_path) -> None:
    root = workdir / "colours"
    x, y = _coloured(45, (20, 24), seed=1)
    for i, (image, label) in enumerate(zip(x, y)):
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"class{label}" / f"{i}.png")
    storage = f"sqlite:///{tmp_path / 'folder.db'}"
    args = ["search", "--storage", storage, "--study", "f", "--dataset", str(root),
            "--image-size", "16x16", "--space", str(workdir / "small.toml"), *TINY]
    code, out, err = run(capsys, *args, "--trials", "1")
    assert code == 0, err
    assert "(16, 16, 3)" in out
    # The stored image size (a list once in JSON) is the same option as --image-size 16x16.
    code, out, err = run(capsys, *args, "--trials", "2")
    assert code == 0 and "resuming" in out, err
    out_dir = tmp_path / "models"
    code, _, err = run(capsys, "export", "--storage", storage, "--study", "f",
                       "--out", str(out_dir))
    assert code == 0, err
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["data_options"] == {"image_size": [16, 16]}
    data = load_dataset(root, seed=0, image_size=(16, 16))
    assert data.x_val.dtype == np.uint8 and data.class_names == ("class0", "class1", "class2")
    trials = optuna.load_study(study_name="f", storage=storage).get_trials()
    for entry in manifest["models"]:
        model = keras.saving.load_model(out_dir / entry["file"])
        assert model.input_shape == (None, 16, 16, 3)
        assert _accuracy(model, data.x_val, data.y_val) == pytest.approx(
            trials[entry["trial"]].values[0], abs=1e-6)


@pytest.mark.parametrize(
    ("make", "name", "options", "message"),
    [
        (lambda root: _folder_of(root, (20, 20)), "", ["--image-size", "4x4"],
         "the 4x4 input allows at most 2"),
        (lambda root: _folder_of(root, (20, 20), classes=1), "", [], "only one class folder"),
        (lambda root: np.savez(root / "bad.npz", x_train=np.zeros((10, 8, 8), np.uint8),
                               y_train=np.arange(9) % 2), "bad.npz", [],
         "x_train has 10 images but y_train has 9 labels"),
        (lambda root: np.savez(root / "bad.npz", x_train=np.zeros((10, 8, 8), np.uint8),
                               y_train=np.arange(10) % 2, x_test=np.zeros((4, 8, 8), np.uint8),
                               y_test=np.array([0, 1, 2, 1])), "bad.npz", [],
         "y_test in bad.npz has label 2, out of range"),
    ],
    ids=["images_too_small", "one_class", "mismatched_lengths", "label_out_of_range"],
)
def test_malformed_data_is_one_line_before_any_training(tmp_path, capsys, make, name, options,
                                                        message) -> None:
    root = tmp_path / "data"
    root.mkdir()
    make(root)
    before = _tree(tmp_path)
    code, _, err = run(capsys, "search", "--storage", f"sqlite:///{tmp_path / 'x.db'}",
                       "--dataset", str(root / name), *options, *TINY)
    assert code == 2 and err.startswith("poolnas: error: ") and err.count("\n") == 1
    assert message in err
    assert _tree(tmp_path) == before


def _folder_of(root: Path, size: tuple[int, int], classes: int = 2) -> None:
    for c in range(classes):
        (root / f"c{c}").mkdir()
        for i in range(3):
            Image.new("RGB", size[::-1], (40 * c, 9 * i, 0)).save(root / f"c{c}" / f"{i}.png")


# ---------------------------------------------------------------------------------------- keras
def test_keras_data_set_offline_is_one_line_from_the_command(tmp_path) -> None:
    home = tmp_path / "keras_home"  # Not there yet: the refused search must not create it.
    proxy = "http://127.0.0.1:9"  # refuses connections: offline even on a machine with internet
    env = dict(os.environ, KERAS_HOME=str(home), HTTP_PROXY=proxy, HTTPS_PROXY=proxy,
               http_proxy=proxy, https_proxy=proxy, NO_PROXY="", no_proxy="")
    result = subprocess.run(
        [sys.executable, "-m", "poolnas.search", "search", "--dataset", "cifar10",
         "--storage", f"sqlite:///{tmp_path / 'x.db'}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("poolnas: error: could not download the cifar10 data set")
    assert result.stderr.count("\n") == 1 and "--dataset PATH" in result.stderr
    assert str(home / "datasets") in result.stderr  # Where it would be cached, as Keras reads it.
    assert "Downloading" not in result.stdout + result.stderr
    assert not (tmp_path / "x.db").exists() and not home.exists()


# ---------------------------------------------------------------------------------------- seeds
def test_the_same_seed_gives_the_same_trials(workdir, capsys, tmp_path) -> None:
    studies = []
    for name in ("first", "second"):
        storage = f"sqlite:///{tmp_path / f'{name}.db'}"
        code = main(["search", "--storage", storage, "--study", name, "--trials", "2",
                     "--seed", "11", "--space", str(workdir / "small.toml"), "--subset", "400",
                     "--epochs", "3", "--batch-size", "32", "--quiet"])
        assert code == 0
        studies.append(optuna.load_study(study_name=name, storage=storage).get_trials())
    first, second = studies
    assert len(first) == len(second) == 2
    for a, b in zip(first, second):
        assert a.user_attrs["architecture"] == b.user_attrs["architecture"]
        assert a.values == b.values
        assert a.user_attrs["accuracies"] == b.user_attrs["accuracies"]
    assert max(t.values[0] for t in first) > 0.3  # they learned something: not equal by chance


# ---------------------------------------------------------------------------------------- tau
def test_kendall_tau_is_tau_b() -> None:
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 12))
        x = rng.integers(0, 4, n).tolist()  # small ranges: many ties
        y = rng.integers(0, 4, n).tolist()
        expected = kendalltau(x, y).statistic
        got = kendall_tau(x, y)
        if np.isnan(expected):
            assert got is None
        else:
            assert got == pytest.approx(expected)
    assert kendall_tau([0.1, 0.2, 0.3], [0.5, 0.6, 0.9]) == 1.0
    assert kendall_tau([0.1, 0.2, 0.3], [0.9, 0.6, 0.5]) == -1.0
    assert kendall_tau([0.5], [0.5]) is None and kendall_tau([1, 1], [0, 2]) is None
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1])
