"""Training and evaluation: what a candidate architecture is worth on a data set.

:func:`evaluate_architecture` is what a search calls per trial: it builds the architecture's Keras
model, counts its cost, trains it ``budget.repeats`` times with consecutive seeds and returns an
:class:`Evaluation` with the mean validation accuracy. :func:`retrain_and_test` trains a chosen
architecture once more on train + validation and scores it on the test split, which the search
never sees.

Every model starts from ``keras.backend.clear_session()`` (Keras' global state does not pile up
over a long search) and ``keras.utils.set_random_seed(seed)``: on one machine, the same seed gives
the same accuracy, without TensorFlow's op determinism (measured on CPU: bit-identical weights
across runs and processes). A loss that turns NaN or infinite raises :class:`TrialDiverged`.

TensorFlow would keep each trained model's traced training step for the life of the process
(:func:`poolnas.spaces.release_training_graphs` explains why); training runs inside that context
manager, so memory stays flat over a long search (measured in ``docs/benchmarks.md``).

The optimizer's update is TensorFlow's fused kernel (:func:`fuse_updates`): the same Adam or
momentum step as Keras', traced in half the time.

Training is poolnas' own traced step (:func:`_train_members`), not ``model.fit``: the same
forward pass, loss, gradient and update over the same batches — the weights are bit for bit
``fit``'s on CPU (tested) — without what ``fit`` adds per step and a trial never reads (the
compiled metrics, the loss tracker, the callbacks). It traces faster and steps faster
(``benchmarks/trial_overhead.py``, "loop"). One model or several
(:func:`~poolnas.evaluators.evaluate_architectures`) train in the same loop.

Validation and test scores are computed by calling the model eagerly on large batches, not with
``model.evaluate``: that would trace a test step for every model (0.3–0.6 s on digits, more than
the evaluation itself), and a trial scores its model once.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from poolnas.evaluators._flops import count_cost
from poolnas.spaces import PoolnasError, build_model, release_training_graphs

if TYPE_CHECKING:
    import keras

    from poolnas.evaluators._data import Dataset
    from poolnas.spaces import Architecture

#: Optimizers a :class:`Budget` may name.
OPTIMIZERS = ("adam", "adamw", "sgd")
_SGD_MOMENTUM = 0.9


class TrialDiverged(RuntimeError):
    """Training produced a NaN or infinite loss.

    Not a :class:`~poolnas.spaces.PoolnasError`: nothing the user typed is wrong, this candidate
    (with this learning rate) just does not train. A search records the trial as failed.

    Attributes:
        epoch: The epoch (from 1) whose loss was not finite, or ``None`` if it was the
            evaluation.
        loss: The loss value.
    """

    def __init__(self, message: str, *, epoch: int | None = None, loss: float = math.nan):
        super().__init__(message)
        self.epoch = epoch
        self.loss = loss


@dataclass(frozen=True, kw_only=True)
class Budget:
    """How much training one candidate gets.

    Args:
        epochs: Passes over the training split.
        batch_size: Examples per step.
        learning_rate: The optimizer's (constant) learning rate.
        optimizer: ``adam``, ``adamw`` (Keras' default weight decay) or ``sgd`` (momentum 0.9).
        repeats: Trainings per candidate, with seeds ``seed, seed + 1, …``; the accuracy is
            their mean.
        augment: Random horizontal flips and small shifts during training.

    Raises:
        PoolnasError: A value is out of range or the optimizer is unknown.
    """

    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    repeats: int = 1
    augment: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PoolnasError(f"{name} must be a positive integer, got {value!r}")
        rate = self.learning_rate
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise PoolnasError(f"learning_rate must be a positive number, got {rate!r}")
        object.__setattr__(self, "learning_rate", float(rate))
        if self.optimizer not in OPTIMIZERS:
            raise PoolnasError(
                f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}"
            )
        if not isinstance(self.augment, bool):
            raise PoolnasError(f"augment must be True or False, got {self.augment!r}")

    def make_optimizer(self) -> keras.optimizers.Optimizer:
        """A fresh Keras optimizer for one training."""
        import keras

        if self.optimizer == "sgd":
            return keras.optimizers.SGD(self.learning_rate, momentum=_SGD_MOMENTUM)
        if self.optimizer == "adamw":
            return keras.optimizers.AdamW(self.learning_rate)
        return keras.optimizers.Adam(self.learning_rate)


@dataclass(frozen=True)
class Evaluation:
    """What one architecture scored, what it costs and how long it took.

    Attributes:
        arch: The architecture.
        accuracy: Mean validation accuracy over the repeats.
        accuracy_std: Sample standard deviation of the repeats (0 for one repeat).
        accuracies: Validation accuracy of each repeat, in seed order.
        flops: FLOPs at batch 1 (TensorFlow profiler convention).
        macs: Multiply-accumulates of convolutions and dense layers.
        params: Parameters (``model.count_params()``).
        train_seconds: Wall time spent in ``fit`` (tracing included), summed over repeats.
        seconds: Wall time by phase, summed over repeats: ``build``, ``cost``, ``compile``,
            ``trace`` (first epoch minus a steady one; 0 with one epoch, where it is part of
            ``train``), ``train``, ``evaluate`` and ``total``.
        model: The last trained Keras model (not part of equality or repr), e.g. to save its
            weights.
    """

    arch: Architecture
    accuracy: float
    accuracy_std: float
    accuracies: tuple[float, ...]
    flops: int
    macs: int
    params: int
    train_seconds: float
    seconds: dict[str, float]
    model: Any = field(default=None, compare=False, repr=False)


def train_model(
    model: keras.Model, data: Dataset, budget: Budget, *, seed: int,
    interrupted: Callable[[], bool] | None = None,
) -> tuple[float, dict[str, Any]]:
    """Compile and train ``model`` on the training split, then score it on validation.

    Seed the model's initial weights by calling ``keras.utils.set_random_seed(seed)`` before
    building it (:func:`evaluate_architecture` does); this function calls it again and seeds
    the order of the batches with ``seed``. The model is (re)compiled with ``budget``'s
    optimizer.

    Args:
        model: An uncompiled model whose input takes ``data``'s images as stored.
        data: The data set.
        budget: Epochs, batch size, optimizer.
        seed: Seed of the batch order.
        interrupted: Asked before every training batch; True raises
            :class:`KeyboardInterrupt` there. A search passes "a stop signal arrived": the
            exception its signal handler raises can be swallowed, or turned into another error,
            when it lands inside TensorFlow's C++ code, and this catches the signal at the next
            batch.

    Returns:
        ``(val_accuracy, info)``; ``info`` holds ``seconds`` (``compile``, ``trace``, ``train``,
        ``evaluate``), ``epoch_seconds``, ``losses`` (mean training loss per epoch) and
        ``val_loss``.

    Raises:
        TrialDiverged: A loss became NaN or infinite.
    """
    return _train_and_score(model, data, budget, seed=seed, split="val", interrupted=interrupted)


def evaluate_architecture(
    arch: Architecture, data: Dataset, budget: Budget, *, seed: int,
    model: keras.Model | None = None, interrupted: Callable[[], bool] | None = None,
    state: TrainingState | None = None,
) -> Evaluation:
    """Build, cost, train and validate ``arch``: one search trial.

    Trains ``budget.repeats`` fresh models with seeds ``seed, seed + 1, …`` and reports their mean
    validation accuracy. The Keras session is cleared before each model is built, never after,
    so the returned model stays usable.

    Args:
        arch: The candidate.
        data: The data set (its input scale and offset go into the model).
        budget: How much training each repeat gets.
        seed: Seed of the first repeat.
        model: The first repeat's model, already built by :func:`fresh_model` with ``seed``
            (a search builds it to count its cost before deciding to train it); None: built
            here.
        interrupted: As for :func:`train_model`.
        state: Continue a training from this checkpoint (its weights, optimizer state and
            epochs done) up to ``budget.epochs``, with the batch order an uninterrupted
            training with ``seed`` would have seen; needs ``budget.repeats == 1``. A
            multi-fidelity search continues a promoted architecture so.

    Returns:
        The :class:`Evaluation`.

    Raises:
        PoolnasError: The data's images are too small for ``arch``.
        TrialDiverged: A repeat's loss became NaN or infinite.
    """
    if state is not None and budget.repeats != 1:
        raise PoolnasError("a training continued from a checkpoint has one repeat")
    started = time.perf_counter()
    seconds = dict.fromkeys(("build", "cost", "compile", "trace", "train", "evaluate"), 0.0)
    accuracies = []
    cost = None
    prebuilt = model
    for repeat in range(budget.repeats):
        tick = time.perf_counter()
        if repeat == 0 and prebuilt is not None:
            model = prebuilt
        else:
            model = fresh_model(arch, data, budget, seed=seed + repeat)
        seconds["build"] += time.perf_counter() - tick
        if cost is None:
            tick = time.perf_counter()
            cost = count_cost(model)
            seconds["cost"] += time.perf_counter() - tick
        accuracy, info = _train_and_score(model, data, budget, seed=seed + repeat, split="val",
                                          interrupted=interrupted, state=state)
        accuracies.append(accuracy)
        for phase, value in info["seconds"].items():
            seconds[phase] += value
    seconds["total"] = time.perf_counter() - started
    return Evaluation(
        arch=arch,
        accuracy=statistics.fmean(accuracies),
        accuracy_std=statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        accuracies=tuple(accuracies),
        flops=cost.flops,
        macs=cost.macs,
        params=cost.params,
        train_seconds=seconds["trace"] + seconds["train"],
        seconds=seconds,
        model=model,
    )


def retrain_and_test(
    arch: Architecture, data: Dataset, budget: Budget, *, seed: int
) -> tuple[float, keras.Model]:
    """Train ``arch`` afresh on train + validation and score it once on the test split.

    This is the honest final number for an architecture the search chose; ``budget.repeats``
    is ignored (one model).

    Returns:
        ``(test_accuracy, model)``.

    Raises:
        TrialDiverged: The loss became NaN or infinite.
    """
    model = fresh_model(arch, data, budget, seed=seed)
    accuracy, _ = _train_and_score(model, data.train_plus_val(), budget, seed=seed, split="test")
    return accuracy, model


def fresh_model(arch: Architecture, data: Dataset, budget: Budget, *, seed: int) -> keras.Model:
    """``arch``'s untrained model for ``data`` in a cleared Keras session, seeded by ``seed``.

    This is how every trained model starts; a caller that needs the model before training (to
    count its cost) builds it here and hands it to :func:`evaluate_architecture`.
    """
    import keras

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    return build_model(
        arch,
        data.input_shape,
        data.num_classes,
        input_scale=data.input_scale,
        input_offset=data.input_offset,
        augment=budget.augment,
    )


def fuse_updates(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """``optimizer`` updating each variable with one fused TensorFlow op; returned for chaining.

    Keras 3's TensorFlow optimizers route every update through ``tf.distribute`` (an all-reduce
    of the gradients and a cross-replica ``merge_call``, also without a distribution strategy)
    and then apply Adam as eight element-wise ops per variable. Tracing all of that is about
    0.4 s of a digits trial's first epoch, more than half of its training steps. For Adam and
    AdamW (without AMSGrad) and SGD with momentum, this replaces the optimizer's update with
    TensorFlow's fused kernels (``ResourceApplyAdam``, ``ResourceApplyKerasMomentum``), which
    compute the same formula as Keras on the optimizer's own slot variables. They agree to
    rounding but for one constant: TensorFlow's Adam kernel forms ``1 - beta_2`` from float32
    ``beta_2`` (0.00099998713 instead of 0.001, relative 1.3e-5), so the second-moment slots
    differ in the fifth digit and the weights by ~1e-5 of their change after 20 steps
    (``tests/evaluators/test_training.py``), far below what another seed changes. Everything
    else stays Keras': the learning rate, the step counter, AdamW's weight decay, and the class,
    so a saved model carries a plain Keras optimizer with the trained slots. Other optimizers,
    and other backends, are returned unchanged.
    """
    import types

    import keras

    if keras.backend.backend() != "tensorflow":
        return optimizer
    if type(optimizer) in (keras.optimizers.Adam, keras.optimizers.AdamW) and not optimizer.amsgrad:
        update = _fused_adam
    elif (type(optimizer) is keras.optimizers.SGD and optimizer.momentum > 0
          and not optimizer.nesterov):
        update = _fused_momentum
    else:
        return optimizer
    # An attribute of this instance, not a subclass: the class (and what is saved) is Keras'.
    optimizer._backend_update_step = types.MethodType(update, optimizer)
    return optimizer


def _fused_adam(self, grads, variables, learning_rate) -> None:
    import tensorflow as tf

    constants: dict[Any, dict[str, Any]] = {}  # per dtype, built once per traced step
    for grad, variable in zip(grads, variables):
        dtype = variable.dtype
        if dtype not in constants:
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            constants[dtype] = dict(
                beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
                epsilon=tf.cast(self.epsilon, dtype),
            )
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]), grad=tf.cast(grad, dtype), **constants[dtype],
        )


def _fused_momentum(self, grads, variables, learning_rate) -> None:
    import tensorflow as tf

    for grad, variable in zip(grads, variables):
        dtype = variable.dtype
        accum = self.momentums[self._get_variable_index(variable)]
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=_handle(variable), accum=_handle(accum),
            lr=tf.cast(learning_rate, dtype), grad=tf.cast(grad, dtype),
            momentum=tf.cast(self.momentum, dtype),
        )


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable."""
    return getattr(variable, "value", variable).handle


