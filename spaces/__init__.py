"""What can be searched: the architecture value, search spaces, the op catalogue (a registry:
one entry per op), the network anatomy written once over a layer vocabulary, and the Keras
builder."""

from __future__ import annotations

from poolnas.spaces._architecture import Architecture, DownsamplingPoint
from poolnas.spaces._builder import (
    build_model,
    check_input_shape,
    classifier_head,
    point_stage,
    stem_stage,
)
from poolnas.spaces._catalogue import MERGES, OPS, SKIPS, STEMS, Merge, Op, Skip, Stem
from poolnas.spaces._errors import PoolnasError
from poolnas.spaces._layers import LayerSink
from poolnas.spaces._memory import freeze_startup_objects, release_training_graphs
from poolnas.spaces._space import PRESETS, SearchSpace, catalogue_space, default_space

__all__ = [
    "Architecture",
    "DownsamplingPoint",
    "LayerSink",
    "MERGES",
    "Merge",
    "OPS",
    "Op",
    "PRESETS",
    "PoolnasError",
    "SKIPS",
    "STEMS",
    "SearchSpace",
    "Skip",
    "Stem",
    "build_model",
    "catalogue_space",
    "check_input_shape",
    "classifier_head",
    "default_space",
    "freeze_startup_objects",
    "point_stage",
    "release_training_graphs",
    "stem_stage",
]

