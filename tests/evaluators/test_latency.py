"""The per-kernel latency model: kernels from the anatomy, the table's stability check, and
predictions that are exact for the table. Nothing here asserts on a time."""

from __future__ import annotations

import pytest

from poolnas.evaluators import (
    LatencyModel,
    LatencyTable,
    UnstableLatency,
    architecture_kernels,
    cached_table,
    convert_tflite,
    measure_model,
    measure_table,
    space_kernels,
)
from poolnas.evaluators._latency import OVERHEAD_KERNEL
from poolnas.spaces import Architecture, PoolnasError, SearchSpace, build_model

SHAPE = (8, 8, 1)
TINY_SPACE = SearchSpace(points=1, ops=("max", "avg", "conv"), skips=("none", "projection"),
                         widths=(4, 8), depths=(1, 1))


def test_kernels_fuse_like_a_runtime_and_cover_every_architecture():
    arch = Architecture.from_key("conv3:8x1/max+projection:16x2")
    keys = [k.key for k in architecture_kernels(arch, SHAPE, 10)]
    assert keys[0] == "conv(8,3,1)+batch_norm+relu@8x8x1"
    assert "max_pool(2,2)@8x8x8" in keys
    assert "add+relu@4x4x16|4x4x16" in keys
    assert keys[-1] == "dense(10,softmax)@16"
    assert not any(k.startswith(("batch_norm", "relu")) for k in keys)  # all fused
    every = {k.key for k in space_kernels(TINY_SPACE, SHAPE, 10)}
    for arch in TINY_SPACE:
        assert {k.key for k in architecture_kernels(arch, SHAPE, 10)} <= every


def test_a_kernel_model_is_built_from_the_builders_layers():
    kernel = architecture_kernels(Architecture.from_key("conv3:8x1/conv+none:8x1"), SHAPE, 3)[0]
    model = kernel.model()
    assert [type(layer).__name__ for layer in model.layers[1:]] == [
        "Conv2D", "BatchNormalization", "ReLU"]


def test_the_table_refuses_repeats_that_disagree():
    table = LatencyTable("keras", tolerance=0.10)
    assert table.record("k@1", [1.00, 1.05, 1.02]) == pytest.approx(1.02)
    with pytest.raises(UnstableLatency, match="disagree by 100%"):
        table.record("j@1", [1.0, 2.0, 1.5])
    assert "j@1" not in table.kernels


def test_measuring_with_a_zero_tolerance_stores_nothing(tmp_path):
    kernels = space_kernels(TINY_SPACE, SHAPE, 10)[:2]
    path = tmp_path / "table.json"
    with pytest.raises(UnstableLatency):
        cached_table(kernels, "keras", path=path, warmup=1, runs=3, repeats=3, tolerance=0.0,
                     retries=0)
    assert not path.exists()


@pytest.mark.parametrize("runtime", ["keras", "tflite"])
def test_prediction_is_exact_for_its_table_and_stored_tables_round_trip(tmp_path, runtime):
    kernels = space_kernels(TINY_SPACE, SHAPE, 10)
    path = tmp_path / f"{runtime}.json"
    table = cached_table(kernels, runtime, path=path, warmup=1, runs=3, repeats=2,
                         tolerance=100.0)
    assert not table.missing(kernels) and path.exists()
    again = LatencyTable.load(path)
    assert again.kernels == table.kernels and again.runtime == runtime
    model = LatencyModel(again, SHAPE, 10)
    arch = next(iter(TINY_SPACE))
    by_kernels = table.predict(architecture_kernels(arch, SHAPE, 10))
    assert model(arch) == pytest.approx(by_kernels) and model(arch) == model(arch)
    assert model(arch) >= table.overhead_ms > 0
    # A second call measures nothing and leaves the file as it is.
    stamp = path.stat().st_mtime_ns
    cached_table(kernels, runtime, path=path)
    assert path.stat().st_mtime_ns == stamp


def test_a_missing_kernel_is_an_error_not_a_guess():
    table = LatencyTable("keras")
    table.record(OVERHEAD_KERNEL.key, [0.1])
    arch = Architecture.from_key("conv3:8x1/conv+none:8x1")
    with pytest.raises(PoolnasError, match="not in the keras latency table"):
        LatencyModel(table, SHAPE, 10)(arch)


def test_measure_model_states_median_iqr_and_repeats():
    model = build_model(Architecture.from_key("conv3:4x1/max+none:4x1"), SHAPE, 3)
    timing = measure_model(model, "tflite", warmup=1, runs=5, repeats=2)
    assert len(timing.repeat_medians_ms) == 2 and timing.runs == 5
    assert timing.median_ms > 0 and timing.iqr_ms >= 0 and timing.spread >= 0


def test_bad_runtime_and_batch_are_user_errors():
    with pytest.raises(PoolnasError, match="unknown runtime"):
        LatencyTable("onnx")
    with pytest.raises(PoolnasError, match="batch-size"):
        measure_table([], "keras", batch_size=0)


def test_a_model_tflite_cannot_convert_is_a_user_error():
    import keras

    inputs = keras.Input((4,), dtype="int64")
    model = keras.Model(inputs, keras.layers.Hashing(8)(inputs))
    with pytest.raises(PoolnasError, match="TFLite cannot convert"):
        convert_tflite(model)
