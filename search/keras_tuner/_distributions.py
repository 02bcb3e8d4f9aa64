"""KerasTuner hyperparameters as Optuna distributions: how a general search space is proposed.

:func:`distribution_of` maps one KerasTuner hyperparameter to the Optuna distribution it is
sampled from, and :class:`Proposal` walks a ``HyperParameters`` space in its declaration order,
asking a sampler only for the entries that are active for the values drawn so far
(``parent_name``/``parent_values`` and ``conditional_scope`` both become conditions there):

=============================================  ===============================================
KerasTuner                                     Optuna
=============================================  ===============================================
``Choice(values)``, ``Boolean``                ``CategoricalDistribution(values)``
``Int(min, max, step)`` linear                 ``IntDistribution(min, max, step=step or 1)``
``Int(min, max)`` log                          ``IntDistribution(min, max, log=True)``
``Float(min, max)`` linear / log               ``FloatDistribution(min, max, log=...)``
``Float(min, max, step)`` linear               ``FloatDistribution(min, max, step=step)``
``Int``/``Float`` log with a step              ``CategoricalDistribution(hp.values)`` (KerasTuner's
                                               step is then a factor, which Optuna has not)
``Float`` reverse_log                          ``FloatDistribution(min, max)`` (linear)
``Fixed``                                      no Optuna parameter: the value is the trial's
=============================================  ===============================================

The Optuna parameter of an entry is named after it; an entry whose name another entry (under
other conditions) already uses gets ``name[2]``, ``name[3]``… so that each Optuna parameter keeps
one distribution. The trial's KerasTuner values are also kept whole in the user attr
``keras_tuner_values``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras_tuner
from keras_tuner.engine import hyperparameters as hp_module
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from poolnas.search._trial_attrs import TrialAttrs

#: User attr of a general-space trial: its KerasTuner values (JSON).
VALUES_ATTR = TrialAttrs.KERAS_TUNER_VALUES


def distribution_of(hp: Any) -> BaseDistribution | None:
    """The Optuna distribution of KerasTuner hyperparameter ``hp`` (None for ``Fixed``).

    Raises:
        TypeError: A hyperparameter type KerasTuner does not define.
    """
    if isinstance(hp, hp_module.Fixed):
        return None
    if isinstance(hp, hp_module.Boolean):
        return CategoricalDistribution([False, True])
    if isinstance(hp, hp_module.Choice):
        return CategoricalDistribution(list(hp.values))
    if isinstance(hp, (hp_module.Int, hp_module.Float)):
        sampling = (hp.sampling or "linear").lower()
        is_int = isinstance(hp, hp_module.Int)
        if sampling == "log" and hp.step is not None and not (is_int and hp.step == 1):
            return CategoricalDistribution(list(hp.values))
        if is_int:
            if sampling == "log":
                return IntDistribution(int(hp.min_value), int(hp.max_value), log=True)
            return IntDistribution(int(hp.min_value), int(hp.max_value), step=int(hp.step or 1))
        if hp.step is not None and sampling != "log":
            return FloatDistribution(float(hp.min_value), float(hp.max_value),
                                     step=float(hp.step))
        return FloatDistribution(float(hp.min_value), float(hp.max_value), log=sampling == "log")
    raise TypeError(f"unknown KerasTuner hyperparameter type {type(hp).__name__}")


def _conditions_key(hp: Any) -> str:
    return repr([c.get_config() for c in hp.conditions])


class Proposal:
    """The Optuna view of a KerasTuner space: parameter names and distributions of its entries.

    Args:
        space: The oracle's ``HyperParameters``.
    """

    def __init__(self, space: keras_tuner.HyperParameters) -> None:
        self.space = space
        self._names: dict[tuple[str, str], str] = {}
        used: dict[str, int] = {}
        for hp in space.space:
            key = (hp.name, _conditions_key(hp))
            if key in self._names:
                continue
            used[hp.name] = used.get(hp.name, 0) + 1
            self._names[key] = hp.name if used[hp.name] == 1 else f"{hp.name}[{used[hp.name]}]"

    def param_name(self, hp: Any) -> str:
        """The Optuna parameter name of entry ``hp``."""
        return self._names.get((hp.name, _conditions_key(hp)), hp.name)

    def draw(self, sample: Callable[[str, BaseDistribution], Any]) -> dict[str, Any]:
        """KerasTuner values of the active entries, each drawn by ``sample(name, distribution)``."""
        hps = keras_tuner.HyperParameters()
        for hp in self.space.space:
            hps.merge([hp])
            if not hps.is_active(hp):
                continue
            distribution = distribution_of(hp)
            value = hp.value if distribution is None else sample(self.param_name(hp),
                                                                 distribution)
            hps.values[hp.name] = _plain(value)
        return dict(hps.values)

    def params(self, values: dict[str, Any]) -> dict[str, tuple[BaseDistribution, Any]]:
        """The Optuna parameters (name → (distribution, value)) of a trial's KerasTuner values.

        Entries that are inactive, ``Fixed``, or whose value the distribution does not hold (a
        subclass of the oracle changed it) have none.
        """
        hps = keras_tuner.HyperParameters()
        out: dict[str, tuple[BaseDistribution, Any]] = {}
        for hp in self.space.space:
            hps.merge([hp])
            if hp.name not in values or not hps.is_active(hp):
                continue
            value = values[hp.name]
            hps.values[hp.name] = value
            distribution = distribution_of(hp)
            if distribution is None:
                continue
            try:
                if distribution._contains(distribution.to_internal_repr(value)):
                    out[self.param_name(hp)] = (distribution, value)
            except (ValueError, TypeError):
                continue
        return out


def _plain(value: Any) -> Any:
    """A sampler's value as a plain Python value (numpy scalars become int/float/bool)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value