@dataclass(frozen=True, eq=False)
class TrainingState:
    """A checkpoint of one training: what continuing it needs.

    Attributes:
        epochs: Epochs trained so far.
        weights: The model's weights (``model.get_weights()``).
        optimizer: The values of the optimizer's variables (step counter, learning rate,
            moments), in the order of ``model.optimizer.variables``.
    """

    epochs: int
    weights: list[Any]
    optimizer: list[Any]

    @classmethod
    def of(cls, model: keras.Model, epochs: int) -> TrainingState:
        """The state of a compiled, trained ``model`` after ``epochs`` epochs."""
        return cls(epochs=int(epochs), weights=model.get_weights(),
                   optimizer=[v.numpy() for v in model.optimizer.variables])

    @classmethod
    def load(cls, path: str, epochs: int) -> TrainingState:
        """The state saved in a ``.keras`` file (``model.save`` of a compiled model keeps its
        optimizer's variables) after ``epochs`` epochs."""
        import keras

        model = keras.saving.load_model(path, compile=True)
        if model.optimizer is None or not model.optimizer.variables:
            raise PoolnasError(f"{path} holds no optimizer state to continue training from")
        try:
            return cls.of(model, epochs)
        finally:
            del model
            keras.backend.clear_session()

    def restore(self, model: keras.Model) -> None:
        """Load this state into ``model``, compiled with the same kind of optimizer and that
        optimizer built (the evaluator builds it before training)."""
        model.set_weights(self.weights)
        variables = model.optimizer.variables
        if len(variables) != len(self.optimizer):
            raise PoolnasError(
                f"the checkpoint's optimizer has {len(self.optimizer)} variables and this "
                f"training's {len(variables)}: it was trained with another optimizer")
        for variable, value in zip(variables, self.optimizer):
            variable.assign(value)


