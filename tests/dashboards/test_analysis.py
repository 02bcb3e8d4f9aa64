"""The answer table against a study whose numbers are known (see conftest.py)."""

from __future__ import annotations

import math

import optuna
import pytest
from known_study import SPACE, known_trials

from poolnas.dashboards import analyse_choices, answer_text, summarise
from poolnas.dashboards._analysis import candidates_of


def numbered(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials as a study would number them (create_trial leaves every number 0)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trials(trials)
    return study.get_trials()


@pytest.fixture
def analysis():
    return analyse_choices(numbered(known_trials()), space=SPACE)


def test_candidates_count_each_architecture_once(analysis) -> None:
    by_number = {c.number: c for c in analysis.candidates}
    assert sorted(by_number) == [0, 1, 2, 3, 5]  # 4 repeats 0; 6 failed
    assert not by_number[5].feasible
    assert analysis.front == (0, 3, 1)  # cheapest first; 2 is dominated by 0
    assert [c.number for c in analysis.candidates if c.on_front] == [0, 1, 3]


def test_op_rows_at_point_1(analysis) -> None:
    max_, avg, conv = (analysis.stat(1, "op", op) for op in ("max", "avg", "conv"))
    assert (max_.trials, max_.on_front, max_.front_size, max_.infeasible) == (2, 2, 3, 0)
    assert max_.mean_accuracy == pytest.approx((0.90 + 0.91) / 2)
    assert max_.mean_flops == pytest.approx(1.1e6)
    # Over budget: counted, but not in the means (it was never trained).
    assert (conv.trials, conv.infeasible, conv.on_front) == (1, 1, 1)
    assert conv.mean_accuracy == pytest.approx(0.93)
    assert (avg.trials, avg.on_front) == (1, 0)
    # Pairs at point 1 that differ only in the op: (0 max, 1 conv), (0 max, 2 avg), (1, 2).
    assert max_.pairs == conv.pairs == avg.pairs == 2
    assert max_.paired_accuracy_delta == pytest.approx(((0.90 - 0.93) + (0.90 - 0.88)) / 2)
    assert conv.paired_accuracy_delta == pytest.approx(((0.93 - 0.90) + (0.93 - 0.88)) / 2)
    assert avg.paired_accuracy_delta == pytest.approx(((0.88 - 0.90) + (0.88 - 0.93)) / 2)
    assert conv.paired_flops_ratio == pytest.approx(2.0)
    assert max_.paired_flops_ratio == pytest.approx(math.sqrt(0.5 * 1.0))  # geometric mean


def test_comparisons_and_their_flip(analysis) -> None:
    conv_vs_max = analysis.comparison(1, "op", "conv", "max")
    assert conv_vs_max is not None
    assert conv_vs_max.pairs == 1 and conv_vs_max.trial_pairs == ((1, 0),)
    assert conv_vs_max.accuracy_delta == pytest.approx(0.03)
    assert conv_vs_max.flops_ratio == pytest.approx(2.0)
    max_vs_conv = analysis.comparison(1, "op", "max", "conv")
    assert max_vs_conv.accuracy_delta == pytest.approx(-0.03)
    assert max_vs_conv.flops_ratio == pytest.approx(0.5)
    projection = analysis.comparison(1, "skip", "projection", "none")
    assert projection.trial_pairs == ((3, 0),)
    assert projection.accuracy_delta == pytest.approx(0.01)
    assert projection.flops_ratio == pytest.approx(1.2)
    # Nothing at point 2 differs in one choice only (trial 5 was not trained).
    assert analysis.comparison(2, "op", "max", "conv") is None
    assert {(c.point, c.kind) for c in analysis.comparisons} == {(1, "op"), (1, "skip")}


def test_skip_rows_and_unused_choices(analysis) -> None:
    none, projection = analysis.stat(1, "skip", "none"), analysis.stat(1, "skip", "projection")
    assert (none.trials, none.on_front, none.pairs) == (3, 2, 1)
    assert (projection.trials, projection.on_front) == (1, 1)
    assert projection.paired_accuracy_delta == pytest.approx(0.01)
    # The space allows conv at point 2; only the infeasible trial used it.
    conv2 = analysis.stat(2, "op", "conv")
    assert (conv2.trials, conv2.infeasible, conv2.mean_accuracy, conv2.pairs) == (0, 1, None, 0)
    assert analysis.stat(2, "op", "avg").trials == 0
    with pytest.raises(KeyError):
        analysis.stat(1, "op", "blur_max")  # not in the space, never used


def test_without_space_only_used_choices_are_listed() -> None:
    analysis = analyse_choices(numbered(known_trials()))
    assert [s.choice for s in analysis.rows(2, "op")] == ["max", "conv"]


def test_summary_states_the_conclusion(analysis) -> None:
    lines = summarise(analysis)
    assert lines[0] == ("at point 1, max-pool is on 2 of 3 front members; avg-pool costs the "
                        "same FLOPs for -2.0 pp (1 like-for-like pair); stride-2 conv costs 2× "
                        "the FLOPs for +3.0 pp (1 like-for-like pair)")
    assert lines[1].startswith("at point 1, no shortcut is on 2 of 3 front members; the "
                               "projection shortcut costs 1.2× the FLOPs for +1.0 pp")
    assert lines[2].startswith("at point 2, max-pool is on 3 of 3 front members")
    text = answer_text(analysis)
    assert "effect vs rest" in text and lines[0] in text


@pytest.mark.parametrize(("a", "b", "paired"), [
    # A point without a shortcut pairs with one whose shortcut is merged either way ...
    ("conv3:16x1/max+none:32x1", "conv3:16x1/max+projection.concat:32x1", True),
    ("conv3:16x1/max+none:32x1", "conv3:16x1/max+pool_pad:32x1", True),
    # ... two shortcuts only when they merge the same way.
    ("conv3:16x1/max+projection.concat:32x1", "conv3:16x1/max+pool_pad:32x1", False),
    ("conv3:16x1/max+projection.concat:32x1", "conv3:16x1/max+pool_pad.concat:32x1", True),
    # A different width elsewhere is not "the rest held equal".
    ("conv3:16x1/max+none:32x1", "conv3:8x1/max+projection:32x1", False),
])
def test_what_counts_as_a_skip_pair(a: str, b: str, paired: bool) -> None:
    trials = numbered([optuna.trial.create_trial(values=[0.5, 1e6], user_attrs={"architecture": a}),
                       optuna.trial.create_trial(values=[0.6, 2e6],
                                                 user_attrs={"architecture": b})])
    analysis = analyse_choices(trials)
    assert bool([c for c in analysis.comparisons if c.kind == "skip"]) is paired


def test_an_empty_study_says_so() -> None:
    analysis = analyse_choices([], space=SPACE)
    assert analysis.front == () and analysis.points == 2
    assert all(s.trials == 0 and s.on_front == 0 for s in analysis.stats)
    assert summarise(analysis) == ["no complete feasible trial yet: nothing to conclude"]


def test_unreadable_keys_are_skipped() -> None:
    trials = numbered([optuna.trial.create_trial(values=[0.5, 1e6],
                                                 user_attrs={"architecture": "not a key"})])
    assert candidates_of(trials) == []
