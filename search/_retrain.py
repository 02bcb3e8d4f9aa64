"""Retrain and test: the honest final number of the exported architectures.

A search scores each architecture by a cheap accuracy: a few epochs of training, measured on the
validation split. ``poolnas export --retrain-epochs E`` asks what the chosen architectures are
really worth: it reloads the study's data (the data set, its options and the seed stored on the
study give the same split again), trains each architecture from scratch on train + validation for
``E`` epochs, and scores it once on the test split, which the search never saw.

:func:`kendall_tau` then says how well the cheap accuracies ranked the architectures: 1 when the
test accuracies put them in the same order, 0 when the orders are unrelated, -1 when reversed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from poolnas.evaluators import Budget, Dataset, TrialDiverged, load_dataset, retrain_and_test
from poolnas.search._settings import trial_seed
from poolnas.search._trial_attrs import STUDY_ATTR, TrialAttrs
from poolnas.spaces import Architecture, PoolnasError

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Retrained:
    """One architecture trained afresh on train + validation and scored on the test split.

    Attributes:
        trial: The trial number.
        test_accuracy: Accuracy on the test split.
        path: Where the retrained ``.keras`` model was saved.
        test_examples: Size of the test split.
        seconds: Wall time of the retraining and the test.
    """

    trial: int
    test_accuracy: float
    path: Path
    test_examples: int
    seconds: float


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's rank correlation τ-b of two paired sequences, with ties handled as in τ-b.

    ``τ_b = (concordant - discordant) / sqrt((n0 - ties_x) * (n0 - ties_y))`` over the
    ``n0 = n (n - 1) / 2`` pairs, where ``ties_x`` counts the pairs tied in ``x`` (``ties_y``
    likewise). It equals ``scipy.stats.kendalltau``'s default.

    Args:
        x: The first values (e.g. the search's validation accuracies).
        y: The paired second values (e.g. the test accuracies), as many as ``x``.

    Returns:
        τ-b in [-1, 1], or None when it is undefined: fewer than two pairs, or every value of
        ``x`` (or of ``y``) equal.

    Raises:
        ValueError: ``x`` and ``y`` have different lengths.
    """
    if len(x) != len(y):
        raise ValueError(f"kendall_tau needs paired values, got {len(x)} and {len(y)}")
    concordant = discordant = tied_x = tied_y = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx = (x[i] > x[j]) - (x[i] < x[j])
            dy = (y[i] > y[j]) - (y[i] < y[j])
            if dx == 0:
                tied_x += 1
            if dy == 0:
                tied_y += 1
            if dx and dy:
                if dx == dy:
                    concordant += 1
                else:
                    discordant += 1
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    if denominator == 0:
        return None
    return (concordant - discordant) / denominator


def study_data(study: optuna.Study) -> Dataset:
    """The study's data set, loaded with the options and seed it was searched with.

    The split is the search's: the same training and validation examples, and the same test
    examples that no trial saw.

    Raises:
        PoolnasError: The study does not record its seed (made by an older poolnas), the data
            cannot be loaded (e.g. a relative path read from another folder), or they changed
            since the search (other image shape, classes or scaling).
    """
    settings = study.user_attrs[STUDY_ATTR]
    if "seed" not in settings and str(settings.get("engine", "")).startswith(
        "keras-tuner:optuna-oracle"
    ):
        raise PoolnasError(
            f"study {study.study_name!r} was searched by a KerasTuner tuner with OptunaOracle on "
            "data poolnas did not load, so export cannot rebuild its split to retrain; search "
            "with OptunaOracle(dataset=..., data_options=..., data_seed=...) naming data that "
            "poolnas.evaluators.load_dataset loads (the split the tuner was given), or export "
            "without --retrain-epochs"
        )
    if "seed" not in settings:
        raise PoolnasError(
            f"study {study.study_name!r} does not record the seed of its data split (it was made "
            "by an older poolnas), so its test split cannot be rebuilt; export without "
            "--retrain-epochs"
        )
    dataset = settings["dataset"]
    try:
        data = load_dataset(dataset, seed=int(settings["seed"]), **settings["data_options"])
    except PoolnasError as error:
        raise PoolnasError(
            f"cannot reload the study's data set {dataset!r} to retrain: {error} (a relative path "
            "is read from the current folder: run export where the search ran)"
        ) from None
    found = {"input shape": list(data.input_shape), "classes": int(data.num_classes),
             "input scale": (float(data.input_scale), float(data.input_offset))}
    stored = {"input shape": list(settings["input_shape"]),
              "classes": int(settings["num_classes"]),
              "input scale": (float(settings["input_scale"]), float(settings["input_offset"]))}
    for what, value in found.items():
        if value != stored[what]:
            raise PoolnasError(
                f"the data set {dataset!r} changed since the search: its {what} is now "
                f"{value}, the study's is {stored[what]}; retrain needs the data it searched on"
            )
    return data


def retrain_trials(
    study: optuna.Study,
    trials: Sequence[optuna.trial.FrozenTrial],
    *,
    epochs: int,
    into: str | Path,
    progress: Callable[[Retrained, int, int], None] | None = None,
) -> dict[int, Retrained]:
    """Retrain each trial's architecture on train + validation; score it on the test split.

    Each model is trained with the study's budget (batch size, optimizer, learning rate,
    augmentation) but ``epochs`` epochs and one seed, the seed of the trial's first repeat, so
    the result is reproducible. Trials of one architecture are trained once.

    Args:
        study: A poolnas study.
        trials: The trials to retrain (complete ones).
        epochs: Epochs of each retraining.
        into: An existing folder the retrained models are saved in (``trialNNNNN.keras``).
        progress: Called after each architecture as ``progress(retrained, done, total)``.

    Returns:
        ``{trial number: Retrained}``.

    Raises:
        PoolnasError: ``epochs`` is not a positive integer, the data cannot be reloaded (see
            :func:`study_data`), or a retraining diverged.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise PoolnasError(f"--retrain-epochs must be a positive whole number, got {epochs!r}")
    settings = study.user_attrs[STUDY_ATTR]
    data = study_data(study)
    # A KerasTuner study leaves the training to the tuner's search() arguments: poolnas'
    # default training, for the epochs asked.
    budget = Budget(**{**(settings["budget"] or {}), "epochs": epochs, "repeats": 1})
    seed = int(settings["seed"])
    done: dict[int, Retrained] = {}
    by_key: dict[str, Retrained] = {}
    distinct = len({t.user_attrs.get(TrialAttrs.ARCHITECTURE) for t in trials})
    for trial in trials:
        key = trial.user_attrs[TrialAttrs.ARCHITECTURE]
        if key in by_key:
            done[trial.number] = by_key[key]
            continue
        started = time.perf_counter()
        try:
            accuracy, model = retrain_and_test(Architecture.from_key(key), data, budget,
                                               seed=trial_seed(seed, trial.number))
        except TrialDiverged as error:
            raise PoolnasError(f"retraining trial {trial.number} failed: {error}") from None
        path = Path(into) / f"trial{trial.number:05d}.keras"
        model.save(path)
        result = Retrained(trial.number, float(accuracy), path, len(data.y_test),
                           time.perf_counter() - started)
        done[trial.number] = by_key[key] = result
        if progress is not None:
            progress(result, len(by_key), distinct)
    return done