# ---------------------------------------------------------------------------------------- internals
#: Iterators Keras 3's ``fit`` makes of a training pipeline per epoch (without
#: ``steps_per_epoch``): one as each epoch begins, and one as it ends (for a next epoch that
#: does not use it). Each draws a new shuffle order, so epoch ``k`` of a training sees the
#: ``2k - 1``-th order of its pipeline. A continued training skips as many
#: (``tests/evaluators/test_training.py`` checks it gives the uninterrupted weights).
_ITERATORS_PER_EPOCH = 2


@dataclass(frozen=True)
class _Trained:
    """What :func:`_train_members` did.

    Attributes:
        epoch_seconds: Wall time of each epoch trained.
        losses: Per member, its mean training loss of each epoch trained.
        diverged: Member index → (epoch from 1, loss) where its epoch's mean loss was not finite.
        seconds: Wall time of the whole training.
        trace: The first epoch minus a steady one (tracing and graph optimisation); 0 with one
            epoch, where it is part of the first.
    """

    epoch_seconds: tuple[float, ...]
    losses: tuple[tuple[float, ...], ...]
    diverged: dict[int, tuple[int, float]]
    seconds: float
    trace: float


def _train_members(
    models: list[keras.Model], seeds: list[int], data: Dataset, budget: Budget, *,
    start: int = 0, interrupted: Callable[[], bool] | None = None,
) -> _Trained:
    """Train compiled ``models`` (their optimizers built) from epoch ``start`` to
    ``budget.epochs``, all in one traced step; model ``m`` on the batch order of ``seeds[m]``.

    This is poolnas' training loop, for one model (:func:`train_model`,
    :func:`evaluate_architecture`, :func:`retrain_and_test`) and for several
    (:func:`~poolnas.evaluators.evaluate_architectures`). The step is what Keras' ``fit``
    traces, less what a trial does not use (the compiled metrics, the loss tracker, the
    callbacks): each model's forward pass, its compiled loss (``_compute_loss``: the loss and
    the model's own losses) scaled by its optimizer, one gradient of the sum of the losses
    (each model's own: no loss reaches another model's weights) and each model's update. Its
    trace is about a third shorter than ``fit``'s and its steps are faster
    (``benchmarks/trial_overhead.py``), and a model trained here has the weights, bit for bit on
    CPU, that ``model.fit`` gives it over the same batches
    (``tests/evaluators/test_training.py``), so tables built with ``fit`` still hold.

    Each model's batches come in the order ``fit`` draws them: Keras 3's ``fit`` opens the
    pipeline twice per epoch (:data:`_ITERATORS_PER_EPOCH`) and each opening reshuffles, so this
    loop skips one order between epochs, and ``2 * start`` before continuing a training.

    ``interrupted`` is asked before every step (True raises :class:`KeyboardInterrupt`). A
    model whose epoch loss is not finite is recorded in ``diverged``; its arithmetic goes on
    (its weights are its own) and training stops once every model has diverged.
    """
    import tensorflow as tf

    count = len(models)
    loss_sums = tf.Variable(tf.zeros([count], tf.float32), trainable=False)
    variables = [model.trainable_variables for model in models]

    def step(batches):
        with tf.GradientTape() as tape:
            losses, scaled = [], []
            for model, (x, y) in zip(models, batches):
                loss = model._compute_loss(x=x, y=y, y_pred=model(x, training=True),
                                           training=True)
                losses.append(tf.cast(loss, tf.float32))
                scaled.append(model.optimizer.scale_loss(loss))
            total = tf.add_n([tf.cast(s, tf.float32) for s in scaled])
        gradients = tape.gradient(total, variables)
        for model, grads, weights in zip(models, gradients, variables):
            model.optimizer.apply_gradients(zip(grads, weights))
        loss_sums.assign_add(tf.stack(losses))

    # One trace for the whole training; reduce_retracing keeps it one (every batch is full).
    traced = tf.function(step, reduce_retracing=True, autograph=False)
    dataset = tf.data.Dataset.zip(tuple(_batches(data, budget, seed) for seed in seeds))
    for _ in range(start * _ITERATORS_PER_EPOCH):
        iter(dataset)  # The orders of the epochs already trained.
    epoch_seconds: list[float] = []
    losses: list[list[float]] = [[] for _ in models]
    diverged: dict[int, tuple[int, float]] = {}
    tick = time.perf_counter()
    with release_training_graphs():
        for epoch in range(start, budget.epochs):
            begun = time.perf_counter()
            loss_sums.assign(tf.zeros([count], tf.float32))
            steps = 0
            if epoch > start:
                iter(dataset)  # The order fit draws and discards as an epoch ends.
            for batches in dataset:
                if interrupted is not None and interrupted():
                    raise KeyboardInterrupt("stopped")
                traced(batches)
                steps += 1
            means = loss_sums.numpy() / max(steps, 1)
            epoch_seconds.append(time.perf_counter() - begun)
            for m, value in enumerate(means):
                losses[m].append(float(value))
                if m not in diverged and not math.isfinite(float(value)):
                    diverged[m] = (epoch + 1, float(value))
            if len(diverged) == count:
                break
    seconds = time.perf_counter() - tick
    trace = 0.0
    if len(epoch_seconds) > 1:
        trace = max(0.0, epoch_seconds[0] - statistics.median(epoch_seconds[1:]))
    return _Trained(epoch_seconds=tuple(epoch_seconds),
                    losses=tuple(tuple(v) for v in losses), diverged=diverged,
                    seconds=seconds, trace=trace)


