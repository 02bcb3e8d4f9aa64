"""The per-kernel latency model: kernels from the anatomy, the table's stability check, and
predictions that are exact for the table. Nothing here asserts on a time."""

from __future__ import annotations

import json

import pytest

from poolnas.evaluators import (
    Calibration,
    Kernel,
    LatencyModel,
    LatencyTable,
    UnstableLatency,
    architecture_kernels,
    cached_table,
    calibrate,
    convert_tflite,
    measure_model,
    measure_table,
    space_kernels,
)
from poolnas.evaluators._latency import OVERHEAD_KERNEL, kernel_set_key
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


def test_in_graph_time_is_what_a_copy_adds_and_both_series_must_agree():
    table = LatencyTable("keras", tolerance=0.10)
    # One copy 1.0 ms, eight copies 2.4 ms: the call's 0.8 ms cancels, 0.2 ms per copy.
    assert table.record("k@1", [1.0, 1.0, 1.0], [2.4, 2.4, 2.4], copies=8) == pytest.approx(0.2)
    assert table.alone["k@1"] == pytest.approx(1.0)
    # Noise can make the copies look free; a kernel never costs less than nothing.
    assert table.record("z@1", [1.0, 1.0], [0.99, 0.99], copies=8) == 0.0
    with pytest.raises(UnstableLatency, match=r"x8: repeat medians"):
        table.record("j@1", [1.0, 1.0, 1.0], [2.0, 3.0, 2.5], copies=8)
    assert "j@1" not in table.kernels


def test_a_kernel_model_of_copies_keeps_them_apart():
    kernel = architecture_kernels(Architecture.from_key("conv3:8x1/conv+none:8x1"), SHAPE, 3)[0]
    model = kernel.model(copies=3)
    assert len(model.inputs) == 3 and len(model.outputs) == 3
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert len(convs) == 3 and len({id(c.kernel) for c in convs}) == 3  # own weights


def test_a_calibration_is_fitted_per_space_and_travels_with_its_subset(tmp_path):
    kernels = space_kernels(TINY_SPACE, SHAPE, 10)
    table = measure_table(kernels, "tflite", warmup=1, runs=3, repeats=2, tolerance=100.0)
    assert table.calibration is None and not table.calibrations
    fitted = calibrate(table, TINY_SPACE, SHAPE, 10, architectures=6, warmup=1, runs=3,
                       repeats=2)
    assert isinstance(fitted, Calibration) and fitted.architectures == 6 and fitted.slope > 0
    assert table.calibrations == {kernel_set_key(kernels): fitted}
    own = table.subset(kernels)
    assert own.calibration == fitted
    assert table.subset(kernels[:3]).calibration is None  # another set of kernels: none
    arch = next(iter(TINY_SPACE))
    arch_kernels = architecture_kernels(arch, SHAPE, 10)
    total = own.kernel_sum(arch_kernels)
    assert own.predict(arch_kernels) == pytest.approx(
        max(fitted.intercept_ms + fitted.slope * total, own.overhead_ms))
    assert LatencyModel(own, SHAPE, 10)(arch) == pytest.approx(own.predict(arch_kernels))
    # Without its calibration a table predicts one call's fixed cost plus the kernel sum.
    assert table.predict(arch_kernels) == pytest.approx(table.overhead_ms + total)
    again = LatencyTable.from_dict(own.as_dict())
    assert again.calibration == fitted and again.kernels == own.kernels


def test_a_first_format_table_still_predicts_and_its_cache_is_measured_anew(tmp_path):
    legacy = {"format": 1, "machine": "m", "runtime": "keras", "runtime_version": "",
              "batch_size": 1, "threads": 1, "tolerance": 0.25,
              "kernels": {OVERHEAD_KERNEL.key: {"ms": 0.2, "spread": 0.0},
                          "a@1": {"ms": 0.5, "spread": 0.0}}}
    table = LatencyTable.from_dict(legacy)
    assert table.method == "alone"
    kernel = Kernel((("a", ()),), ((1,),))
    assert kernel.key == "a@1"
    assert table.predict([kernel, kernel]) == pytest.approx(0.2 + 2 * 0.3)  # as it always was
    path = tmp_path / "cache.json"
    path.write_text(json.dumps(legacy))
    kernels = space_kernels(TINY_SPACE, SHAPE, 10)[:2]
    fresh = cached_table(kernels, "keras", path=path, warmup=1, runs=2, repeats=2,
                         tolerance=100.0)
    assert fresh.method == "in_graph" and "a@1" not in fresh.kernels
    assert json.loads(path.read_text())["format"] == 2 and not fresh.missing(kernels)


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
