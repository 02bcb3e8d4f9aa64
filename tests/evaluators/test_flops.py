"""The analytic counter against TensorFlow's profiler, to the last FLOP."""

from __future__ import annotations

import random

import keras
import pytest

from poolnas.evaluators import count_cost, layer_costs, profiler_flops
from poolnas.spaces import (
    MERGES,
    OPS,
    SKIPS,
    STEMS,
    Architecture,
    DownsamplingPoint,
    SearchSpace,
    build_model,
    catalogue_space,
)


def _check(arch: Architecture, input_shape=(8, 8, 1), classes=10, **kwargs) -> None:
    model = build_model(arch, input_shape, classes, **kwargs)
    cost = count_cost(model)
    assert cost.flops == profiler_flops(model), arch.key
    assert cost.params == model.count_params(), arch.key


@pytest.mark.parametrize("op", SearchSpace().ops[0])
@pytest.mark.parametrize("skip", SearchSpace().skips[0])
def test_every_op_and_skip_of_the_default_space(op: str, skip: str) -> None:
    """Each (op, skip) of the 3-point default space, at every point at once."""
    point = f"{op}+{skip}"
    _check(Architecture.from_key(f"conv3:16x1/{point}:32x1/{point}:64x1/{point}:128x1"),
           input_scale=1 / 16)


def _shortcuts():
    for skip in SKIPS:
        for merge in MERGES if skip != "none" else ("add",):
            yield skip, merge


@pytest.mark.parametrize("stem", list(STEMS))
@pytest.mark.parametrize("op", list(OPS))
def test_every_op_skip_merge_and_stem(stem: str, op: str) -> None:
    """The whole catalogue: every op x skip x merge x stem on a small input."""
    for skip, merge in _shortcuts():
        arch = Architecture((DownsamplingPoint(op, skip, merge, width=12, blocks=2),),
                            stem=stem, width=4, blocks=1)
        model = build_model(arch, (6, 6, 2), 3)
        side = 3 if stem == "conv3" else 2
        assert model.get_layer("global_avg_pool").input.shape[1:] == (side, side, 12)
        cost = count_cost(model)
        assert cost.flops == profiler_flops(model), arch.key
        assert cost.params == model.count_params(), arch.key


def test_random_samples_of_larger_spaces() -> None:
    rng = random.Random(7)
    space = catalogue_space().narrowed(widths=(8, (16, 24), (32, 48)), depths=(1, (1, 2), 1))
    archs = list(space)
    for arch in rng.sample(archs, 12):
        _check(arch, input_shape=(rng.choice([8, 9, 12]), 8, rng.choice([1, 3])),
               classes=rng.choice([2, 10]), input_scale=1 / 255)


def test_macs_and_layer_split() -> None:
    model = build_model(Architecture.from_key("conv3:4x0/conv+projection:8x1"), (4, 4, 1), 2)
    costs = {c.name: c.cost for c in layer_costs(model)}
    # stem 3x3, 1 -> 4 channels at 4x4: 9*1*4*16 MACs, 2 FLOPs each.
    assert costs["stem_conv"].macs == 9 * 4 * 16 and costs["stem_conv"].flops == 2 * 9 * 4 * 16
    assert costs["down1_skip_proj_conv"].macs == 4 * 8 * 4
    assert costs["classifier"].macs == 8 * 2
    assert sum(c.macs for c in costs.values()) == count_cost(model).macs


def test_unknown_layers_are_refused() -> None:
    from poolnas.spaces import PoolnasError

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.LayerNormalization()(inputs))
    with pytest.raises(PoolnasError, match="LayerNormalization"):
        count_cost(model)


def test_bias_and_plain_dense_count_like_the_profiler() -> None:
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(3, 3, use_bias=True)(inputs)
    x = keras.layers.DepthwiseConv2D(3, use_bias=True, depth_multiplier=2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(4, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    assert count_cost(model).flops == profiler_flops(model)
    assert count_cost(model).params == model.count_params()


def test_augmentation_layers_cost_nothing_at_inference() -> None:
    """--augment adds random flip and shift layers: identity at inference, so the FLOPs (and the
    predictions) are those of the same model without them."""
    import numpy as np

    arch = Architecture.from_key("conv3:8x1/max+pool_projection:16x1/conv+projection:16x1")
    keras.utils.set_random_seed(0)
    plain = build_model(arch, (8, 8, 3), 4, input_scale=1 / 255)
    keras.utils.set_random_seed(0)
    augmented = build_model(arch, (8, 8, 3), 4, input_scale=1 / 255, augment=True)
    assert {"augment_flip", "augment_shift"} <= {layer.name for layer in augmented.layers}
    cost = count_cost(augmented)
    assert cost.flops == profiler_flops(augmented) == count_cost(plain).flops
    assert cost.params == augmented.count_params() == plain.count_params()
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3)).astype("float32")
    augmented.set_weights(plain.get_weights())
    np.testing.assert_allclose(augmented(images, training=False), plain(images, training=False),
                               rtol=1e-6)