def _compile_for_training(model: keras.Model, budget: Budget) -> None:
    """Compile ``model`` for :func:`_train_members`: ``budget``'s optimizer with the fused
    update, built now (variables created inside the first traced step make TensorFlow trace it
    twice). The metric is compiled for the saved model's configuration, which a user may load
    and fit; poolnas' training step does not update it."""
    import keras

    model.compile(
        optimizer=fuse_updates(budget.make_optimizer()),
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    model.optimizer.build(model.trainable_variables)


def _batches(data: Dataset, budget: Budget, seed: int) -> Any:
    """A model's training batches in the order of ``seed``: tf.data's shuffle combines its own
    seed with TensorFlow's global one, which this sets to ``seed`` first (as every training
    does before building its model)."""
    import keras

    keras.utils.set_random_seed(seed)
    return data.train_dataset(budget.batch_size, seed=seed)


#: Examples per eager inference call when scoring (inference keeps no activations for a backward
#: pass, so this is safe wherever a training batch of the same size fits).
_SCORE_BATCH = 256
#: Keras clips probabilities to [ε, 1 − ε] before the log in its cross-entropy.
_EPSILON = 1e-7



def _score(model: keras.Model, batches) -> dict[str, float]:
    """Accuracy and mean sparse categorical cross-entropy of ``model`` on ``batches``.

    The model is called eagerly, batch by batch: no test step is traced. Equal to
    ``model.evaluate`` up to float rounding of the loss (the tests check both).
    """
    import numpy as np

    correct = 0
    total = 0
    loss = 0.0
    for images, labels in batches:
        probs = np.asarray(model(images, training=False), dtype=np.float64)
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        probs = probs / probs.sum(axis=-1, keepdims=True)
        picked = np.clip(probs[np.arange(len(labels)), labels], _EPSILON, 1.0 - _EPSILON)
        loss -= float(np.log(picked).sum())
        correct += int((probs.argmax(axis=-1) == labels).sum())
        total += len(labels)
    if total == 0:
        raise PoolnasError("nothing to score: the split has no examples")
    return {"accuracy": correct / total, "loss": loss / total}


def _train_and_score(
    model: keras.Model, data: Dataset, budget: Budget, *, seed: int, split: str,
    interrupted: Callable[[], bool] | None = None, state: TrainingState | None = None,
) -> tuple[float, dict[str, Any]]:
    tick = time.perf_counter()
    _compile_for_training(model, budget)
    if state is not None:
        state.restore(model)
    compile_seconds = time.perf_counter() - tick

    trained = _train_members([model], [seed], data, budget,
                             start=0 if state is None else state.epochs, interrupted=interrupted)
    if trained.diverged:
        epoch, loss = trained.diverged[0]
        raise TrialDiverged(
            f"training diverged at epoch {epoch} (loss {loss}); try a lower learning rate",
            epoch=epoch,
            loss=loss,
        )

    tick = time.perf_counter()
    batches = data.val_dataset if split == "val" else data.test_dataset
    scores = _score(model, batches(max(budget.batch_size, _SCORE_BATCH)))
    evaluate_seconds = time.perf_counter() - tick
    if not math.isfinite(scores["loss"]):
        raise TrialDiverged(
            f"the trained model's {split} loss is {scores['loss']}; try a lower learning rate",
            loss=scores["loss"],
        )

    info = {
        "seconds": {
            "compile": compile_seconds,
            "trace": trained.trace,
            "train": trained.seconds - trained.trace,
            "evaluate": evaluate_seconds,
        },
        "epoch_seconds": trained.epoch_seconds,
        "losses": trained.losses[0],
        f"{split}_loss": float(scores["loss"]),
    }
    return float(scores["accuracy"]), info
