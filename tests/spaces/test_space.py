from __future__ import annotations

import json

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolnas.spaces import PRESETS, Architecture, PoolnasError, SearchSpace, catalogue_space


def test_default_space_is_the_design_cards() -> None:
    space = SearchSpace()
    assert space.points == 3
    assert all(ops == ("max", "avg", "conv") for ops in space.ops)
    assert all(set(s) == {"none", "projection", "pool_projection", "pool_pad"} for s in space.skips)
    assert space.size == (3 * 4) ** 3
    assert len(list(space)) == space.size
    space.check_input_shape((8, 8, 1))


def test_size_counts_distinct_architectures() -> None:
    space = SearchSpace(points=2, skips=["none", "pool_pad"], merges=["add", "concat"],
                        widths=[8, [16, 24], 48], stems=["conv3", "conv3s2"])
    keys = {arch.key for arch in space}
    # per point: 3 ops x (none + pool_pad x 2 merges); stage 1 has 2 widths; 2 stems.
    assert space.size == 2 * 2 * (3 * 3) ** 2 == len(keys)


def test_catalogue_has_every_choice_and_fits_digits() -> None:
    space = catalogue_space()
    assert len(space.ops[0]) == 8
    assert set(space.stems) == {"conv3", "conv3s2", "conv7s2"}
    space.check_input_shape((8, 8, 1))
    assert space.size == 3 * (8 * (1 + 3 * 2)) ** 2


def test_parameters_round_trip_through_optuna() -> None:
    space = catalogue_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        arch = space.suggest(trial)
        assert space.contains(arch)
        assert space.architecture(space.params_of(arch)) == arch
        assert set(trial.params) == set(space.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ops": []}, "ops must be a non-empty list"),
        ({"ops": ["max", "pool"]}, "unknown op 'pool'"),
        ({"skips": [["none"], ["none"]]}, "2 lists but the space has 3 points"),
        ({"skips": ["none", "none"]}, "twice"),
        ({"points": 0}, "points must be an integer"),
        ({"points": "3"}, "points must be an integer"),
        ({"widths": [16, 32]}, "one entry per stage"),
        ({"widths": [16, 32, [], 64]}, "empty list"),
        ({"depths": [1, 0, 1, 1]}, "first block downsamples"),
        ({"widths": [64, 32, 64, 128]}, "pool_pad"),
        ({"merges": ["concat"], "widths": [16, 32, 32, 64]}, "concat merge"),
        ({"stems": ["conv9"]}, "unknown stem"),
    ],
)
def test_invalid_spaces_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(PoolnasError, match=message):
        SearchSpace(**kwargs)


def test_too_many_points_for_the_input() -> None:
    with pytest.raises(PoolnasError, match="allows at most 3"):
        SearchSpace(points=4).check_input_shape((8, 8, 1))
    with pytest.raises(PoolnasError, match="strided stem"):
        SearchSpace(points=3, stems=["conv3", "conv7s2"]).check_input_shape((8, 8, 1))
    SearchSpace(points=4).check_input_shape((16, 16, 3))


def test_space_files(tmp_path) -> None:
    toml = tmp_path / "space.toml"
    toml.write_text('extends = "catalogue"\nops = ["max", "strided"]\nmerges = ["add"]\n')
    space = SearchSpace.from_file(toml)
    assert space.ops == (("max", "strided"),) * 2 and space.stems == catalogue_space().stems
    js = tmp_path / "space.json"
    js.write_text(json.dumps(space.to_dict()))
    assert SearchSpace.from_file(js) == space
    wider = tmp_path / "wider.toml"
    wider.write_text('extends = "default"\npoints = 2\nops = ["max", "blur_max"]\n')
    assert SearchSpace.from_file(wider).widths == ((16,), (32,), (64,))
    assert SearchSpace.resolve("catalogue") == catalogue_space()
    assert SearchSpace.resolve(None) == SearchSpace()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.toml", "pointz = 3", "unknown key"),
        ("a.toml", "points = [", "not valid TOML"),
        ("a.json", "{", "not valid JSON"),
        ("a.json", "[1, 2]", "table of keys"),
        ("a.toml", "points = 'three'", "points must be an integer"),
        ("a.toml", "extends = 'mine'", "not a preset"),
        ("a.toml", "ops = 'max'", "ops must be"),
        ("a.yaml", "points: 3", "must end in .toml or .json"),
    ],
)
def test_bad_space_files(tmp_path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PoolnasError, match=message):
        SearchSpace.from_file(path)


def test_missing_space_file() -> None:
    with pytest.raises(PoolnasError, match="neither a preset"):
        SearchSpace.resolve("no/such/space.toml")


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.text(max_size=12)
    | st.sampled_from(["max", "avg", "conv", "none", "pool_pad", "concat", "conv7s2"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(
    st.sampled_from(["extends", "points", "stems", "ops", "skips", "merges", "widths", "depths",
                     "other"]),
    _values, max_size=5))
@settings(max_examples=400, deadline=None)
def test_fuzzed_space_dicts_give_a_space_or_a_clear_error(data: dict) -> None:
    try:
        space = SearchSpace.from_dict(data)
    except PoolnasError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert space.size >= 1
        assert isinstance(next(iter(space)), Architecture)


def test_presets_are_valid() -> None:
    for name, make in PRESETS.items():
        assert make().size > 1, name
