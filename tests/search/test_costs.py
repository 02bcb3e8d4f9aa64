"""The cost model: closed-form costs of a study's candidates, and its hypervolume reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolnas.evaluators import count_cost
from poolnas.search import CostModel, SearchConfig, SearchRunner, settings_of
from poolnas.spaces import SearchSpace, build_model

#: 36 architectures, small enough to build every one.
SPACE = SearchSpace(points=2, ops=("max", "avg", "conv"), skips=("none", "projection"))


@pytest.mark.parametrize("scale", [(1.0, 0.0), (1 / 16, 0.0)])
def test_costs_equal_the_built_models_and_largest_is_the_true_maximum(scale) -> None:
    costs = CostModel((8, 8, 1), 10, input_scale=scale[0], input_offset=scale[1])
    built = {a.key: count_cost(build_model(a, (8, 8, 1), 10, input_scale=scale[0],
                                           input_offset=scale[1])) for a in SPACE}
    assert {a.key: costs(a) for a in SPACE} == built
    flops_of = costs.flops_of(SPACE)
    assert all(flops_of(SPACE.params_of(a)) == built[a.key].flops for a in SPACE)
    assert costs.largest(SPACE) == max(c.flops for c in built.values())
    assert len({c.flops for c in built.values()}) > 1  # The choices do change the cost.


def test_largest_of_a_space_too_big_to_enumerate_is_a_lower_bound_it_reaches() -> None:
    big = SearchSpace.resolve("catalogue")
    costs = CostModel((32, 32, 3), 10)
    largest = costs.largest(big)
    sample = [big.architecture({n: v[i % len(v)] for n, v in big.parameters().items()})
              for i in range(5)]
    assert all(costs(a).flops <= largest for a in sample)


def test_a_study_stores_its_reference_and_a_resume_reads_it(tmp_path: Path) -> None:
    config = SearchConfig(storage=f"sqlite:///{tmp_path / 'c.db'}", study="c", space=SPACE,
                          sampler="surrogate", trials=1)
    first = SearchRunner(config)
    settings = settings_of(first.study)
    assert settings["reference_flops"] == first.reference_flops == first.costs.largest(SPACE)
    assert "flops_table" not in settings  # Nothing to count again: the closed form is instant.
    resumed = SearchRunner(config)
    assert resumed.reference_flops == first.reference_flops
    first.handle.close()
    resumed.handle.close()
