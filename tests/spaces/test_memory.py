"""release_training_graphs: a training leaves nothing in TensorFlow's gradient registry."""

from __future__ import annotations

import numpy as np
from tensorflow.python.framework import ops

from poolnas.search.keras_tuner import PoolNASHyperModel
from poolnas.spaces import Architecture, SearchSpace, release_training_graphs

SPACE = SearchSpace(points=1, ops=("max",), skips=("none", "projection"), widths=(8, 16))


def registrations() -> int:
    return sum(name.startswith("CustomGradient-") for name in ops._gradient_registry._registry)


def test_training_graphs_are_released_and_the_model_still_trains() -> None:
    hypermodel = PoolNASHyperModel(SPACE, (8, 8, 1), 10, seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 64)
    hp_values = SPACE.params_of(Architecture.from_key("conv3:8x1/max+projection:16x1"))

    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.values.update(hp_values)
    before = registrations()
    # Keras' own fit leaves one registration (its training graph) per trained model…
    leaky = hypermodel.build(hp)
    leaky.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert registrations() == before + 1
    # …released, there is none, and the model keeps training and predicting.
    before = registrations()
    model = hypermodel.build(hp)
    with release_training_graphs():
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    hypermodel.fit(hp, model, x, y, epochs=2, initial_epoch=1, batch_size=32, verbose=0)
    assert registrations() == before
    history = model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.predict(x[:4], verbose=0).shape == (4, 10)
    assert hypermodel.fits[-1]["epochs"] == 2
