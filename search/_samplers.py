"""``--sampler``: the name of every sampler a search can use, and the one factory that makes it.

``surrogate`` is poolnas' own :class:`~poolnas.search.ParetoSurrogateSampler` (exact FLOPs,
a model of accuracy over the whole enumerated space); the others are Optuna's. Why
``surrogate`` is the default where it applies: ``docs/benchmarks.md``, "Sample efficiency".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import optuna

from poolnas.search._costs import MAX_CANDIDATES
from poolnas.search._surrogate import ParetoSurrogateSampler
from poolnas.spaces import PoolnasError

SAMPLERS = ("auto", "surrogate", "tpe", "nsga2", "random", "grid")


def make_sampler(name: str, space: Any, seed: int | None, *,
                 flops_of: Callable[[Mapping[str, Any]], float] | None = None,
                 max_flops: int | None = None,
                 reevaluate: bool = True) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``--sampler``.

    Args:
        name: One of :data:`SAMPLERS`. ``auto`` is ``surrogate`` for a space of at most
            :data:`~poolnas.search._costs.MAX_CANDIDATES` architectures and ``tpe`` above.
        space: Anything with ``parameters()``, ``params_of()``, ``architecture()``, ``size``
            and iteration over architectures with ``.key`` (a
            :class:`~poolnas.spaces.SearchSpace`).
        seed: Seeds the sampler.
        flops_of: FLOPs of a candidate from its parameters (``surrogate`` needs it).
        max_flops: The FLOPs budget (``surrogate`` proposes candidates over it last).
        reevaluate: Whether ``surrogate`` may propose another training of a trained
            architecture (a re-evaluation) where that is worth more than a new one.

    Raises:
        PoolnasError: Unknown name, or ``surrogate`` on a space too large to enumerate.
    """
    if name == "auto":
        name = "surrogate" if space.size <= MAX_CANDIDATES else "tpe"
    if name == "surrogate":
        if space.size > MAX_CANDIDATES:
            raise PoolnasError(
                f"--sampler surrogate scores every architecture, and this space has "
                f"{space.size:,} (at most {MAX_CANDIDATES:,}); use --sampler tpe"
            )
        if flops_of is None:
            raise PoolnasError("the surrogate sampler needs the FLOPs of the candidates")
        return ParetoSurrogateSampler(space, flops_of, seed=seed, max_flops=max_flops,
                                      reevaluate=reevaluate)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(
            {k: list(v) for k, v in space.parameters().items()}, seed=seed
        )
    raise PoolnasError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
