"""Architecture + input shape + classes → ``keras.Model``, from built-in Keras layers only.

Only built-in layers are used, so a saved ``.keras`` file loads with
``keras.saving.load_model(path)`` (``safe_mode`` on) and no custom objects. Layer names say what
each layer is (``down2_max_pool``, ``stage1_block0_conv1``, ``down1_skip_proj_conv``), so
``model.summary()`` reads as the architecture.

Block anatomy (a ResNet basic block): conv3x3-BN-ReLU, conv3x3-BN, then the merge with the
shortcut (if any) and a ReLU. The first block of stage ``i`` is the one that downsamples: the
point's op sits at the start of its main path and the point's skip type carries the block input
across the resolution change. Later blocks of the stage use identity shortcuts when the point
has a shortcut. Stage 0 blocks are plain. All spatial ops use ``same`` padding, so every path of
a block halves an odd size the same way (to ``ceil(size / 2)``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from poolnas.spaces._architecture import Architecture, DownsamplingPoint
from poolnas.spaces._errors import PoolnasError

if TYPE_CHECKING:
    import keras

#: BatchNorm momentum. Keras' 0.99 leaves the moving statistics far from the batch statistics
#: after the few hundred steps of a search trial, which makes inference-mode accuracy noise.
BN_MOMENTUM = 0.9

#: The fixed 3x3 binomial filter of MaxBlurPool (Zhang 2019), normalised to sum 1.
BLUR_FILTER = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0

_STEM_KERNEL = {"conv3": (3, 1), "conv3s2": (3, 2), "conv7s2": (7, 2)}


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
    from keras import layers

    check_input_shape(arch, input_shape)
    if num_classes < 2:
        raise PoolnasError(f"a classifier needs at least 2 classes, got {num_classes}")

    inputs = keras.Input(shape=tuple(int(d) for d in input_shape), name="image")
    x = inputs
    if augment:
        x = layers.RandomFlip("horizontal", name="augment_flip")(x)
        x = layers.RandomTranslation(0.1, 0.1, fill_mode="constant", name="augment_shift")(x)
    if input_scale != 1.0 or input_offset != 0.0:
        x = layers.Rescaling(input_scale, input_offset, name="rescale")(x)

    kernel, stride = _STEM_KERNEL[arch.stem]
    x = _conv_bn(x, arch.width, kernel, stride, "stem", relu=True)
    for b in range(arch.blocks):
        x = _block(x, arch.width, f"stage0_block{b}", residual=False)

    channels = arch.width
    blurs = []
    for index, point in enumerate(arch.points, start=1):
        x, blur = _downsampling_block(x, point, channels, index)
        if blur is not None:
            blurs.append(blur)
        for b in range(1, point.blocks):
            x = _block(x, point.width, f"stage{index}_block{b}", residual=point.residual)
        channels = point.width

    x = layers.GlobalAveragePooling2D(name="global_avg_pool")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs, name=name)
    for blur in blurs:
        depth = blur.get_weights()[0].shape[2]
        blur.set_weights([np.repeat(BLUR_FILTER[:, :, None, None], depth, axis=2)])
    return model


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, *, relu: bool):
    from keras import layers

    x = layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def _block(x, width: int, name: str, *, residual: bool):
    """A non-downsampling block: identity shortcut when ``residual``."""
    from keras import layers

    y = _conv_bn(x, width, 3, 1, f"{name}_conv1", relu=True)
    y = _conv_bn(y, width, 3, 1, f"{name}_conv2", relu=False)
    if residual:
        y = layers.Add(name=f"{name}_add")([y, x])
    return layers.ReLU(name=f"{name}_out")(y)


def _downsampling_block(x, point: DownsamplingPoint, channels: int, index: int):
    """The first block of stage ``index``: halves H and W. Returns (tensor, blur layer or None)."""
    from keras import layers

    down = f"down{index}"
    block = f"stage{index}_block0"
    concat = point.residual and point.merge == "concat"
    main_width = point.width - channels if concat else point.width

    # Main path: the op, then the block's two convs (the first one strided for `strided`).
    blur = None
    first_stride = 1
    y = x
    if point.op in ("max", "max3x3"):
        y = layers.MaxPooling2D(_window(point.op), strides=2, padding="same",
                                name=f"{down}_{point.op}_pool")(y)
    elif point.op in ("avg", "avg3x3"):
        y = layers.AveragePooling2D(_window(point.op), strides=2, padding="same",
                                    name=f"{down}_{point.op}_pool")(y)
    elif point.op == "conv":
        y = _conv_bn(y, channels, 3, 2, f"{down}_stride_conv", relu=True)
    elif point.op == "strided":
        first_stride = 2
    elif point.op == "blur_max":
        y = layers.MaxPooling2D(2, strides=1, padding="same", name=f"{down}_blur_max_pool")(y)
        blur = layers.DepthwiseConv2D(
            3, strides=2, padding="same", use_bias=False, trainable=False,
            name=f"{down}_blur_max_blur",
        )
        y = blur(y)
    elif point.op == "space_to_depth":
        y = space_to_depth(y, f"{down}_space_to_depth")
    else:  # pragma: no cover - Architecture validates ops
        raise AssertionError(point.op)
    y = _conv_bn(y, main_width, 3, first_stride, f"{block}_conv1", relu=True)
    y = _conv_bn(y, main_width, 3, 1, f"{block}_conv2", relu=False)

    if not point.residual:
        return layers.ReLU(name=f"{block}_out")(y), blur

    # Shortcut: carries the block input across the resolution change.
    short_width = channels if concat else point.width
    skip = f"{down}_skip"
    if point.skip == "projection":
        s = _conv_bn(x, short_width, 1, 2, f"{skip}_proj", relu=False)
    elif point.skip == "pool_projection":
        s = layers.AveragePooling2D(2, strides=2, padding="same", name=f"{skip}_avg_pool")(x)
        s = _conv_bn(s, short_width, 1, 1, f"{skip}_proj", relu=False)
    else:  # pool_pad
        s = layers.AveragePooling2D(2, strides=2, padding="same", name=f"{skip}_avg_pool")(x)
        if short_width > channels:
            s = _zero_channels(s, short_width - channels, f"{skip}_pad")

    if concat:
        y = layers.ReLU(name=f"{block}_main_relu")(y)
        return layers.Concatenate(name=f"{block}_concat")([y, s]), blur
    y = layers.Add(name=f"{block}_add")([y, s])
    return layers.ReLU(name=f"{block}_out")(y), blur


def _window(op: str) -> int:
    return 3 if op.endswith("3x3") else 2


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
