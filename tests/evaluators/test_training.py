"""Training and evaluation with real TensorFlow on digits, with budgets of one or two epochs."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pytest

from poolnas.evaluators import (
    Budget,
    Dataset,
    Evaluation,
    TrialDiverged,
    count_cost,
    evaluate_architecture,
    fresh_model,
    fuse_updates,
    load_dataset,
    point_costs,
    retrain_and_test,
    train_model,
)
from poolnas.spaces import Architecture, PoolnasError, build_model

#: A small network, so a trial is mostly the (unavoidable) first-step tracing.
ARCH = Architecture.from_key("conv3:8x0/max+projection:16x1")
ONE_EPOCH = Budget(epochs=1, batch_size=128)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


# ---------------------------------------------------------------------------------------- Budget
def test_budget_defaults_and_optimizers() -> None:
    budget = Budget()
    assert (budget.epochs, budget.batch_size, budget.learning_rate) == (5, 64, 3e-3)
    assert (budget.optimizer, budget.repeats, budget.augment) == ("adam", 1, False)
    assert isinstance(Budget(optimizer="adamw").make_optimizer(), keras.optimizers.AdamW)
    sgd = Budget(optimizer="sgd", learning_rate=0.1).make_optimizer()
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9
    with pytest.raises(TypeError):
        Budget(3)  # keyword-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        budget.epochs = 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"epochs": 1.5}, "epochs must be a positive integer"),
        ({"batch_size": True}, "batch_size must be a positive integer"),
        ({"repeats": -1}, "repeats must be a positive integer"),
        ({"learning_rate": 0}, "learning_rate must be a positive number"),
        ({"learning_rate": math.inf}, "learning_rate must be a positive number"),
        ({"learning_rate": "fast"}, "learning_rate must be a positive number"),
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; choose one of: adam, adamw, sgd"),
        ({"augment": "yes"}, "augment must be True or False"),
    ],
)
def test_bad_budget_is_refused(options, message) -> None:
    with pytest.raises(PoolnasError, match=message):
        Budget(**options)


# ---------------------------------------------------------------------------------------- training
def test_same_seed_same_accuracy(digits) -> None:
    budget = Budget(epochs=2, batch_size=128)
    first = evaluate_architecture(ARCH, digits, budget, seed=7)
    second = evaluate_architecture(ARCH, digits, budget, seed=7)
    assert first.accuracy == second.accuracy
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_evaluation_holds_accuracy_cost_and_time(digits) -> None:
    evaluation = evaluate_architecture(ARCH, digits, Budget(epochs=2, batch_size=128), seed=0)
    assert isinstance(evaluation, Evaluation)
    assert evaluation.arch == ARCH
    assert 0.0 <= evaluation.accuracy <= 1.0
    assert evaluation.accuracies == (evaluation.accuracy,) and evaluation.accuracy_std == 0.0
    cost = count_cost(build_model(ARCH, (8, 8, 1), 10, input_scale=1 / 16))
    assert (evaluation.flops, evaluation.macs, evaluation.params) == (
        cost.flops, cost.macs, cost.params
    )
    assert set(evaluation.seconds) == {
        "build", "cost", "compile", "trace", "train", "evaluate", "total"
    }
    assert all(value >= 0 for value in evaluation.seconds.values())
    assert evaluation.train_seconds == pytest.approx(
        evaluation.seconds["trace"] + evaluation.seconds["train"]
    )
    # The model is the trained one: it scores the reported accuracy on validation.
    predicted = evaluation.model.predict(digits.x_val.astype(np.float32), verbose=0).argmax(1)
    assert np.mean(predicted == digits.y_val) == pytest.approx(evaluation.accuracy, abs=1e-6)
    # The model takes no part in equality or repr.
    assert dataclasses.replace(evaluation, model=None) == evaluation
    assert "model=" not in repr(evaluation) and "accuracy=" in repr(evaluation)


def test_repeats_train_fresh_models_with_consecutive_seeds(digits) -> None:
    budget = Budget(epochs=1, batch_size=128, repeats=2)
    evaluation = evaluate_architecture(ARCH, digits, budget, seed=3)
    assert len(evaluation.accuracies) == 2
    assert evaluation.accuracy == pytest.approx(np.mean(evaluation.accuracies))
    assert evaluation.accuracy_std == pytest.approx(np.std(evaluation.accuracies, ddof=1))
    # The second repeat is the seed-4 training.
    single = evaluate_architecture(ARCH, digits, ONE_EPOCH, seed=4)
    assert single.accuracy == evaluation.accuracies[1]
    # Sessions are cleared before models are built, never after: both models still predict.
    for model in (evaluation.model, single.model):
        assert model.predict(digits.x_test[:4].astype(np.float32), verbose=0).shape == (4, 10)


def test_a_prebuilt_model_is_trained_as_if_built_here(digits) -> None:
    """A search builds the model to count its cost; training it gives the very same trial."""
    budget = Budget(epochs=1, batch_size=128)
    model = fresh_model(ARCH, digits, budget, seed=5)
    given = evaluate_architecture(ARCH, digits, budget, seed=5, model=model)
    assert given.model is model
    built = evaluate_architecture(ARCH, digits, budget, seed=5)
    assert given.accuracy == built.accuracy
    assert (given.flops, given.params) == (built.flops, built.params)
    # The per-point FLOPs read off the trained model add up to its total.
    parts = point_costs(ARCH, digits.input_shape, digits.num_classes, compare=False, model=model)
    assert sum(part.cost.flops for part in parts) == given.flops


def test_eager_scores_equal_keras_evaluate(digits) -> None:
    """Scores are computed without tracing a test step, and equal what Keras reports."""
    evaluation = evaluate_architecture(ARCH, digits, ONE_EPOCH, seed=2)
    model = evaluation.model
    scores = model.evaluate(digits.val_dataset(128), verbose=0, return_dict=True)
    assert evaluation.accuracy == pytest.approx(scores["accuracy"], abs=1e-6)
    _, info = train_model(model, digits, Budget(epochs=1, batch_size=128), seed=2)
    again = model.evaluate(digits.val_dataset(64), verbose=0, return_dict=True)
    assert info["val_loss"] == pytest.approx(again["loss"], rel=1e-5)


def test_train_model_reports_losses_and_seconds(digits) -> None:
    keras.utils.set_random_seed(0)
    model = build_model(ARCH, digits.input_shape, digits.num_classes,
                        input_scale=digits.input_scale)
    accuracy, info = train_model(model, digits, Budget(epochs=2, batch_size=128,
                                                       optimizer="sgd"), seed=0)
    assert 0.0 <= accuracy <= 1.0
    assert len(info["losses"]) == 2 and all(math.isfinite(v) for v in info["losses"])
    assert len(info["epoch_seconds"]) == 2 and math.isfinite(info["val_loss"])
    assert set(info["seconds"]) == {"compile", "trace", "train", "evaluate"}


@pytest.mark.parametrize(("optimizer", "augment"), [("adam", False), ("sgd", True)])
def test_poolnas_training_gives_the_weights_and_losses_of_keras_fit(digits, optimizer,
                                                                    augment) -> None:
    """poolnas trains with its own traced step, not ``model.fit``: three epochs (so two
    reshuffles between epochs) give bit for bit the weights, optimizer slots and epoch losses
    that Keras' fit gives the same model over the same batches. The PoolBench tables were
    built with fit; a search trial of the same seed must still score what they hold."""
    budget = Budget(epochs=3, batch_size=128, optimizer=optimizer, augment=augment)
    ours = fresh_model(ARCH, digits, budget, seed=9)
    _, info = train_model(ours, digits, budget, seed=9)
    theirs = fresh_model(ARCH, digits, budget, seed=9)
    keras.utils.set_random_seed(9)
    theirs.compile(optimizer=fuse_updates(budget.make_optimizer()),
                   loss="sparse_categorical_crossentropy")
    theirs.optimizer.build(theirs.trainable_variables)
    history = theirs.fit(digits.train_dataset(128, seed=9), epochs=3, verbose=0, shuffle=False)
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        assert np.array_equal(a, b)
    for a, b in zip(ours.optimizer.variables, theirs.optimizer.variables, strict=True):
        assert np.array_equal(a.numpy(), b.numpy())
    assert info["losses"] == pytest.approx(history.history["loss"], rel=1e-6)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_divergence_raises(digits, optimizer) -> None:
    budget = Budget(epochs=3, batch_size=128, learning_rate=1e12, optimizer=optimizer)
    with pytest.raises(TrialDiverged, match=r"training diverged at epoch 1 \(loss nan\)") as caught:
        evaluate_architecture(ARCH, digits, budget, seed=0)
    assert caught.value.epoch == 1 and math.isnan(caught.value.loss)
    assert not isinstance(caught.value, PoolnasError)


def test_divergence_from_huge_pixels(digits) -> None:
    huge = np.full((64, 8, 8, 1), 3e38, np.float32)
    labels = np.arange(64) % 10
    data = Dataset(name="huge", x_train=huge, y_train=labels, x_val=huge[:10], y_val=labels[:10],
                   x_test=huge[:10], y_test=labels[:10], input_shape=(8, 8, 1), num_classes=10)
    with pytest.raises(TrialDiverged, match="diverged at epoch 1"):
        evaluate_architecture(ARCH, data, ONE_EPOCH, seed=0)


def test_retrain_and_test(digits) -> None:
    accuracy, model = retrain_and_test(ARCH, digits, Budget(epochs=2, batch_size=128), seed=1)
    assert 0.0 <= accuracy <= 1.0
    predicted = model.predict(digits.x_test.astype(np.float32), verbose=0).argmax(1)
    assert np.mean(predicted == digits.y_test) == pytest.approx(accuracy, abs=1e-6)


def test_too_small_images_are_a_user_error(digits) -> None:
    deep = Architecture.from_key("conv3:8x0/max+none:8x1/max+none:8x1/max+none:8x1/max+none:8x1")
    with pytest.raises(PoolnasError, match="halves the resolution 4 times"):
        evaluate_architecture(deep, digits, ONE_EPOCH, seed=0)


# ------------------------------------------------------------------------------- fused updates
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_fused_updates_equal_keras_updates_to_rounding(optimizer) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    start = [rng.normal(size=shape).astype("float32") for shape in ((3, 3, 4, 8), (8,), (10,))]
    grads = [[rng.normal(size=w.shape).astype("float32") for w in start] for _ in range(20)]
    results = []
    for fused in (False, True):
        variables = [keras.Variable(w) for w in start]
        opt = Budget(optimizer=optimizer).make_optimizer()
        if fused:
            assert fuse_updates(opt) is opt and type(opt) is type(Budget(
                optimizer=optimizer).make_optimizer())  # Still Keras' own class.
        opt.build(variables)

        step = _traced_apply(opt, variables)
        for gradients in grads:
            step([tf.constant(g) for g in gradients])
        assert int(opt.iterations.numpy()) == len(grads)
        results.append(([v.numpy() for v in variables], [v.numpy() for v in opt.variables[1:]]))
    (keras_weights, keras_slots), (fused_weights, fused_slots) = results
    for a, b, w in zip(keras_weights, fused_weights, start, strict=True):
        moved = np.abs(a - w).max()
        assert moved > 1e-3  # They were trained: no comparison of two untouched copies.
        assert np.abs(a - b).max() <= 1e-4 * moved  # Rounding, not another update.
    # TensorFlow's kernel takes 1 - beta_2 from float32 beta_2 (relative 1.3e-5 off 0.001).
    for a, b in zip(keras_slots, fused_slots, strict=True):
        assert np.allclose(a, b, rtol=1e-4, atol=1e-9)


def _traced_apply(opt, variables):
    import tensorflow as tf

    @tf.function
    def step(gradients):  # The variables are captured, as in a training step.
        opt.apply(gradients, variables)

    return step


def test_optimizers_that_are_not_fused_are_returned_unchanged() -> None:
    for opt in (keras.optimizers.RMSprop(), keras.optimizers.Adam(amsgrad=True),
                keras.optimizers.SGD(momentum=0.0),
                keras.optimizers.SGD(momentum=0.9, nesterov=True)):
        assert fuse_updates(opt) is opt and "_backend_update_step" not in vars(opt)


def test_a_trained_model_saves_and_loads_with_a_plain_keras_optimizer(digits, tmp_path) -> None:
    model = fresh_model(ARCH, digits, ONE_EPOCH, seed=0)
    train_model(model, digits, ONE_EPOCH, seed=0)
    assert "_backend_update_step" in vars(model.optimizer)  # This training was fused.
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is keras.optimizers.Adam
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) > 0
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        assert np.array_equal(a.numpy(), b.numpy())  # The slots the fused ops updated.


def test_fused_training_leaves_no_gradient_function_behind(digits) -> None:
    from tensorflow.python.framework import ops

    registry = ops._gradient_registry._registry

    def registered() -> int:
        return sum(name.startswith("CustomGradient-") for name in registry)

    counts = {}
    for fused in (True, False):
        before = registered()
        model = fresh_model(ARCH, digits, ONE_EPOCH, seed=0)
        optimizer = ONE_EPOCH.make_optimizer()
        model.compile(optimizer=fuse_updates(optimizer) if fused else optimizer,
                      loss="sparse_categorical_crossentropy")
        model.fit(digits.train_dataset(128), epochs=1, verbose=0, shuffle=False)
        counts[fused] = registered() - before
    # Keras' own update keeps the traced step alive through the registry; the fused one does not.
    assert counts == {True: 0, False: counts[False]} and counts[False] > 0


def test_interrupted_is_asked_before_every_batch_and_stops_training(digits) -> None:
    asked = []

    def interrupted() -> bool:
        asked.append(1)
        return len(asked) > 3  # A signal arrives during the third batch.

    model = fresh_model(ARCH, digits, ONE_EPOCH, seed=0)
    with pytest.raises(KeyboardInterrupt):
        train_model(model, digits, ONE_EPOCH, seed=0, interrupted=interrupted)
    assert len(asked) == 4
    calm = fresh_model(ARCH, digits, ONE_EPOCH, seed=0)
    accuracy, _ = train_model(calm, digits, ONE_EPOCH, seed=0, interrupted=lambda: False)
    assert 0.0 <= accuracy <= 1.0
