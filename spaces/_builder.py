"""Architecture + input shape + classes → ``keras.Model``, from built-in Keras layers only.

Only built-in layers are used, so a saved ``.keras`` file loads with
``keras.saving.load_model(path)`` (``safe_mode`` on) and no custom objects. Layer names say what
each layer is (``down2_max_pool``, ``stage1_block0_conv1``, ``down1_skip_proj_conv``), so
``model.summary()`` reads as the architecture.

The anatomy is written once, over a :class:`~poolnas.spaces._layers.LayerSink`, in three parts:
:func:`stem_stage` (input rescaling, the stem, stage 0), :func:`point_stage` (one downsampling
point and the stage after it) and :func:`classifier_head`. :func:`build_model` runs them with
:class:`KerasLayers`; ``poolnas.evaluators`` runs the same parts with a sink that counts, part by
part, so a closed-form cost is the model's cost by construction. The op, the shortcut and the
merge of a point come from the catalogue's entries; nothing here is specific to one op.

Block anatomy (a ResNet basic block): conv3x3-BN-ReLU, conv3x3-BN, then the merge with the
shortcut (if any) and a ReLU. The first block of stage ``i`` is the one that downsamples: the
point's op sits at the start of its main path and the point's skip type carries the block input
across the resolution change. Later blocks of the stage use identity shortcuts when the point
has a shortcut. Stage 0 blocks are plain. All spatial ops use ``same`` padding, so every path of
a block halves an odd size the same way (to ``ceil(size / 2)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from poolnas.spaces._architecture import Architecture, DownsamplingPoint
from poolnas.spaces._catalogue import MERGES, OPS, SKIPS, STEMS
from poolnas.spaces._errors import PoolnasError
from poolnas.spaces._layers import LayerSink, Tensor, conv_bn

if TYPE_CHECKING:
    import keras

#: BatchNorm momentum. Keras' 0.99 leaves the moving statistics far from the batch statistics
#: after the few hundred steps of a search trial, which makes inference-mode accuracy noise.
BN_MOMENTUM = 0.9

#: The fixed 3x3 binomial filter of MaxBlurPool (Zhang 2019), normalised to sum 1.
BLUR_FILTER = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0


def check_input_shape(arch: Architecture, input_shape: tuple[int, ...]) -> None:
    """Raise :class:`PoolnasError` if ``arch`` halves the input more often than it allows."""
    if len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
        raise PoolnasError(f"input shape must be (height, width, channels), got {input_shape!r}")
    side = min(int(input_shape[0]), int(input_shape[1]))
    if 2 ** arch.halvings > side:
        allowed = int(math.floor(math.log2(side)))
        raise PoolnasError(
            f"{arch.key} halves the resolution {arch.halvings} times, but a {side}-pixel input "
            f"allows at most {allowed}; use fewer downsampling points or a stride-1 stem"
        )


def build_model(
    arch: Architecture,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    input_scale: float = 1.0,
    input_offset: float = 0.0,
    augment: bool = False,
    name: str = "poolnas",
) -> keras.Model:
    """Build the Keras model of ``arch``.

    Args:
        arch: The architecture.
        input_shape: ``(height, width, channels)`` of one raw image.
        num_classes: Number of classes (softmax outputs).
        input_scale: Raw pixels are multiplied by this inside the model (``Rescaling``).
        input_offset: …and this is added, so exported models take images as stored.
        augment: Add random flip and translation layers (active in training only).
        name: The model's name.

    Returns:
        An uncompiled functional ``keras.Model``.

    Raises:
        PoolnasError: The input is too small for the architecture, or fewer than 2 classes.
    """
    import keras

    check_input_shape(arch, input_shape)
    layers = KerasLayers()
    inputs = keras.Input(shape=tuple(int(d) for d in input_shape), name="image")
    x = stem_stage(layers, inputs, arch, input_scale=input_scale, input_offset=input_offset,
                   augment=augment)
    channels = arch.width
    for index, point in enumerate(arch.points, start=1):
        x = point_stage(layers, x, point, channels, index)
        channels = point.width
    outputs = classifier_head(layers, x, num_classes)
    return keras.Model(inputs, outputs, name=name)


# ---------------------------------------------------------------------- the anatomy
def stem_stage(layers: LayerSink, x: Tensor, arch: Architecture, *, input_scale: float = 1.0,
               input_offset: float = 0.0, augment: bool = False) -> Tensor:
    """Input preprocessing, the stem and stage 0 (layers ``augment_*``, ``rescale``,
    ``stem_*``, ``stage0_*``).

    Args:
        layers: The sink that realises the layers (Keras, or the cost counter).
        x: The input image tensor.
        arch: The architecture (its stem, width and blocks are read).
        input_scale: The ``rescale`` layer's factor; the layer exists only when scale and
            offset are not 1 and 0.
        input_offset: Its offset.
        augment: Add the random flip and translation layers first.

    Returns:
        Stage 0's output: ``arch.width`` channels.
    """
    if augment:
        x = layers.augment(x, "augment")
    if input_scale != 1.0 or input_offset != 0.0:
        x = layers.rescale(x, input_scale, input_offset, "rescale")
    stem = STEMS[arch.stem]
    x = conv_bn(layers, x, arch.width, stem.kernel, stem.stride, "stem", relu=True)
    for b in range(arch.blocks):
        x = _block(layers, x, arch.width, f"stage0_block{b}", residual=False)
    return x


def point_stage(layers: LayerSink, x: Tensor, point: DownsamplingPoint, channels: int,
                index: int) -> Tensor:
    """Downsampling point ``index`` and the stage after it (layers ``down{index}_*`` and
    ``stage{index}_*``).

    Args:
        layers: The sink that realises the layers (Keras, or the cost counter).
        x: The previous stage's output.
        point: The point's op, skip, merge, width and blocks (the catalogue builds each).
        channels: ``x``'s channels.
        index: The point's number (1 for the first), used only in layer names.

    Returns:
        The stage's output: ``point.width`` channels, height and width halved (``ceil``).
    """
    op, skip, merge = OPS[point.op], SKIPS[point.skip], MERGES[point.merge]
    down, block = f"down{index}", f"stage{index}_block0"
    keeps_input = skip.residual and merge.keeps_input
    main_width = point.width - channels if keeps_input else point.width

    # Main path: the op, then the block's two convs (the first one strided for `strided`).
    y = op.build(layers, x, channels, down)
    y = conv_bn(layers, y, main_width, 3, op.first_stride, f"{block}_conv1", relu=True)
    y = conv_bn(layers, y, main_width, 3, 1, f"{block}_conv2", relu=False)
    if skip.build is None:
        y = layers.relu(y, f"{block}_out")
    else:
        # Shortcut: carries the block input across the resolution change.
        shortcut = skip.build(layers, x, channels, channels if keeps_input else point.width,
                              f"{down}_skip")
        y = merge.build(layers, y, shortcut, block)
    for b in range(1, point.blocks):
        y = _block(layers, y, point.width, f"stage{index}_block{b}", residual=skip.residual)
    return y


def classifier_head(layers: LayerSink, x: Tensor, num_classes: int) -> Tensor:
    """Global average pool and the dense softmax (layers ``global_avg_pool``, ``classifier``).

    Args:
        layers: The sink that realises the layers (Keras, or the cost counter).
        x: The last stage's output.
        num_classes: Number of classes (softmax outputs).

    Returns:
        The class probabilities.

    Raises:
        PoolnasError: Fewer than 2 classes.
    """
    if num_classes < 2:
        raise PoolnasError(f"a classifier needs at least 2 classes, got {num_classes}")
    x = layers.global_avg_pool(x, "global_avg_pool")
    return layers.dense(x, num_classes, "softmax", "classifier")


def _block(layers: LayerSink, x: Tensor, width: int, name: str, *, residual: bool) -> Tensor:
    """A non-downsampling block: identity shortcut when ``residual``."""
    y = conv_bn(layers, x, width, 3, 1, f"{name}_conv1", relu=True)
    y = conv_bn(layers, y, width, 3, 1, f"{name}_conv2", relu=False)
    if residual:
        y = layers.add([y, x], f"{name}_add")
    return layers.relu(y, f"{name}_out")


# ---------------------------------------------------------------------- Keras realisation
class KerasLayers:
    """The :class:`~poolnas.spaces._layers.LayerSink` that creates built-in Keras layers.

    The blur's fixed filter is set as soon as its layer is built, so the model needs no step
    after construction.
    """

    def __init__(self) -> None:
        from keras import layers

        self._k = layers

    def augment(self, x, name: str):
        x = self._k.RandomFlip("horizontal", name=f"{name}_flip")(x)
        return self._k.RandomTranslation(0.1, 0.1, fill_mode="constant", name=f"{name}_shift")(x)

    def rescale(self, x, scale: float, offset: float, name: str):
        return self._k.Rescaling(scale, offset, name=name)(x)

    def conv(self, x, filters: int, kernel: int, stride: int, name: str):
        return self._k.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                              name=name)(x)

    def batch_norm(self, x, name: str):
        return self._k.BatchNormalization(momentum=BN_MOMENTUM, name=name)(x)

    def relu(self, x, name: str):
        return self._k.ReLU(name=name)(x)

    def max_pool(self, x, window: int, stride: int, name: str):
        return self._k.MaxPooling2D(window, strides=stride, padding="same", name=name)(x)

    def avg_pool(self, x, window: int, stride: int, name: str):
        return self._k.AveragePooling2D(window, strides=stride, padding="same", name=name)(x)

    def blur(self, x, stride: int, name: str):
        layer = self._k.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                        trainable=False, name=name)
        y = layer(x)
        depth = int(x.shape[-1])
        layer.set_weights([np.repeat(BLUR_FILTER[:, :, None, None], depth, axis=2)])
        return y

    def space_to_depth(self, x, name: str):
        return space_to_depth(x, name)

    def zero_channels(self, x, extra: int, name: str):
        return _zero_channels(x, extra, name)

    def add(self, xs: Sequence, name: str):
        return self._k.Add(name=name)(list(xs))

    def concat(self, xs: Sequence, name: str):
        return self._k.Concatenate(name=name)(list(xs))

    def global_avg_pool(self, x, name: str):
        return self._k.GlobalAveragePooling2D(name=name)(x)

    def dense(self, x, units: int, activation: str, name: str):
        return self._k.Dense(units, activation=activation, name=name)(x)


def space_to_depth(x, name: str):
    """Rearrange each 2x2 block of pixels into 4x the channels (odd sizes are zero-padded).

    Built from ``ZeroPadding2D``, ``Reshape`` and ``Permute`` only; channel ``(dy*2+dx)*C + c`` of
    the output is pixel ``(2i+dy, 2j+dx)``, channel ``c`` of the input.
    """
    from keras import layers

    height, width, channels = (int(d) for d in x.shape[1:])
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        x = layers.ZeroPadding2D(((0, pad_h), (0, pad_w)), name=f"{name}_pad")(x)
        height, width = height + pad_h, width + pad_w
    x = layers.Reshape((height // 2, 2, width // 2, 2, channels), name=f"{name}_split")(x)
    x = layers.Permute((1, 3, 2, 4, 5), name=f"{name}_permute")(x)
    return layers.Reshape((height // 2, width // 2, 4 * channels), name=f"{name}_merge")(x)


def _zero_channels(x, extra: int, name: str):
    """Append ``extra`` all-zero channels (ResNet option A) with built-in layers only."""
    from keras import layers

    height, width, channels = (int(d) for d in x.shape[1:])
    x = layers.Reshape((height, width, channels, 1), name=f"{name}_expand")(x)
    x = layers.ZeroPadding3D(((0, 0), (0, 0), (0, extra)), name=f"{name}_zeros")(x)
    return layers.Reshape((height, width, channels + extra), name=f"{name}_squeeze")(x)
