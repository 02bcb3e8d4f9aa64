"""Fused training: several candidates trained together in one traced step.

:func:`evaluate_architectures` is :func:`~poolnas.evaluators.evaluate_architecture` for a batch
of K candidates. The idea is HFTA's (Wang et al., *Horizontally Fused Training Array*, MLSys
2021): many small training jobs leave an accelerator (or a CPU's cores) idle between their tiny
kernels and spend more time in the framework than in arithmetic; trained as one array, one step
launches every job's kernels at once, and the framework's fixed costs (the step call, the
optimizer's dispatch, the host synchronisation) are paid once per step instead of once per job.

Here each *member* (a candidate and one of its repeats) keeps everything of its own: its Keras
model (built in one cleared session, seeded with the member's seed exactly as
:func:`~poolnas.evaluators.fresh_model` seeds it), its optimizer and its slots (the same fused
update, :func:`~poolnas.evaluators.fuse_updates`), its loss, and its own order of batches
(``data.train_dataset(batch_size, seed=member_seed)``). One ``tf.function`` runs the forward
passes of all members, one gradient of the sum of their losses (the gradient of a sum is each
member's own gradient, exactly: no member's loss reaches another member's weights), and every
member's update. So a member trains *exactly* as it would alone: the same initial weights, the
same batches, the same updates (the tests compare the accuracies; the weights agree to float
rounding of a differently scheduled graph). What the array shares is the step, not the data.

A member whose loss turns NaN or infinite fails alone: its weights are its own, so its NaNs
reach no other member; it is reported as :class:`~poolnas.evaluators.TrialDiverged` and the
others train on. (Its arithmetic continues to the end of training: dropping it would mean
tracing the step again, which costs more than the member.) A candidate whose model cannot be
built (images too small for it) fails alone too.

Nothing here is CPU-specific: the step is plain Keras layers, ``tf.GradientTape`` and the
optimizers' own updates, placed by TensorFlow on whatever device it has.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from poolnas.evaluators._flops import count_cost
from poolnas.evaluators._training import (
    _SCORE_BATCH,
    Evaluation,
    TrialDiverged,
    _compile_for_training,
    _score,
    _train_members,
)
from poolnas.spaces import build_model

if TYPE_CHECKING:
    from poolnas.evaluators._data import Dataset
    from poolnas.evaluators._training import Budget
    from poolnas.spaces import Architecture

#: What :func:`evaluate_architectures` returns per candidate: its evaluation or why it failed.
Outcome = Evaluation | Exception


def evaluate_architectures(
    archs: Sequence[Architecture], data: Dataset, budget: Budget, *, seeds: Sequence[int],
    models: Sequence[Any] | None = None, interrupted: Callable[[], bool] | None = None,
) -> list[Outcome]:
    """Build, cost, train and validate several candidates together: one fused training.

    Candidate ``i`` trains ``budget.repeats`` models with seeds ``seeds[i], seeds[i] + 1, …``,
    each exactly as :func:`~poolnas.evaluators.evaluate_architecture` trains it alone (initial
    weights and batch order from its seed), but all members of all candidates run in one
    traced training step over their own batches (see the module docstring).

    Args:
        archs: The candidates (one is fine: it is then one traced step for its repeats).
        data: The data set.
        budget: Every candidate's training budget.
        seeds: The first seed of each candidate.
        models: Prebuilt untrained first-repeat models, one per candidate or None (built
            here); they must live in the current Keras session (it is not cleared then).
        interrupted: Asked before every training step; True raises :class:`KeyboardInterrupt`.

    Returns:
        One outcome per candidate, in order: its :class:`~poolnas.evaluators.Evaluation`, or
        the exception that failed it alone (:class:`~poolnas.evaluators.TrialDiverged`, or a
        :class:`~poolnas.spaces.PoolnasError` when its model cannot be built for the data).
        The seconds of shared phases (trace, train) are divided evenly among the candidates
        trained, so that they add up to the wall time.

    Raises:
        KeyboardInterrupt: ``interrupted`` said so.
        ValueError: ``seeds`` (or ``models``) does not have one entry per candidate.
    """
    import keras

    if len(seeds) != len(archs) or (models is not None and len(models) != len(archs)):
        raise ValueError("evaluate_architectures needs one seed (and model) per candidate")
    started = time.perf_counter()
    outcomes: list[Outcome | None] = [None] * len(archs)
    # ---------------------------------------------------------------- build every member
    if models is None or all(m is None for m in models):
        keras.backend.clear_session()
    members: list[tuple[int, int, Any]] = []  # (candidate, seed, model)
    costs: dict[int, Any] = {}
    build = [0.0] * len(archs)
    cost_seconds = [0.0] * len(archs)
    for i, arch in enumerate(archs):
        try:
            for repeat in range(budget.repeats):
                tick = time.perf_counter()
                seed = seeds[i] + repeat
                prebuilt = models[i] if models is not None and repeat == 0 else None
                if prebuilt is not None:
                    model = prebuilt
                else:
                    keras.utils.set_random_seed(seed)
                    model = build_model(arch, data.input_shape, data.num_classes,
                                        input_scale=data.input_scale,
                                        input_offset=data.input_offset,
                                        augment=budget.augment)
                build[i] += time.perf_counter() - tick
                if i not in costs:
                    tick = time.perf_counter()
                    costs[i] = count_cost(model)
                    cost_seconds[i] += time.perf_counter() - tick
                members.append((i, seed, model))
        except Exception as error:  # noqa: BLE001 - this candidate fails alone
            outcomes[i] = error
            members = [m for m in members if m[0] != i]
    if not members:
        return list(outcomes)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- compile (no tracing)
    tick = time.perf_counter()
    for _, _, model in members:
        _compile_for_training(model, budget)
    compile_seconds = time.perf_counter() - tick
    trained = _train_members([model for _, _, model in members],
                             [seed for _, seed, _ in members], data, budget,
                             interrupted=interrupted)
    fit_seconds, trace, diverged = trained.seconds, trained.trace, trained.diverged

    # ---------------------------------------------------------------- score, per candidate
    accuracies: dict[int, list[float]] = {}
    evaluate = [0.0] * len(archs)
    for m, (i, _, model) in enumerate(members):
        if outcomes[i] is not None:
            continue
        if m in diverged:
            epoch, loss = diverged[m]
            outcomes[i] = TrialDiverged(
                f"training diverged at epoch {epoch} (loss {loss}); try a lower learning rate",
                epoch=epoch, loss=loss)
            continue
        tick = time.perf_counter()
        scores = _score(model, data.val_dataset(max(budget.batch_size, _SCORE_BATCH)))
        evaluate[i] += time.perf_counter() - tick
        if not math.isfinite(scores["loss"]):
            outcomes[i] = TrialDiverged(
                f"the trained model's val loss is {scores['loss']}; try a lower learning rate",
                loss=scores["loss"])
            continue
        accuracies.setdefault(i, []).append(float(scores["accuracy"]))

    trained = sorted({i for i, _, _ in members})
    share = 1.0 / len(trained)
    last_model = {i: model for i, _, model in members}
    for i in trained:
        if outcomes[i] is not None:
            continue
        values = accuracies[i]
        seconds = {
            "build": build[i], "cost": cost_seconds[i], "compile": compile_seconds * share,
            "trace": trace * share, "train": (fit_seconds - trace) * share,
            "evaluate": evaluate[i],
        }
        seconds["total"] = (time.perf_counter() - started) * share
        outcomes[i] = Evaluation(
            arch=archs[i],
            accuracy=statistics.fmean(values),
            accuracy_std=statistics.stdev(values) if len(values) > 1 else 0.0,
            accuracies=tuple(values),
            flops=costs[i].flops, macs=costs[i].macs, params=costs[i].params,
            train_seconds=seconds["trace"] + seconds["train"],
            seconds=seconds,
            model=last_model[i],
        )
    return list(outcomes)  # type: ignore[arg-type]

