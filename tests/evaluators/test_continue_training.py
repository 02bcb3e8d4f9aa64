"""Continuing a training from a checkpoint (``TrainingState``) is the uninterrupted training."""

from __future__ import annotations

import numpy as np
import pytest

from poolnas.evaluators import Budget, TrainingState, evaluate_architecture, load_dataset
from poolnas.spaces import PoolnasError, SearchSpace


@pytest.fixture(scope="module")
def setting():
    data = load_dataset("digits", seed=0, subset=300)
    space = SearchSpace(points=2, ops=("max", "conv"), skips=("none", "pool_pad"),
                        widths=(8, 16, 32))
    return data, next(iter(space))


@pytest.mark.slow
def test_two_stretches_through_a_saved_model_equal_one_training(setting, tmp_path) -> None:
    data, arch = setting
    straight = evaluate_architecture(arch, data, Budget(epochs=4, batch_size=64), seed=7)
    first = evaluate_architecture(arch, data, Budget(epochs=1, batch_size=64), seed=7)
    path = tmp_path / "rung0.keras"
    first.model.save(path)  # what a trial stores: weights and the optimizer's state
    middle = evaluate_architecture(arch, data, Budget(epochs=2, batch_size=64), seed=7,
                                   state=TrainingState.load(str(path), 1))
    rest = evaluate_architecture(arch, data, Budget(epochs=4, batch_size=64), seed=7,
                                 state=TrainingState.of(middle.model, 2))
    # Same weights bit for bit: epochs 2-4 saw the batches an uninterrupted run sees.
    for a, b in zip(straight.model.get_weights(), rest.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert rest.accuracy == straight.accuracy
    # The same checkpoint continued as if no epoch had been trained (other batches, one epoch
    # more) gives other weights: the check above can fail.
    other = evaluate_architecture(arch, data, Budget(epochs=4, batch_size=64), seed=7,
                                  state=TrainingState.of(first.model, 0))
    assert any(not np.array_equal(a, b) for a, b in
               zip(straight.model.get_weights(), other.model.get_weights()))


def test_a_continued_training_has_one_repeat(setting) -> None:
    data, arch = setting
    state = TrainingState(epochs=1, weights=[], optimizer=[])
    with pytest.raises(PoolnasError, match="one repeat"):
        evaluate_architecture(arch, data, Budget(epochs=2, repeats=2), seed=0, state=state)
