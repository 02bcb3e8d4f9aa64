"""FLOPs, MACs and parameters of a Keras model, counted analytically from its layers.

This module is the one place where the FLOPs convention lives. It is TensorFlow's own profiler
convention on the frozen inference graph at batch 1 (``tf.compat.v1.profiler`` with
``float_operation()``), which the tests check to the last FLOP:

=========================  ===================================================================
layer                      FLOPs (N = output elements, C = channels)
=========================  ===================================================================
Conv2D                     2·Kh·Kw·(Cin/groups)·Cout·Hout·Wout, + N for the bias
DepthwiseConv2D            2·Kh·Kw·Cin·multiplier·Hout·Wout, + N for the bias
Dense                      2·in·out, + out for the bias, + 5·out for a softmax
BatchNormalization         2·N + 6·C (Keras 3 inference: x·a + b with a, b from 4 C-vectors;
                           the profiler counts its Rsqrt as 2 per element)
Max/AveragePooling2D       window area per output element
GlobalAveragePooling2D     1 per input element (``Mean``)
Add                        1 per output element per extra input
Rescaling                  2 per element (multiply, add)
ReLU, Concatenate,         0
Reshape, Permute,
ZeroPadding, augmentation
=========================  ===================================================================

MACs are the multiply-accumulates of convolutions and dense layers (what many papers call
"FLOPs"). Parameters are all weights, trainable or not, so they equal ``model.count_params()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from poolnas.spaces import PoolnasError

if TYPE_CHECKING:
    import keras

_FREE = frozenset(
    {
        "InputLayer",
        "ReLU",
        "Concatenate",
        "Reshape",
        "Permute",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Dropout",
        "RandomFlip",
        "RandomTranslation",
        "Flatten",
    }
)
_SOFTMAX_FLOPS_PER_CLASS = 5


@dataclass(frozen=True)
class Cost:
    """What one layer, a group of layers, or a whole model costs at batch 1."""

    flops: int = 0
    macs: int = 0
    params: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.macs + other.macs, self.params + other.params)


@dataclass(frozen=True)
class LayerCost:
    """The cost of one named layer."""

    name: str
    kind: str
    cost: Cost


def _elements(shape) -> int:
    return math.prod(int(d) for d in shape[1:])


def _layer_cost(layer) -> Cost:
    kind = type(layer).__name__
    if kind in _FREE:
        return Cost()
    out_shape = layer.output.shape
    n_out = _elements(out_shape)
    if kind == "Conv2D":
        kh, kw = layer.kernel_size
        cin = int(layer.input.shape[-1]) // layer.groups
        macs = kh * kw * cin * n_out
        params = kh * kw * cin * layer.filters + (layer.filters if layer.use_bias else 0)
        return Cost(2 * macs + (n_out if layer.use_bias else 0), macs, params)
    if kind == "DepthwiseConv2D":
        kh, kw = layer.kernel_size
        macs = kh * kw * n_out
        channels = int(layer.input.shape[-1])
        out_channels = channels * layer.depth_multiplier
        params = kh * kw * out_channels + (out_channels if layer.use_bias else 0)
        return Cost(2 * macs + (n_out if layer.use_bias else 0), macs, params)
    if kind == "Dense":
        fan_in, units = int(layer.input.shape[-1]), layer.units
        rows = _elements(layer.input.shape) // fan_in
        macs = rows * fan_in * units
        flops = 2 * macs + (rows * units if layer.use_bias else 0)
        activation = getattr(layer.activation, "__name__", "")
        if activation == "softmax":
            flops += _SOFTMAX_FLOPS_PER_CLASS * rows * units
        elif activation not in ("linear", "relu"):
            raise PoolnasError(f"cannot count FLOPs of a Dense layer with {activation!r}")
        return Cost(flops, macs, fan_in * units + (units if layer.use_bias else 0))
    if kind == "BatchNormalization":
        if not (layer.center and layer.scale):
            raise PoolnasError(
                f"cannot count FLOPs of {layer.name}: BatchNorm without scale/center"
            )
        channels = int(out_shape[-1])
        return Cost(2 * n_out + 6 * channels, 0, 4 * channels)
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        return Cost(math.prod(layer.pool_size) * n_out)
    if kind == "GlobalAveragePooling2D":
        return Cost(_elements(layer.input.shape))
    if kind == "Add":
        return Cost((len(layer.input) - 1) * n_out)
    if kind == "Rescaling":
        return Cost(2 * n_out)
    raise PoolnasError(
        f"cannot count FLOPs of layer {layer.name!r} ({kind}): poolnas knows only the layers its "
        "builder uses"
    )


def layer_costs(model: keras.Model) -> list[LayerCost]:
    """The cost of every layer of a functional ``model``, in layer order."""
    return [LayerCost(layer.name, type(layer).__name__, _layer_cost(layer))
            for layer in model.layers]


def count_cost(model: keras.Model) -> Cost:
    """Total FLOPs, MACs and parameters of ``model`` at batch 1.

    FLOPs equal TensorFlow's profiler total on the frozen inference graph; parameters equal
    ``model.count_params()``.

    Raises:
        PoolnasError: The model has a layer outside the convention's table.
    """
    return sum((entry.cost for entry in layer_costs(model)), Cost())
