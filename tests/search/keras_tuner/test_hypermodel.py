"""PoolNASHyperModel: the space as a KerasTuner HyperModel, run by KerasTuner's own tuners."""

from __future__ import annotations

import subprocess
import sys

import keras
import keras_tuner
import numpy as np
import pytest

from poolnas.evaluators import load_dataset
from poolnas.search.keras_tuner import PoolNASHyperModel
from poolnas.search.keras_tuner._hypermodel import HYPERMODEL_ATTR
from poolnas.spaces import Architecture, PoolnasError, SearchSpace, build_model

#: 36 small architectures with four varying parameters (enough for the Bayesian tuner's model).
SMALL = SearchSpace(points=2, ops=("max", "avg", "conv"), skips=("none", "projection"),
                    widths=(8, 16, 32))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=256)


def hypermodel(data, space: SearchSpace = SMALL, **options) -> PoolNASHyperModel:
    return PoolNASHyperModel(space, data.input_shape, data.num_classes,
                             input_scale=data.input_scale, input_offset=data.input_offset,
                             **options)


def test_one_choice_per_parameter_of_the_space(digits) -> None:
    space = SearchSpace()  # the default space: every point varies op and skip
    model = hypermodel(digits, space)
    hp = keras_tuner.HyperParameters()
    model.declare_hyperparameters(hp)
    declared = {p.name: tuple(p.values) for p in hp.space}
    assert declared == space.parameters()
    assert list(declared) == list(space.parameters())  # same order as the Optuna search
    assert all(isinstance(p, keras_tuner.engine.hyperparameters.Choice) for p in hp.space)
    assert getattr(hp, HYPERMODEL_ATTR) is model


@pytest.mark.parametrize("key", [
    "conv3:16x1/max+none:32x1/avg+projection:64x1/conv+pool_pad:128x1",
    "conv3:16x1/conv+pool_projection:32x1/max+pool_pad:64x1/avg+none:128x1",
])
def test_build_is_the_builders_model_compiled_for_raw_images(digits, key: str) -> None:
    space = SearchSpace()
    arch = Architecture.from_key(key)
    hp = keras_tuner.HyperParameters()
    hp.values.update(space.params_of(arch))
    model = hypermodel(digits, space).build(hp)
    reference = build_model(arch, digits.input_shape, digits.num_classes,
                            input_scale=digits.input_scale, input_offset=digits.input_offset)
    assert model.get_config() == reference.get_config()
    assert "rescale" in [layer.name for layer in model.layers]
    assert model.optimizer is not None and model.optimizer.built
    assert model.loss == "sparse_categorical_crossentropy"


def test_architecture_of_a_trial_ignores_the_tuners_own_entries(digits) -> None:
    model = hypermodel(digits)
    arch = next(iter(SMALL))
    values = {**SMALL.params_of(arch), "tuner/epochs": 3, "tuner/initial_epoch": 1}
    assert model.architecture(values) == arch
    with pytest.raises(PoolnasError, match="no value for point1_op"):
        model.architecture({})
    with pytest.raises(PoolnasError, match="not in this space"):
        model.architecture({**values, "point1_op": "blur_max"})


@pytest.mark.parametrize(("arguments", "message"), [
    ({"input_shape": (2, 2, 1)}, "halves the resolution"),
    ({"input_shape": (8, 8)}, "input_shape must be"),
    ({"num_classes": 1}, "at least 2 classes"),
    ({"optimizer": 3}, "optimizer must be"),
    ({"learning_rate": 0}, "learning_rate must be"),
])
def test_bad_arguments_are_user_errors(arguments, message: str) -> None:
    options = {"input_shape": (8, 8, 1), "num_classes": 10, **arguments}
    shape, classes = options.pop("input_shape"), options.pop("num_classes")
    with pytest.raises(PoolnasError, match=message):
        PoolNASHyperModel(SMALL, shape, classes, **options)


def test_keras_tuner_is_imported_only_for_the_hypermodel() -> None:
    code = ("import sys, poolnas.spaces, poolnas.search, poolnas.search.keras_tuner; "
            "assert 'keras_tuner' not in sys.modules and 'tensorflow' not in sys.modules; "
            "poolnas.search.TUNERS; poolnas.search.keras_tuner.KerasTunerRunner; "
            "assert 'keras_tuner' not in sys.modules; "
            "assert not hasattr(poolnas.spaces, 'PoolNASHyperModel'); "
            "poolnas.search.PoolNASHyperModel; assert 'keras_tuner' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _tuner(kind: str, model: PoolNASHyperModel, directory) -> keras_tuner.Tuner:
    common = {"objective": "val_accuracy", "seed": 1, "directory": str(directory),
              "project_name": kind}
    if kind == "random":
        return keras_tuner.RandomSearch(model, max_trials=2, **common)
    if kind == "bayesian":
        return keras_tuner.BayesianOptimization(model, max_trials=2, num_initial_points=1,
                                                **common)
    tuner = keras_tuner.Hyperband(model, max_epochs=2, factor=2, **common)
    # The first bracket: two 1-epoch trials, then the better one trained on to epoch 2.
    tuner.oracle.max_trials = 3
    return tuner


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["random", "bayesian", "hyperband"])
def test_keras_tuners_search_the_space_unchanged(digits, tmp_path, kind: str) -> None:
    model = hypermodel(digits, seed=0)
    tuner = _tuner(kind, model, tmp_path)
    tuner.search(digits.train_dataset(128, seed=0), validation_data=digits.val_dataset(128),
                 epochs=1, shuffle=False, verbose=0)

    trials = list(tuner.oracle.trials.values())
    assert len(trials) == (3 if kind == "hyperband" else 2)
    for trial in trials:
        assert trial.status == "COMPLETED"
        assert 0.0 <= trial.score <= 1.0
        assert SMALL.contains(model.architecture(trial.hyperparameters))
    if kind == "hyperband":
        continued = [t for t in trials if "tuner/trial_id" in t.hyperparameters.values]
        assert len(continued) == 1
        assert continued[0].hyperparameters.values["tuner/epochs"] == 2
        assert model.fits[-1]["epochs"] == 2  # trained on from the first round's checkpoint

    # The best model exports like poolnas' own: plain Keras, safe mode, raw images in.
    best = tuner.get_best_models()[0]
    path = tmp_path / "best.keras"
    best.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    images = np.asarray(digits.x_val[:16])
    np.testing.assert_allclose(loaded.predict(images, verbose=0), best.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-6)
    arch = model.architecture(tuner.get_best_hyperparameters()[0])
    reference = build_model(arch, digits.input_shape, digits.num_classes,
                            input_scale=digits.input_scale, input_offset=digits.input_offset)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in reference.layers]
