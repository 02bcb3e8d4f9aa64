"""What can be searched: the architecture value, search spaces, the Keras builder."""

from __future__ import annotations

from poolnas.spaces._architecture import Architecture, DownsamplingPoint
from poolnas.spaces._builder import build_model, check_input_shape
from poolnas.spaces._catalogue import MERGES, OPS, SKIPS, STEMS
from poolnas.spaces._errors import PoolnasError
from poolnas.spaces._space import PRESETS, SearchSpace, catalogue_space, default_space

__all__ = [
    "Architecture",
    "DownsamplingPoint",
    "MERGES",
    "OPS",
    "PRESETS",
    "PoolnasError",
    "SKIPS",
    "STEMS",
    "SearchSpace",
    "build_model",
    "catalogue_space",
    "check_input_shape",
    "default_space",
]
