from __future__ import annotations

import keras
import numpy as np
import pytest

from poolnas.spaces import Architecture, PoolnasError, build_model
from poolnas.spaces._builder import BLUR_FILTER, space_to_depth


def test_layer_names_say_what_they_are() -> None:
    model = build_model(
        Architecture.from_key("conv3:16x1/max+projection:32x2/blur_max+pool_pad.concat:64x1"),
        (8, 8, 1), 10, input_scale=1 / 16,
    )
    names = {layer.name for layer in model.layers}
    for expected in ("rescale", "stem_conv", "stage0_block0_conv1_conv", "down1_max_pool",
                     "down1_skip_proj_conv", "stage1_block0_add", "stage1_block1_add",
                     "down2_blur_max_blur", "down2_skip_avg_pool", "stage2_block0_concat",
                     "global_avg_pool", "classifier"):
        assert expected in names
    assert model.output_shape == (None, 10)


def test_only_builtin_layers() -> None:
    model = build_model(
        Architecture.from_key("conv7s2:8x0/space_to_depth+pool_pad:32x1"), (8, 8, 3), 4
    )
    for layer in model.layers:
        assert type(layer).__module__.startswith("keras.src.layers"), layer


def test_space_to_depth_is_lossless() -> None:
    inputs = keras.Input((6, 4, 3))
    outputs = space_to_depth(inputs, "s2d")
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(2, 6, 4, 3)).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 3, 2, 12)
    # Inverse: channel (dy*2+dx)*C + c of output pixel (i, j) is input pixel (2i+dy, 2j+dx).
    back = y.reshape(2, 3, 2, 2, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 6, 4, 3)
    np.testing.assert_array_equal(back, x)
    assert np.sort(y.ravel()).tolist() == np.sort(x.ravel()).tolist()


def test_odd_sizes_halve_the_same_way_on_every_path() -> None:
    for op in ("max", "avg3x3", "conv", "strided", "blur_max", "space_to_depth"):
        for skip in ("projection", "pool_projection", "pool_pad"):
            arch = Architecture.from_key(f"conv3:8x0/{op}+{skip}:16x1/{op}+{skip}.concat:24x1")
            model = build_model(arch, (7, 5, 1), 3)
            assert model.get_layer("global_avg_pool").input.shape[1:] == (2, 2, 24)


def test_input_too_small() -> None:
    with pytest.raises(PoolnasError, match="allows at most 2"):
        build_model(Architecture.from_key("conv3s2:8x0/max+none:16x1/max+none:32x1"), (4, 4, 1), 3)


def test_blur_filter_is_fixed() -> None:
    model = build_model(Architecture.from_key("conv3:8x0/blur_max+none:16x1"), (8, 8, 1), 3)
    blur = model.get_layer("down1_blur_max_blur")
    assert not blur.trainable and blur.count_params() == 9 * 8
    np.testing.assert_allclose(blur.get_weights()[0][:, :, 3, 0], BLUR_FILTER)
    assert BLUR_FILTER.sum() == pytest.approx(1.0)
