"""The layers poolnas networks are made of: one vocabulary, realised twice.

A network is written once, as calls on a :class:`LayerSink` (``conv``, ``batch_norm``,
``max_pool``, ``space_to_depth``, …): one call per built-in Keras layer, or per fixed group of
them (space-to-depth, zero channels), each with the name its Keras layer gets. Two sinks
realise the calls:

- ``KerasLayers`` (``spaces/_builder.py``) creates the Keras layers; its tensors are Keras
  tensors, and the result is the model ``build_model`` returns.
- ``CostLayers`` (``evaluators/_flops.py``) follows shapes and adds up FLOPs, MACs and
  parameters under that module's convention; its tensors are ``(height, width, channels)``
  tuples (``(units,)`` after the global pool). No model is built.

So the op catalogue (``spaces/_catalogue.py``), the block anatomy (``spaces/_builder.py``) and
the layer names exist in one place each, and the closed-form cost is read off the very
description the model is built from. What must stay true: every method here is one row of the
FLOPs convention table (or a group of layers that costs nothing), and every spatial layer uses
``same`` padding, so a stride-2 layer turns ``n`` pixels into ``ceil(n / 2)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

#: A tensor as a sink sees it: a Keras tensor, or a shape tuple for the cost counter.
Tensor = Any


class LayerSink(Protocol):
    """The layer vocabulary of poolnas networks; ``name`` is the Keras layer's name."""

    def augment(self, x: Tensor, name: str) -> Tensor:
        """Random flip and translation, active in training only (``{name}_flip``, ``_shift``)."""

    def rescale(self, x: Tensor, scale: float, offset: float, name: str) -> Tensor:
        """``x * scale + offset`` (``Rescaling``)."""

    def conv(self, x: Tensor, filters: int, kernel: int, stride: int, name: str) -> Tensor:
        """A square ``Conv2D`` without bias, ``same`` padding."""

    def batch_norm(self, x: Tensor, name: str) -> Tensor:
        """``BatchNormalization`` with scale and centre."""

    def relu(self, x: Tensor, name: str) -> Tensor:
        """``ReLU``."""

    def max_pool(self, x: Tensor, window: int, stride: int, name: str) -> Tensor:
        """A square ``MaxPooling2D``, ``same`` padding."""

    def avg_pool(self, x: Tensor, window: int, stride: int, name: str) -> Tensor:
        """A square ``AveragePooling2D``, ``same`` padding."""

    def blur(self, x: Tensor, stride: int, name: str) -> Tensor:
        """The fixed 3x3 binomial filter per channel (a frozen ``DepthwiseConv2D``, no bias)."""

    def space_to_depth(self, x: Tensor, name: str) -> Tensor:
        """Each 2x2 block of pixels becomes 4x the channels; odd sizes are zero-padded first."""

    def zero_channels(self, x: Tensor, extra: int, name: str) -> Tensor:
        """Append ``extra`` all-zero channels."""

    def add(self, xs: Sequence[Tensor], name: str) -> Tensor:
        """Element-wise sum (``Add``)."""

    def concat(self, xs: Sequence[Tensor], name: str) -> Tensor:
        """Channel concatenation (``Concatenate``)."""

    def global_avg_pool(self, x: Tensor, name: str) -> Tensor:
        """``GlobalAveragePooling2D``: one value per channel."""

    def dense(self, x: Tensor, units: int, activation: str, name: str) -> Tensor:
        """``Dense`` with bias and ``activation`` (``softmax`` or ``linear``)."""


def conv_bn(layers: LayerSink, x: Tensor, filters: int, kernel: int, stride: int, name: str,
            *, relu: bool) -> Tensor:
    """Conv (``{name}_conv``), BatchNorm (``{name}_bn``) and, with ``relu``, ``{name}_relu``."""
    x = layers.conv(x, filters, kernel, stride, f"{name}_conv")
    x = layers.batch_norm(x, f"{name}_bn")
    if relu:
        x = layers.relu(x, f"{name}_relu")
    return x
