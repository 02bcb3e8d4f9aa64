"""FLOPs, MACs and parameters: the convention, per layer, for Keras layers and for shapes.

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

Each row is one function (:func:`conv2d_cost`, :func:`batch_norm_cost`, …). Two counters use
them and nothing else: :func:`layer_costs` / :func:`count_cost` read the layers of a built Keras
model, and :class:`CostLayers` is the :class:`~poolnas.spaces.LayerSink` that the closed form
(``evaluators/_closed_form.py``) runs the network anatomy through, with shapes for tensors and
``same`` padding (a stride ``s`` turns ``n`` pixels into ``ceil(n / s)``).

MACs are the multiply-accumulates of convolutions and dense layers (what many papers call
"FLOPs"). Parameters are all weights, trainable or not, so they equal ``model.count_params()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


# ---------------------------------------------------------------------- the convention, per row
def conv2d_cost(kh: int, kw: int, cin: int, cout: int, hout: int, wout: int, *, bias: bool,
                groups: int = 1) -> Cost:
    """A ``Conv2D`` with ``cin`` input and ``cout`` output channels and an ``hout x wout``
    output."""
    fan_in = kh * kw * (cin // groups)
    outputs = hout * wout * cout
    macs = fan_in * outputs
    return Cost(2 * macs + (outputs if bias else 0), macs,
                fan_in * cout + (cout if bias else 0))


def depthwise_conv2d_cost(kh: int, kw: int, channels: int, multiplier: int, hout: int,
                          wout: int, *, bias: bool) -> Cost:
    """A ``DepthwiseConv2D`` over ``channels`` with ``multiplier`` filters each."""
    out_channels = channels * multiplier
    outputs = hout * wout * out_channels
    macs = kh * kw * outputs
    return Cost(2 * macs + (outputs if bias else 0), macs,
                kh * kw * out_channels + (out_channels if bias else 0))


def dense_cost(fan_in: int, units: int, *, rows: int = 1, bias: bool = True,
               activation: str = "linear") -> Cost:
    """A ``Dense`` layer applied to ``rows`` vectors of ``fan_in`` values.

    Raises:
        PoolnasError: An activation other than linear, ReLU or softmax.
    """
    macs = rows * fan_in * units
    flops = 2 * macs + (rows * units if bias else 0)
    if activation == "softmax":
        flops += _SOFTMAX_FLOPS_PER_CLASS * rows * units
    elif activation not in ("linear", "relu"):
        raise PoolnasError(f"cannot count FLOPs of a Dense layer with {activation!r}")
    return Cost(flops, macs, fan_in * units + (units if bias else 0))


def batch_norm_cost(elements: int, channels: int) -> Cost:
    """A ``BatchNormalization`` (with scale and centre) of ``elements`` values."""
    return Cost(2 * elements + 6 * channels, 0, 4 * channels)


def pooling2d_cost(window_area: int, out_elements: int) -> Cost:
    """A ``MaxPooling2D`` or ``AveragePooling2D``."""
    return Cost(window_area * out_elements)


def global_average_pooling_cost(in_elements: int) -> Cost:
    """A ``GlobalAveragePooling2D`` (a ``Mean`` over the input)."""
    return Cost(in_elements)


def add_cost(inputs: int, out_elements: int) -> Cost:
    """An ``Add`` of ``inputs`` tensors."""
    return Cost((inputs - 1) * out_elements)


def rescaling_cost(elements: int) -> Cost:
    """A ``Rescaling`` (multiply, then add)."""
    return Cost(2 * elements)


# ---------------------------------------------------------------------- Keras layers
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
        hout, wout, cout = (int(d) for d in out_shape[1:])
        return conv2d_cost(kh, kw, int(layer.input.shape[-1]), cout, hout, wout,
                           bias=layer.use_bias, groups=layer.groups)
    if kind == "DepthwiseConv2D":
        kh, kw = layer.kernel_size
        hout, wout = int(out_shape[1]), int(out_shape[2])
        return depthwise_conv2d_cost(kh, kw, int(layer.input.shape[-1]),
                                     layer.depth_multiplier, hout, wout, bias=layer.use_bias)
    if kind == "Dense":
        fan_in = int(layer.input.shape[-1])
        return dense_cost(fan_in, layer.units, rows=_elements(layer.input.shape) // fan_in,
                          bias=layer.use_bias,
                          activation=getattr(layer.activation, "__name__", ""))
    if kind == "BatchNormalization":
        if not (layer.center and layer.scale):
            raise PoolnasError(
                f"cannot count FLOPs of {layer.name}: BatchNorm without scale/center"
            )
        return batch_norm_cost(n_out, int(out_shape[-1]))
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        return pooling2d_cost(math.prod(layer.pool_size), n_out)
    if kind == "GlobalAveragePooling2D":
        return global_average_pooling_cost(_elements(layer.input.shape))
    if kind == "Add":
        return add_cost(len(layer.input), n_out)
    if kind == "Rescaling":
        return rescaling_cost(n_out)
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


# ---------------------------------------------------------------------- shapes (closed form)
Shape = tuple[int, ...]


def _out_size(size: int, stride: int) -> int:
    return -(-size // stride)  # "same" padding: ceil(size / stride)


class CostLayers:
    """The :class:`~poolnas.spaces.LayerSink` that counts: tensors are shapes without the batch
    axis (``(height, width, channels)``, ``(units,)`` after the global pool).

    Args:
        record: Also keep one :class:`LayerCost` per call, named like the Keras layer (a call
            that stands for a group of free layers, such as space-to-depth, is one entry).

    Attributes:
        total: The cost of every layer counted so far.
        layers: The recorded costs, in call order (empty unless ``record``).
    """

    def __init__(self, *, record: bool = False) -> None:
        self.total = Cost()
        self.layers: list[LayerCost] = []
        self._record = record

    def _count(self, name: str, kind: str, cost: Cost) -> None:
        self.total = self.total + cost
        if self._record:
            self.layers.append(LayerCost(name, kind, cost))

    def augment(self, x: Shape, name: str) -> Shape:
        self._count(name, "RandomFlip+RandomTranslation", Cost())
        return x

    def rescale(self, x: Shape, scale: float, offset: float, name: str) -> Shape:
        self._count(name, "Rescaling", rescaling_cost(math.prod(x)))
        return x

    def conv(self, x: Shape, filters: int, kernel: int, stride: int, name: str) -> Shape:
        height, width, channels = x
        out = (_out_size(height, stride), _out_size(width, stride), filters)
        self._count(name, "Conv2D",
                    conv2d_cost(kernel, kernel, channels, filters, out[0], out[1], bias=False))
        return out

    def batch_norm(self, x: Shape, name: str) -> Shape:
        self._count(name, "BatchNormalization", batch_norm_cost(math.prod(x), x[-1]))
        return x

    def relu(self, x: Shape, name: str) -> Shape:
        self._count(name, "ReLU", Cost())
        return x

    def _pool(self, kind: str, x: Shape, window: int, stride: int, name: str) -> Shape:
        height, width, channels = x
        out = (_out_size(height, stride), _out_size(width, stride), channels)
        self._count(name, kind, pooling2d_cost(window * window, math.prod(out)))
        return out

    def max_pool(self, x: Shape, window: int, stride: int, name: str) -> Shape:
        return self._pool("MaxPooling2D", x, window, stride, name)

    def avg_pool(self, x: Shape, window: int, stride: int, name: str) -> Shape:
        return self._pool("AveragePooling2D", x, window, stride, name)

    def blur(self, x: Shape, stride: int, name: str) -> Shape:
        height, width, channels = x
        out = (_out_size(height, stride), _out_size(width, stride), channels)
        self._count(name, "DepthwiseConv2D",
                    depthwise_conv2d_cost(3, 3, channels, 1, out[0], out[1], bias=False))
        return out

    def space_to_depth(self, x: Shape, name: str) -> Shape:
        height, width, channels = x
        self._count(name, "ZeroPadding2D+Reshape+Permute", Cost())
        return (_out_size(height, 2), _out_size(width, 2), 4 * channels)

    def zero_channels(self, x: Shape, extra: int, name: str) -> Shape:
        height, width, channels = x
        self._count(name, "Reshape+ZeroPadding3D", Cost())
        return (height, width, channels + extra)

    def add(self, xs: Sequence[Shape], name: str) -> Shape:
        self._count(name, "Add", add_cost(len(xs), math.prod(xs[0])))
        return xs[0]

    def concat(self, xs: Sequence[Shape], name: str) -> Shape:
        self._count(name, "Concatenate", Cost())
        return (*xs[0][:-1], sum(x[-1] for x in xs))

    def global_avg_pool(self, x: Shape, name: str) -> Shape:
        self._count(name, "GlobalAveragePooling2D", global_average_pooling_cost(math.prod(x)))
        return (x[-1],)

    def dense(self, x: Shape, units: int, activation: str, name: str) -> Shape:
        self._count(name, "Dense", dense_cost(x[-1], units, activation=activation))
        return (units,)
