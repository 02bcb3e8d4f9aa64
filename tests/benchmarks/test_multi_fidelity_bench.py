"""Smoke tests of PoolBench-curves and the multi-fidelity replay (``benchmarks/``).

Nothing here asserts a ratio; the replay measures, docs/benchmarks.md reports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import multi_fidelity  # noqa: E402
import poolbench  # noqa: E402
import poolbench_curves  # noqa: E402


def test_a_curve_is_the_evaluator_at_every_epoch():
    """Epoch e of a stored curve is what a search trial of e epochs with that seed scores."""
    import dataclasses

    from poolnas.evaluators import Budget, evaluate_architecture, load_dataset

    data = load_dataset("digits", seed=poolbench.DATA_SEED)
    arch = next(iter(poolbench.bench_space(quick=True)))
    budget = dataclasses.replace(poolbench_curves.curves_budget(quick=True), epochs=2)
    row = poolbench_curves.train_curves(arch, data, budget, seeds=(0, 1))
    assert [len(c) for c in row["val_acc"]] == [2, 2] and row["epochs"] == 2
    for epochs in (1, 2):
        evaluation = evaluate_architecture(
            arch, data, Budget(epochs=epochs, batch_size=budget.batch_size,
                               learning_rate=budget.learning_rate), seed=1)
        assert row["val_acc"][1][epochs - 1] == pytest.approx(evaluation.accuracy, abs=1e-5)


def test_replay_runs_both_arms_on_a_made_up_table(tmp_path, capsys):
    from poolnas.evaluators import architecture_cost

    space = poolbench.bench_subspace("last-fixed")
    path = tmp_path / "curves.jsonl"
    with path.open("w") as table:
        for index, arch in enumerate(space):
            cost = architecture_cost(arch, (8, 8, 1), 10, input_scale=1 / 16)
            final = 0.9 + 0.01 * (index % 7)
            curves = [[final * min(1.0, e / 6) + 0.001 * s for e in range(1, 17)]
                      for s in range(3)]
            table.write(json.dumps({"key": arch.key, "flops": cost.flops,
                                    "val_acc": curves, "test_acc": curves}) + "\n")
    out = tmp_path / "mf"
    multi_fidelity.main(["--table", str(path), "--seeds", "2", "--schedules", "2/2",
                         "--out", str(out)])
    stored = json.loads(out.with_suffix(".json").read_text())
    arms = {r["arm"]: r for r in stored["results"]}
    assert set(arms) == {"full", "mo-asha 2/2"}
    for result in arms.values():
        assert result["to_95"]["reached"] == 2  # a full budget finds the front
    assert "| `mo-asha 2/2` | 2 |" in capsys.readouterr().out
