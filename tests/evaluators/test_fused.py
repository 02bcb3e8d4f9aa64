"""Fused training of several candidates in one traced step, with real TensorFlow on digits."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from poolnas.evaluators import (
    Budget,
    Dataset,
    Evaluation,
    TrialDiverged,
    evaluate_architecture,
    evaluate_architectures,
    load_dataset,
)
from poolnas.spaces import Architecture, PoolnasError, build_model

ARCHS = [Architecture.from_key(k) for k in (
    "conv3:8x0/max+projection:16x1", "conv3:8x1/avg+none:16x1", "conv3:8x0/conv+pool_pad:16x1")]
TWO_EPOCHS = Budget(epochs=2, batch_size=128)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def _max_difference(first, second) -> float:
    return max(float(np.abs(a - b).max()) for a, b in zip(first.get_weights(),
                                                            second.get_weights()))


def test_fused_candidates_train_exactly_as_they_do_alone(digits) -> None:
    # Each member has its own initial weights, batch order (two epochs: the second epoch's
    # reshuffle too), optimizer and loss, and the gradient of the summed losses is each
    # member's own: no tolerance is needed, the weights are bit-identical on CPU.
    fused = evaluate_architectures(ARCHS, digits, TWO_EPOCHS, seeds=[5, 6, 7])
    for outcome, arch, seed in zip(fused, ARCHS, [5, 6, 7]):
        alone = evaluate_architecture(arch, digits, TWO_EPOCHS, seed=seed)
        assert isinstance(outcome, Evaluation) and outcome.arch == arch
        assert outcome.accuracies == alone.accuracies
        assert (outcome.flops, outcome.macs, outcome.params) == (alone.flops, alone.macs,
                                                                 alone.params)
        assert _max_difference(outcome.model, alone.model) == 0.0
    assert set(fused[0].seconds) == {"build", "cost", "compile", "trace", "train", "evaluate",
                                     "total"}


def test_repeats_are_members_with_consecutive_seeds(digits) -> None:
    budget = Budget(epochs=1, batch_size=128, repeats=2)
    fused, = evaluate_architectures(ARCHS[:1], digits, budget, seeds=[3])
    alone = evaluate_architecture(ARCHS[0], digits, budget, seed=3)
    assert fused.accuracies == alone.accuracies and len(fused.accuracies) == 2
    assert fused.accuracy_std == pytest.approx(alone.accuracy_std)


def test_a_diverging_candidate_fails_alone(digits) -> None:
    # A real model whose first kernel is NaN: its loss is NaN from the first step.
    keras.backend.clear_session()
    models = []
    for arch, seed in zip(ARCHS[:2], [0, 1]):
        keras.utils.set_random_seed(seed)
        models.append(build_model(arch, digits.input_shape, digits.num_classes,
                                  input_scale=digits.input_scale))
    broken = models[0].trainable_variables[0]
    broken.assign(np.full(broken.shape, np.nan, np.float32))
    broken_out, healthy = evaluate_architectures(ARCHS[:2], digits, TWO_EPOCHS, seeds=[0, 1],
                                                 models=models)
    assert isinstance(broken_out, TrialDiverged) and broken_out.epoch == 1
    assert math.isnan(broken_out.loss)
    alone = evaluate_architecture(ARCHS[1], digits, TWO_EPOCHS, seed=1)
    assert isinstance(healthy, Evaluation) and healthy.accuracies == alone.accuracies


def test_a_candidate_too_big_for_the_images_fails_alone(digits) -> None:
    deep = Architecture.from_key("conv3:8x1/max+none:8x1/max+none:8x1/max+none:8x1/max+none:8x1")
    failed, trained = evaluate_architectures([deep, ARCHS[0]], digits,
                                             Budget(epochs=1, batch_size=128), seeds=[0, 1])
    assert isinstance(failed, PoolnasError) and isinstance(trained, Evaluation)


def test_interrupted_stops_the_fused_training(digits) -> None:
    asked = []

    def interrupted() -> bool:
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(KeyboardInterrupt):
        evaluate_architectures(ARCHS[:2], digits, TWO_EPOCHS, seeds=[0, 1],
                               interrupted=interrupted)
    assert len(asked) == 3


def test_one_seed_per_candidate_is_required(digits) -> None:
    with pytest.raises(ValueError, match="one seed"):
        evaluate_architectures(ARCHS, digits, TWO_EPOCHS, seeds=[0])
