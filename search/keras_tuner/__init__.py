"""The KerasTuner integration: poolnas' space, study and trial recorder seen from KerasTuner.

=================  ============================================================================
module             what it owns
=================  ============================================================================
``_hypermodel``    :class:`PoolNASHyperModel`: a search space as a ``keras_tuner.HyperModel``
                   (one ``hp.Choice`` per parameter; ``build`` is poolnas' own model)
``_oracle``        :class:`OptunaOracle`: a drop-in for KerasTuner's ``RandomSearchOracle``
                   backed by an Optuna study (any space; one objective or a Pareto front), and
                   :class:`OptunaSearch`, ``RandomSearch`` with it
``_distributions`` KerasTuner hyperparameters (conditions included) as Optuna distributions
``_engine``        :class:`KerasTunerRunner` (``poolnas search --engine keras-tuner``): one of
                   KerasTuner's tuners (:data:`TUNERS`) proposes, a poolnas study records
``_live_trials``   Optuna trials told outside ``study.optimize``: :class:`LiveTrial` (worker
                   and heartbeat), :class:`RunningCandidate`, :class:`FixedSampler`
=================  ============================================================================

What must stay true:

- The oracle (for a poolnas space) and the engine record trials only through
  :class:`~poolnas.search.TrialRecorder` (``begin`` → ``record_trained`` → ``completed``)
  and take the trial seed from it; they create or resume a study only through
  ``poolnas.search._settings.create_or_resume`` (a general space's plain Optuna study:
  ``create_or_resume_general``).
- KerasTuner (and with it TensorFlow) is imported only when :class:`PoolNASHyperModel` or
  :class:`OptunaOracle`/:class:`OptunaSearch` is asked for: ``import poolnas.search`` and
  the CLI's parser (which lists :data:`TUNERS`) do not import it.
- The hypermodel marks the ``HyperParameters`` it declares (``_hypermodel.HYPERMODEL_ATTR``),
  which is how the oracle of a plain ``Tuner(oracle=..., hypermodel=...)`` learns it; that tie
  stays inside this subpackage.
- Nothing here imports ``poolnas.dashboards``: dashboard notes come as
  :class:`~poolnas.search.TrialHooks` (``hooks=``), wired by the CLI or the user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from poolnas.search.keras_tuner._engine import TUNERS, KerasTunerRunner

if TYPE_CHECKING:
    from poolnas.search.keras_tuner._hypermodel import PoolNASHyperModel
    from poolnas.search.keras_tuner._oracle import OptunaOracle, OptunaSearch

__all__ = ["KerasTunerRunner", "OptunaOracle", "OptunaSearch", "PoolNASHyperModel", "TUNERS"]


def __getattr__(name: str):
    # KerasTuner (and with it TensorFlow) is imported only when these are asked for.
    if name == "PoolNASHyperModel":
        from poolnas.search.keras_tuner._hypermodel import PoolNASHyperModel

        return PoolNASHyperModel
    if name in ("OptunaOracle", "OptunaSearch"):
        from poolnas.search.keras_tuner import _oracle

        return getattr(_oracle, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
