"""What a poolnas study and its trials store: every attribute name, defined once.

A trial of a poolnas study carries these Optuna user attrs (:class:`TrialAttrs`); the study
carries its settings under :data:`STUDY_ATTR` (see :mod:`poolnas.search._settings`). Every
module that writes or reads them, in ``search/`` and ``dashboards/``, names them from here, so
that a renamed field is one edit and a misspelt one is a NameError, not a silent miss.
"""

from __future__ import annotations

from typing import Final

#: The study's user attr that holds its settings (data, budget, space, costs; see _settings).
STUDY_ATTR: Final = "poolnas"


class TrialAttrs:
    """The user-attr names of a poolnas trial.

    Every trial: ``ARCHITECTURE`` (the key), ``FLOPS``, ``MACS``, ``PARAMS`` (and
    ``LATENCY_MS`` in a study whose cost is latency), ``EPOCHS`` and
    ``WORKER`` (who runs it). A trained trial: ``ACCURACIES`` (one per seed),
    ``ACCURACY_STD``, ``TRAIN_SECONDS``, ``SECONDS`` (wall time by phase), ``MODEL_ARTIFACT``
    and ``DIAGRAM_ARTIFACT`` (Optuna artifact ids). Where they apply: ``DUPLICATE_OF`` (the
    trial whose results were reused), ``INFEASIBLE`` (why the FLOPs budget ruled it out),
    ``FAIL_REASON``, ``RETRY_OF`` (the attempt a retry repeats), ``REPEAT_OF`` (a re-evaluation:
    the first trial of the architecture it trains again, with another seed), ``HEARTBEAT``
    (journal files), and, for trials a KerasTuner tuner ran, ``KERAS_TUNER_TRIAL`` and
    ``CONTINUES``; a general KerasTuner space's trial also ``KERAS_TUNER_VALUES``. A
    multi-fidelity trial: ``RUNG``, ``EPOCHS_TRAINED``, ``RUNG_ACCURACIES`` and, for a
    promotion, ``PROMOTED_FROM``.
    """

    ARCHITECTURE: Final = "architecture"
    FLOPS: Final = "flops"
    #: Predicted latency in ms (studies searched with ``--cost latency``).
    LATENCY_MS: Final = "latency_ms"
    MACS: Final = "macs"
    PARAMS: Final = "params"
    EPOCHS: Final = "epochs"
    ACCURACIES: Final = "accuracies"
    ACCURACY_STD: Final = "accuracy_std"
    TRAIN_SECONDS: Final = "train_seconds"
    SECONDS: Final = "seconds"
    MODEL_ARTIFACT: Final = "model_artifact"
    DIAGRAM_ARTIFACT: Final = "diagram_artifact"
    DUPLICATE_OF: Final = "duplicate_of"
    INFEASIBLE: Final = "infeasible"
    FAIL_REASON: Final = "fail_reason"
    RETRY_OF: Final = "retry_of"
    REPEAT_OF: Final = "repeat_of"
    WORKER: Final = "worker"
    HEARTBEAT: Final = "heartbeat"
    KERAS_TUNER_TRIAL: Final = "keras_tuner_trial"
    #: A general (not poolnas) KerasTuner space: the trial's KerasTuner values, whole.
    KERAS_TUNER_VALUES: Final = "keras_tuner_values"
    CONTINUES: Final = "continues"
    #: Multi-fidelity search (``--min-epochs``, :mod:`._multi_fidelity`): the rung a trial
    #: trained its architecture to (0 = the lowest), the epochs trained so far, the accuracy
    #: at every rung reached, and the trial a promotion continues.
    RUNG: Final = "rung"
    EPOCHS_TRAINED: Final = "epochs_trained"
    RUNG_ACCURACIES: Final = "rung_accuracies"
    PROMOTED_FROM: Final = "promoted_from"

    #: What a duplicate copies from the trial that was trained (its results, not its timings).
    REUSED: Final = (ACCURACY_STD, ACCURACIES, TRAIN_SECONDS, MODEL_ARTIFACT, INFEASIBLE)
    #: What a retry keeps from the attempt that died (the rest is measured again).
    KEPT_BY_RETRY: Final = (ARCHITECTURE, PROMOTED_FROM, RUNG)
