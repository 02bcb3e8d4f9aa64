"""`poolnas latency` and `poolnas search --cost latency`: behaviour, never timings."""

from __future__ import annotations

import json

import optuna
import pytest

from poolnas.search import CostModel, settings_of
from poolnas.search._cli import main
from poolnas.search._trial_attrs import TrialAttrs

KEY = "conv3:4x1/max+projection:8x1"
DEFAULT_KEY = "conv3:16x1/max+none:32x1/avg+projection:64x1/conv+none:128x1"  # of `default`
TINY = ["--epochs", "1", "--batch-size", "128"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Kernel tables go to this test's folder, not the user's cache."""
    monkeypatch.setenv("POOLNAS_LATENCY_CACHE", str(tmp_path / "cache"))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("poolnas: error: "), err
    return err[0]


@pytest.mark.parametrize("argv, message", [
    (["--runtime", "onnx"], "unknown runtime 'onnx'"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--batch-size", "-2"], "--batch-size must be at least 1"),
])
def test_latency_bad_input_is_one_error_line(capsys, argv, message):
    assert main(["latency", KEY, *argv]) == 2
    assert message in _one_error_line(capsys)


def test_latency_of_a_model_tflite_cannot_convert(capfd, tmp_path):
    # capfd: the converter's own diagnostics go to fd 2 from C++, past sys.stderr.
    import keras

    inputs = keras.Input((4,), dtype="int64")
    path = tmp_path / "hashing.keras"
    keras.Model(inputs, keras.layers.Hashing(8)(inputs)).save(path)
    capfd.readouterr()
    assert main(["latency", str(path), "--runtime", "tflite"]) == 2
    assert "TFLite cannot convert" in _one_error_line(capfd)


@pytest.mark.parametrize("runtime", ["keras", "tflite"])
def test_latency_reports_median_iqr_threads_and_prediction(capsys, runtime):
    argv = ["latency", KEY, "--runtime", runtime, "--runs", "3", "--repeats", "2", "--warmup",
            "1", "--latency-tolerance", "100", "--format", "json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    # 0: TensorFlow's default, when TensorFlow already ran in this process before pinning.
    assert result["runtime"] == runtime and result["threads"] in (0, 1)
    assert result["median_ms"] > 0 and result["iqr_ms"] >= 0
    assert len(result["repeat_medians_ms"]) == 2 and result["predicted_ms"] > 0
    assert result["flops"] > 0 and result["architecture"] == KEY


def test_search_with_latency_cost_stores_latency_ms_end_to_end(capsys, tmp_path):
    # The deployment-device workflow: fill a table file for the space there, search here.
    table = tmp_path / "device.json"
    assert main(["latency", DEFAULT_KEY, "--space", "default", "--latency-table", str(table),
                 "--runs", "2", "--repeats", "2", "--warmup", "1", "--latency-tolerance", "100",
                 "--runtime", "tflite", "--input-scale", "0.0625", "--format", "json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["table_kernels"] > 30
    assert measured["calibration"]["architectures"] == 20  # calibrated on the space
    storage = f"sqlite:///{tmp_path / 'lat.db'}"
    # A table that lacks kernels of the space is refused before anything is written.
    assert main(["search", "--storage", storage, "--study", "cat", "--cost", "latency",
                 "--space", "catalogue", "--latency-table", str(table), *TINY]) == 2
    assert "lacks" in _one_error_line(capsys)
    argv = ["search", "--storage", storage, "--study", "lat", "--cost", "latency",
            "--space", "default", "--trials", "2", "--latency-table", str(table), *TINY]
    assert main(argv) == 0
    study = optuna.load_study(study_name="lat", storage=storage)
    assert study.metric_names == ["accuracy", "latency_ms"]
    settings = settings_of(study)
    assert settings["cost"] == "latency" and "latency_table" in settings
    assert settings["latency_table"]["runtime"] == "tflite"
    assert settings["latency_table"]["calibration"] is not None  # the space's, stored with it
    costs = CostModel.of_settings(settings)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 2
    for trial in done:
        arch_key = trial.user_attrs[TrialAttrs.ARCHITECTURE]
        from poolnas.spaces import Architecture

        predicted = costs.objective(Architecture.from_key(arch_key))
        assert trial.values[1] == pytest.approx(predicted)  # exact, from the stored table
        assert trial.user_attrs[TrialAttrs.LATENCY_MS] == pytest.approx(predicted, abs=1e-6)
        assert trial.user_attrs[TrialAttrs.FLOPS] > 1000  # FLOPs kept beside it
    capsys.readouterr()
    assert main(["front", "--storage", storage, "--study", "lat", "--format", "json"]) == 0
    front = json.loads(capsys.readouterr().out)
    assert front and all(r["latency_ms"] > 0 and r["flops"] > 1000 for r in front)
    assert main(["front", "--storage", storage, "--study", "lat", "--explain"]) == 0
    assert " ms " in capsys.readouterr().out.splitlines()[0] + " "
    assert main(["export", "--storage", storage, "--study", "lat", "--out",
                 str(tmp_path / "models")]) == 0
    manifest = json.loads((tmp_path / "models" / "manifest.json").read_text())
    assert all(m["latency_ms"] > 0 and m["flops"] > 1000 for m in manifest["models"])
    assert main(["report", "--storage", storage, "--study", "lat", "--out",
                 str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert "latency ms" in page and "predicted latency" in page and "calibrated on 20" in page
    capsys.readouterr()
    # Resuming with another cost is refused, naming the option.
    assert main([*argv[:5], "--cost", "flops", "--trials", "3", *TINY]) == 2
    assert "--cost" in _one_error_line(capsys)


def test_max_latency_needs_latency_cost(capsys):
    assert main(["search", "--max-latency", "1", "--trials", "1"]) == 2
    assert "--max-latency is a budget of --cost latency" in _one_error_line(capsys)


def test_a_table_without_the_spaces_calibration_is_refused(capsys, tmp_path):
    from poolnas.evaluators import cached_table, space_kernels
    from poolnas.spaces import default_space

    table = tmp_path / "kernels-only.json"
    cached_table(space_kernels(default_space(), (8, 8, 1), 10, input_scale=0.0625), "tflite",
                 path=table, warmup=1, runs=2, repeats=2, tolerance=100.0)
    storage = f"sqlite:///{tmp_path / 'lat.db'}"
    assert main(["search", "--storage", storage, "--study", "lat", "--cost", "latency",
                 "--space", "default", "--trials", "1", "--latency-table", str(table),
                 *TINY]) == 2
    assert "lacks the space's calibration" in _one_error_line(capsys)
    assert not (tmp_path / "lat.db").exists() or not optuna.get_all_study_names(storage)
