"""The analytic counters against TensorFlow's profiler, to the last FLOP: the count read off a
built model, and the closed form from the architecture alone (which must equal it)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import keras
import pytest

from poolnas.evaluators import (
    architecture_cost,
    cost_table,
    count_cost,
    layer_costs,
    profiler_flops,
)
from poolnas.evaluators._flops import Cost, CostLayers
from poolnas.spaces import (
    MERGES,
    OPS,
    SKIPS,
    STEMS,
    Architecture,
    DownsamplingPoint,
    PoolnasError,
    SearchSpace,
    build_model,
    catalogue_space,
    classifier_head,
    point_stage,
    stem_stage,
)

POOLBENCH_TABLE = Path(__file__).resolve().parents[2] / "benchmarks/data/poolbench_digits.jsonl"
#: PoolBench-digits' space (benchmarks/poolbench.py): digits are 8x8x1, 10 classes, scaled 1/16.
POOLBENCH = SearchSpace(points=3, ops=("max", "avg", "conv"),
                        skips=("none", "projection", "pool_pad"), widths=(8, 16, 32, 64))


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
        assert architecture_cost(arch, (6, 6, 2), 3) == cost, arch.key
        assert _counted_layers(arch, (6, 6, 2), 3) == _nonzero(layer_costs(model)), arch.key


def _nonzero(entries) -> dict[str, Cost]:
    return {entry.name: entry.cost for entry in entries if entry.cost != Cost()}


def _counted_layers(arch: Architecture, input_shape, classes: int) -> dict[str, Cost]:
    """The closed form's layers, one by one, with their names."""
    layers = CostLayers(record=True)
    x = stem_stage(layers, input_shape, arch)
    channels = arch.width
    for index, point in enumerate(arch.points, start=1):
        x = point_stage(layers, x, point, channels, index)
        channels = point.width
    classifier_head(layers, x, classes)
    return _nonzero(layers.layers)


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


# ---------------------------------------------------------------------- the closed form
def _built(arch: Architecture, input_shape, classes: int, **kwargs) -> Cost:
    keras.backend.clear_session()
    return count_cost(build_model(arch, input_shape, classes, **kwargs))


def test_closed_form_equals_the_built_model_on_sampled_catalogue_architectures() -> None:
    rng = random.Random(13)
    archs = rng.sample(list(catalogue_space()), 60)
    for arch in archs:
        shape = rng.choice([(8, 8, 1), (9, 9, 3), (7, 7, 1), (11, 8, 2), (32, 32, 3),
                            (28, 28, 1)])
        if 2**arch.halvings > min(shape[:2]):
            shape = (9, 9, 3)
        scale, offset = rng.choice([(1.0, 0.0), (1 / 255, 0.0), (1 / 16, -0.5)])
        classes = rng.choice([2, 10])
        assert architecture_cost(arch, shape, classes, input_scale=scale,
                                 input_offset=offset) == _built(
            arch, shape, classes, input_scale=scale, input_offset=offset), (arch.key, shape)


def test_closed_form_equals_the_built_model_on_poolbench() -> None:
    rng = random.Random(5)
    for arch in rng.sample(list(POOLBENCH), 6):
        assert (architecture_cost(arch, (8, 8, 1), 10, input_scale=1 / 16)
                == _built(arch, (8, 8, 1), 10, input_scale=1 / 16)), arch.key


def test_cost_table_equals_every_poolbench_row() -> None:
    """The table's rows were counted on built models (count_cost) when it was made."""
    table = cost_table(POOLBENCH, (8, 8, 1), 10, input_scale=1 / 16)
    rows = [json.loads(line) for line in POOLBENCH_TABLE.read_text().splitlines()]
    assert len(rows) == len(table) == 729
    for row in rows:
        assert table[row["key"]] == Cost(row["flops"], row["macs"], row["params"]), row["key"]


def test_closed_form_equals_the_profiler() -> None:
    for key, shape in (("conv7s2:8x1/blur_max+pool_pad.concat:16x2/space_to_depth+projection:24x1",
                        (9, 9, 3)),
                       ("conv3:8x0/avg3x3+pool_projection:16x1/strided+none:16x1", (7, 7, 1)),
                       ("conv3s2:8x1/max3x3+projection.concat:16x1/conv+pool_pad:32x2",
                        (32, 32, 3))):
        keras.backend.clear_session()
        arch = Architecture.from_key(key)
        model = build_model(arch, shape, 10, input_scale=1 / 255)
        assert architecture_cost(arch, shape, 10, input_scale=1 / 255).flops == profiler_flops(
            model), key


def test_cost_table_is_every_architecture_of_the_space_in_order() -> None:
    space = catalogue_space()
    table = cost_table(space, (11, 9, 3), 4, input_scale=1 / 255)
    archs = list(space)
    assert list(table) == [arch.key for arch in archs] and len(table) == space.size
    for arch in archs:
        assert table[arch.key] == architecture_cost(arch, (11, 9, 3), 4, input_scale=1 / 255)


def test_cost_table_with_several_widths_and_depths() -> None:
    space = SearchSpace(points=2, ops=("max", "strided"), skips=("none", "pool_pad"),
                        merges=("concat", "add"), widths=((4, 8), (12, 16), 24),
                        depths=((0, 1), (1, 2), 1))
    table = cost_table(space, (8, 8, 1), 3)
    assert list(table) == [arch.key for arch in space]
    rng = random.Random(2)
    for key in rng.sample(list(table), 5):
        assert table[key] == _built(Architecture.from_key(key), (8, 8, 1), 3), key


def test_closed_form_refuses_what_the_builder_refuses() -> None:
    arch = Architecture.from_key("conv3s2:8x0/max+none:16x1/max+none:32x1")
    with pytest.raises(PoolnasError, match="allows at most 2"):
        architecture_cost(arch, (4, 4, 1), 3)
    with pytest.raises(PoolnasError, match="at least 2 classes"):
        architecture_cost(arch, (8, 8, 1), 1)
    with pytest.raises(PoolnasError, match="allows at most"):
        cost_table(catalogue_space(), (4, 4, 1), 3)
    with pytest.raises(PoolnasError, match="height, width, channels"):
        cost_table(catalogue_space(), (8, 8), 3)
