"""Catalogue ops in trained and saved models: fixed filters stay fixed, files load safely."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from poolnas.spaces import OPS, Architecture, build_model
from poolnas.spaces._builder import BLUR_FILTER


def test_blur_filter_is_unchanged_by_training() -> None:
    keras.utils.set_random_seed(0)
    model = build_model(Architecture.from_key("conv3:8x1/blur_max+pool_pad:16x1"), (8, 8, 1), 3)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    before = {w.path: np.array(w) for w in model.weights}
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=32)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    blur = model.get_layer("down1_blur_max_blur").weights[0]
    np.testing.assert_array_equal(np.array(blur), before[blur.path])
    np.testing.assert_allclose(np.array(blur)[:, :, 5, 0], BLUR_FILTER)
    stem = model.get_layer("stem_conv").weights[0]
    assert not np.array_equal(np.array(stem), before[stem.path])  # the rest did train


@pytest.mark.parametrize("op", list(OPS))
def test_every_op_saves_and_loads_in_safe_mode(op: str, tmp_path) -> None:
    arch = Architecture.from_key(f"conv3s2:8x0/{op}+pool_projection.concat:16x1/{op}+pool_pad:24x1")
    model = build_model(arch, (9, 9, 3), 4, input_scale=1 / 255)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(2).integers(0, 256, size=(3, 9, 9, 3)).astype("uint8")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
