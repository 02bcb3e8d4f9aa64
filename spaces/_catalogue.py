"""The catalogue: every downsampling op, shortcut type, merge and stem poolnas knows.

A registry in the spirit of timm's ``create_act.py``: one entry per choice, and everything that
lists, builds, counts, draws or words a choice reads it from here. An entry carries the name
used in architecture keys, the one-line description and the reference that ``poolnas space``
prints, the words (``label``) and the fill colour the dashboards use, and how it is built:
``build`` writes its layers as calls on a :class:`~poolnas.spaces._layers.LayerSink`, so the
same call makes the Keras layers (``build_model``) and counts their cost in closed form
(``poolnas.evaluators.architecture_cost``).

Adding an op is one :class:`Op` entry in :data:`OPS`; the tests that loop over the catalogue
(build every op with every skip, count it both ways, draw it) then cover it. What must stay
true: an op halves height and width to ``ceil(n / 2)`` (``same`` padding), whatever channels
it makes are mapped to the stage width by the block's first conv, and it names its layers
``{prefix}_{what}`` from the ``down{i}`` prefix it is given (``down1_max_pool``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from poolnas.spaces._layers import LayerSink, Tensor, conv_bn

#: Builds an op's main-path layers: ``(layers, x, channels, name) -> x``; ``name`` is the
#: point's prefix (``down1``), ``channels`` the input's.
OpBuild = Callable[[LayerSink, Tensor, int, str], Tensor]
#: Builds a shortcut: ``(layers, x, channels, width, name) -> x`` with ``width`` channels out;
#: ``name`` is the shortcut's prefix (``down1_skip``).
SkipBuild = Callable[[LayerSink, Tensor, int, int, str], Tensor]
#: Joins the main path and the shortcut: ``(layers, main, shortcut, name) -> x``; ``name`` is
#: the block's prefix (``stage1_block0``).
MergeBuild = Callable[[LayerSink, Tensor, Tensor, str], Tensor]

_POOL_COLOUR = "#9ecae1"
_CONV_COLOUR = "#fdae6b"
_OTHER_COLOUR = "#a1d99b"
_SKIP_COLOUR = "#dadaeb"


@dataclass(frozen=True)
class Op:
    """A downsampling op: how the main path halves height and width.

    Args:
        name: The name in architecture keys and space files.
        family: What kind of op it is (``pool``, ``conv``, ``blur_pool``, ``lossless``).
        label: The words for it in a sentence (``stride-2 conv``).
        description: One line for ``poolnas space``.
        reference: Where it comes from.
        colour: Its fill colour in architecture diagrams.
        build: Its layers on the main path, before the block's first conv.
        first_stride: The stride of the block's first conv (2 when the op itself is that conv).
    """

    name: str
    family: str
    label: str
    description: str
    reference: str
    colour: str
    build: OpBuild
    first_stride: int = 1


@dataclass(frozen=True)
class Skip:
    """A shortcut type: how the block input crosses the resolution change.

    Args:
        name: The name in architecture keys and space files.
        label: The words for it in a sentence (``the projection shortcut``).
        description: One line for ``poolnas space``.
        reference: Where it comes from.
        colour: Its fill colour in architecture diagrams.
        short: Its text in a diagram's small box.
        build: Its layers, or None for no shortcut (a plain block).
    """

    name: str
    label: str
    description: str
    reference: str
    colour: str
    short: str
    build: SkipBuild | None

    @property
    def residual(self) -> bool:
        """Whether the blocks of a stage with this skip have shortcuts."""
        return self.build is not None


@dataclass(frozen=True)
class Merge:
    """How a shortcut rejoins the main path.

    Args:
        name: The name in architecture keys (``add`` is the default and is not written).
        description: One line for ``poolnas space``.
        reference: Where it comes from.
        keeps_input: The shortcut keeps the block input's channels and the main path makes only
            the missing ones (concat); otherwise both paths have the stage width.
        build: Its layers, ending in the block output.
    """

    name: str
    description: str
    reference: str
    keeps_input: bool
    build: MergeBuild


@dataclass(frozen=True)
class Stem:
    """The first layer, a conv-BN-ReLU; a stride-2 stem is downsampling point 0.

    Args:
        name: The name in architecture keys.
        description: One line for ``poolnas space``.
        reference: Where it comes from.
        kernel: The conv's kernel size.
        stride: The conv's stride (1 or 2).
    """

    name: str
    description: str
    reference: str
    kernel: int
    stride: int


_E = TypeVar("_E", Op, Skip, Merge, Stem)


def _registry(*entries: _E) -> dict[str, _E]:
    return {entry.name: entry for entry in entries}


# ---------------------------------------------------------------------- ops
def _pool(kind: str, window: int, suffix: str) -> OpBuild:
    def build(layers: LayerSink, x: Tensor, channels: int, name: str) -> Tensor:
        pool = layers.max_pool if kind == "max" else layers.avg_pool
        return pool(x, window, 2, f"{name}_{suffix}")

    return build


def _stride_conv(layers: LayerSink, x: Tensor, channels: int, name: str) -> Tensor:
    return conv_bn(layers, x, channels, 3, 2, f"{name}_stride_conv", relu=True)


def _nothing(layers: LayerSink, x: Tensor, channels: int, name: str) -> Tensor:
    return x


def _blur_max(layers: LayerSink, x: Tensor, channels: int, name: str) -> Tensor:
    x = layers.max_pool(x, 2, 1, f"{name}_blur_max_pool")
    return layers.blur(x, 2, f"{name}_blur_max_blur")


def _space_to_depth(layers: LayerSink, x: Tensor, channels: int, name: str) -> Tensor:
    return layers.space_to_depth(x, f"{name}_space_to_depth")


OPS: dict[str, Op] = _registry(
    Op("max", "pool", "max-pool", "2x2 max-pool, stride 2",
       "Chollet, Deep Learning with Python (2017), 5.1.1", _POOL_COLOUR,
       _pool("max", 2, "max_pool")),
    Op("avg", "pool", "avg-pool", "2x2 average-pool, stride 2",
       "LeCun et al. 1998 (subsampling)", _POOL_COLOUR, _pool("avg", 2, "avg_pool")),
    Op("max3x3", "pool", "3x3 max-pool", "3x3 overlapping max-pool, stride 2",
       "Krizhevsky et al. 2012 (AlexNet); He et al. 2016 (ResNet stem)", _POOL_COLOUR,
       _pool("max", 3, "max3x3_pool")),
    Op("avg3x3", "pool", "3x3 avg-pool", "3x3 overlapping average-pool, stride 2",
       "Krizhevsky et al. 2012", _POOL_COLOUR, _pool("avg", 3, "avg3x3_pool")),
    Op("conv", "conv", "stride-2 conv",
       "extra 3x3 conv-BN-ReLU at stride 2 in place of the pool (All-CNN)",
       "Springenberg et al. 2014, All-CNN", _CONV_COLOUR, _stride_conv),
    Op("strided", "conv", "strided first conv",
       "the stage's first 3x3 conv runs at stride 2: no extra layer (Strided-CNN)",
       "Springenberg et al. 2014, Strided-CNN", _CONV_COLOUR, _nothing, first_stride=2),
    Op("blur_max", "blur_pool", "blur max-pool",
       "2x2 max-pool at stride 1, then a fixed 3x3 binomial blur at stride 2 (MaxBlurPool)",
       "Zhang 2019, Making Convolutional Networks Shift-Invariant Again", _OTHER_COLOUR,
       _blur_max),
    Op("space_to_depth", "lossless", "space-to-depth",
       "lossless: each 2x2 block becomes 4x the channels",
       "Ridnik et al. 2021 (TResNet); Sunkara & Luo 2022 (SPD-Conv)", _OTHER_COLOUR,
       _space_to_depth),
)


# ---------------------------------------------------------------------- skips
def _projection(layers: LayerSink, x: Tensor, channels: int, width: int, name: str) -> Tensor:
    return conv_bn(layers, x, width, 1, 2, f"{name}_proj", relu=False)


def _pool_projection(layers: LayerSink, x: Tensor, channels: int, width: int,
                     name: str) -> Tensor:
    x = layers.avg_pool(x, 2, 2, f"{name}_avg_pool")
    return conv_bn(layers, x, width, 1, 1, f"{name}_proj", relu=False)


def _pool_pad(layers: LayerSink, x: Tensor, channels: int, width: int, name: str) -> Tensor:
    x = layers.avg_pool(x, 2, 2, f"{name}_avg_pool")
    if width > channels:
        x = layers.zero_channels(x, width - channels, f"{name}_pad")
    return x


SKIPS: dict[str, Skip] = _registry(
    Skip("none", "no shortcut", "no shortcut: a plain CNN block",
         "Simonyan & Zisserman 2015 (VGG)", "#ffffff", "none", None),
    Skip("projection", "the projection shortcut",
         "1x1 conv at stride 2 + BN on the shortcut (ResNet option B)",
         "He et al. 2016, Deep Residual Learning", _SKIP_COLOUR, "proj", _projection),
    Skip("pool_projection", "the pool-projection shortcut",
         "2x2 average-pool at stride 2, then 1x1 conv + BN (ResNet-D)",
         "He et al. 2019, Bag of Tricks", _SKIP_COLOUR, "pool\nproj", _pool_projection),
    Skip("pool_pad", "the pool-pad shortcut",
         "parameter-free: 2x2 average-pool at stride 2, zero channels to match (option A)",
         "He et al. 2016 option A; Sun et al. 2018 (FishNet)", _SKIP_COLOUR, "pool\npad",
         _pool_pad),
)


# ---------------------------------------------------------------------- merges
def _add(layers: LayerSink, main: Tensor, shortcut: Tensor, name: str) -> Tensor:
    return layers.relu(layers.add([main, shortcut], f"{name}_add"), f"{name}_out")


def _concat(layers: LayerSink, main: Tensor, shortcut: Tensor, name: str) -> Tensor:
    main = layers.relu(main, f"{name}_main_relu")
    return layers.concat([main, shortcut], f"{name}_concat")


MERGES: dict[str, Merge] = _registry(
    Merge("add", "shortcut added to the block output, then ReLU", "He et al. 2016",
          keeps_input=False, build=_add),
    Merge("concat",
          "shortcut concatenated to the block output (main path makes the missing channels)",
          "Sun et al. 2018 (FishNet)", keeps_input=True, build=_concat),
)


# ---------------------------------------------------------------------- stems
STEMS: dict[str, Stem] = _registry(
    Stem("conv3", "3x3 conv-BN-ReLU, stride 1: no downsampling", "Simonyan & Zisserman 2015",
         kernel=3, stride=1),
    Stem("conv3s2", "3x3 conv-BN-ReLU, stride 2: downsampling point 0",
         "Springenberg et al. 2014", kernel=3, stride=2),
    Stem("conv7s2", "7x7 conv-BN-ReLU, stride 2: downsampling point 0 (ResNet stem)",
         "He et al. 2016", kernel=7, stride=2),
)

#: Stems that halve the input and so count as downsampling point 0.
STRIDED_STEMS = frozenset(name for name, stem in STEMS.items() if stem.stride == 2)
