"""TensorFlow's profiler count of a Keras model: the reference the analytic counter must equal.

Slow (it traces and freezes the model); used by tests, benchmarks and ``poolnas flops --verify``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def profiler_flops(model: keras.Model) -> int:
    """FLOPs of ``model`` at batch 1 as TensorFlow's profiler counts them on the frozen graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2_as_graph,
    )

    spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    frozen, _ = convert_variables_to_constants_v2_as_graph(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    info = tf.compat.v1.profiler.profile(
        graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options
    )
    return int(info.total_float_ops)
