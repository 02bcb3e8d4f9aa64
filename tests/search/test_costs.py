"""The cost model: FLOPs tables, the hypervolume reference, and what a study keeps of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolnas.search import SearchConfig, SearchRunner
from poolnas.search._enumerative import AdditiveFlops
from poolnas.search._study import CostModel
from poolnas.spaces import SearchSpace

#: 36 architectures, small enough to build every one.
SPACE = SearchSpace(points=2, ops=("max", "avg", "conv"), skips=("none", "projection"))


def test_additive_table_and_largest_agree_with_every_built_model() -> None:
    costs = CostModel((8, 8, 1), 10)
    largest = costs.largest(SPACE)
    parameters = SPACE.parameters()
    # The table (one model per value), its 4 checks and the largest architecture: no more.
    assert len([a for a in SPACE if costs.known(a)]) <= 1 + sum(
        len(v) - 1 for v in parameters.values()) + 4 + 1
    table = costs.flops_table(SPACE)
    assert isinstance(table, AdditiveFlops)
    exact = {a.key: costs(a).flops for a in SPACE}  # Now every model is built.
    assert all(table(SPACE.params_of(a)) == exact[a.key] for a in SPACE)
    assert largest == max(exact.values())
    assert len(set(exact.values())) > 1  # The choices do change the cost.


def test_a_stored_table_is_read_back_only_for_its_own_space() -> None:
    costs = CostModel((8, 8, 1), 10)
    table = costs.flops_table(SPACE)
    stored = table.to_json()
    again = AdditiveFlops.from_json(stored, SPACE.parameters())
    assert again is not None
    assert all(again(SPACE.params_of(a)) == table(SPACE.params_of(a)) for a in SPACE)
    other = SearchSpace(points=2, ops=("max", "conv"), skips=("none", "projection"))
    assert AdditiveFlops.from_json(stored, other.parameters()) is None
    for broken in (None, {}, {"base": 1.0}, {"base": "x", "delta": []}, {"base": 1, "delta": 3}):
        assert AdditiveFlops.from_json(broken, SPACE.parameters()) is None


def test_a_resumed_study_builds_no_model_for_its_costs(tmp_path: Path) -> None:
    config = SearchConfig(storage=f"sqlite:///{tmp_path / 'c.db'}", study="c", space=SPACE,
                          sampler="surrogate", trials=1)
    first = SearchRunner(config)
    settings = first.study.user_attrs["poolnas"]
    assert set(settings["flops_table"]) == {"base", "delta"}
    assert settings["reference_flops"] == first.reference_flops

    resumed = SearchRunner(config)
    assert resumed.reference_flops == first.reference_flops
    # The surrogate sampler's FLOPs of every candidate came from the stored table.
    assert not [a for a in SPACE if resumed.costs.known(a) is not None]
    flops = {a.key: resumed._flops_of(SPACE.params_of(a)) for a in SPACE}
    assert flops == {a.key: first._flops_of(SPACE.params_of(a)) for a in SPACE}
    assert not [a for a in SPACE if resumed.costs.known(a) is not None]
    first.handle.close()
    resumed.handle.close()


@pytest.mark.parametrize("stored", [{"base": 1.0, "delta": []}, "not a table"])
def test_a_study_whose_stored_table_does_not_fit_is_counted_again(stored, tmp_path: Path) -> None:
    config = SearchConfig(storage=f"sqlite:///{tmp_path / 'd.db'}", study="d", space=SPACE,
                          sampler="surrogate", trials=1)
    first = SearchRunner(config)
    settings = dict(first.study.user_attrs["poolnas"])
    good = first._flops_of(SPACE.params_of(next(iter(SPACE))))
    first.study.set_user_attr("poolnas", {**settings, "flops_table": stored})
    resumed = SearchRunner(config)
    assert resumed._flops_of(SPACE.params_of(next(iter(SPACE)))) == good
    assert [a for a in SPACE if resumed.costs.known(a) is not None]  # Counted from models.
    first.handle.close()
    resumed.handle.close()

