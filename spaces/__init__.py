"""What can be searched: the architecture value, search spaces, the Keras builder, and the
search space as a KerasTuner HyperModel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poolnas.spaces._architecture import Architecture, DownsamplingPoint
from poolnas.spaces._builder import build_model, check_input_shape
from poolnas.spaces._catalogue import MERGES, OPS, SKIPS, STEMS
from poolnas.spaces._errors import PoolnasError
from poolnas.spaces._memory import freeze_startup_objects, release_training_graphs
from poolnas.spaces._space import PRESETS, SearchSpace, catalogue_space, default_space

if TYPE_CHECKING:
    from poolnas.spaces._hypermodel import PoolNASHyperModel

__all__ = [
    "Architecture",
    "DownsamplingPoint",
    "MERGES",
    "OPS",
    "PRESETS",
    "PoolNASHyperModel",
    "PoolnasError",
    "SKIPS",
    "STEMS",
    "SearchSpace",
    "build_model",
    "catalogue_space",
    "check_input_shape",
    "default_space",
    "freeze_startup_objects",
    "release_training_graphs",
]


def __getattr__(name: str):
    # KerasTuner (and with it TensorFlow) is imported only when the HyperModel is asked for.
    if name == "PoolNASHyperModel":
        from poolnas.spaces._hypermodel import PoolNASHyperModel

        return PoolNASHyperModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
