"""Smoke tests of the benchmark scripts: their quick modes run on a tiny table.

Nothing here asserts a time or a ratio; the scripts measure, docs/benchmarks.md reports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import flops_check  # noqa: E402
import poolbench  # noqa: E402
import replay  # noqa: E402
import throughput  # noqa: E402
import trial_overhead  # noqa: E402


@pytest.fixture(scope="module")
def data():
    from poolnas.evaluators import load_dataset

    return load_dataset("digits", seed=poolbench.DATA_SEED)


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory, data) -> Path:
    """The quick space's table with real FLOPs and made-up accuracies (no training)."""
    import keras

    from poolnas.evaluators import count_cost
    from poolnas.spaces import build_model

    path = tmp_path_factory.mktemp("poolbench") / "tiny.jsonl"
    with path.open("w") as table:
        for index, arch in enumerate(poolbench.bench_space(quick=True)):
            keras.backend.clear_session()
            cost = count_cost(build_model(arch, data.input_shape, data.num_classes))
            accuracy = 0.8 + 0.01 * (index % 7) + 1e-4 * cost.flops / 1e4
            table.write(json.dumps({"key": arch.key, "flops": cost.flops, "macs": cost.macs,
                                    "params": cost.params, "val_acc": [accuracy] * 3,
                                    "test_acc": [accuracy] * 3}) + "\n")
    return path


def test_subspaces_are_nested():
    sizes = [poolbench.bench_subspace(name).size for name in poolbench.SUBSPACES]
    assert sizes == [81, 243, 729]
    small, large = ({a.key for a in poolbench.bench_subspace(n)}
                    for n in poolbench.SUBSPACES[:2])
    assert small < large


def test_train_row_matches_the_evaluator(data):
    from poolnas.evaluators import Budget, evaluate_architecture

    arch = next(iter(poolbench.bench_space(quick=True)))
    budget = Budget(epochs=1)
    row = poolbench.train_row(arch, data, budget, seeds=(0, 1), fused=True)
    assert row["key"] == arch.key and len(row["val_acc"]) == len(row["test_acc"]) == 2
    # One traced step serves every seed; the second seed, trained after reloading its initial
    # weights and the optimizer's state, is exactly the evaluator's training with that seed.
    evaluation = evaluate_architecture(arch, data, budget, seed=1)
    assert row["flops"] == evaluation.flops and row["params"] == evaluation.params
    assert row["val_acc"][1] == pytest.approx(evaluation.accuracy, abs=1e-5)


def test_build_table_resumes(tmp_path, data):
    path = tmp_path / "t.jsonl"
    assert poolbench.build_table(path, quick=True, limit=1, log=lambda _: None) == 1
    first = poolbench.load_table(path)
    path.write_text(path.read_text() + '{"key": "cut sh')  # a build killed mid-line
    assert poolbench.load_table(path) == first
    path.write_text(path.read_text().rsplit("\n", 1)[0] + "\n")
    assert poolbench.build_table(path, quick=True, limit=1, log=lambda _: None) == 1
    assert len(poolbench.load_table(path)) == 2


def test_more_seeds_go_into_their_own_table_and_join_the_rows(tmp_path):
    """``poolbench.py --seeds`` other than the published ones never writes the published table;
    ``answer_quality.load_rows`` appends a seeds table's values to the rows it has, and leaves
    a row alone whose seeds it already holds."""
    import answer_quality

    with pytest.raises(SystemExit) as exit_info:
        poolbench.main(["--seeds", "3,4,5", "--limit", "0"])
    assert exit_info.value.code == 2
    published = poolbench.load_table()
    first, second = list(published)[:2]
    extra = tmp_path / "seeds3.jsonl"
    extra.write_text("\n".join(json.dumps(row) for row in (
        {"key": first, "val_acc": [0.5], "test_acc": [0.25], "seeds": [3]},
        {"key": second, "val_acc": [0.5], "test_acc": [0.25], "seeds": [0]},
    )) + "\n")
    rows = answer_quality.load_rows(extra)
    assert rows[first]["val_acc"] == published[first]["val_acc"] + [0.5]
    assert rows[first]["test_acc"] == published[first]["test_acc"] + [0.25]
    assert rows[first]["seeds"] == published[first]["seeds"] + [3]
    assert rows[second] == published[second]
    assert answer_quality.load_rows(None) == published


def test_answer_quality_says_where_its_intervals_miss():
    """One simulated search on the published table: every effect is counted once in the
    per-parameter and the per-rarest-value tallies, and their hits are the coverage's."""
    import answer_quality

    rows = answer_quality.load_rows(None)
    (result,) = answer_quality.simulate(rows, poolbench.bench_space(), 0, (12,),
                                        policy="default").values()
    for field in ("by_parameter", "by_trainings"):
        tally = result[field]
        assert sum(n for _, n in tally.values()) == result["effects"] > 0
        assert sum(hit for hit, _ in tally.values()) == round(
            result["effect_cover"] * result["effects"])
    assert set(result["by_parameter"]) == set(poolbench.bench_space().parameters())
    assert set(result["by_trainings"]) <= {"1", "2-3", "4-7", "8-15", "16+"}


def test_answer_quality_with_gaussian_noise_has_an_exact_truth():
    """``noise="gaussian"``: trainings are the all-seed mean plus normal noise, which is then
    the truth exactly: coverage against the truth widened by its own error is the coverage
    itself, where with the table's seeds (a truth with an error) it is higher."""
    import answer_quality

    rows = answer_quality.load_rows(None)
    space = poolbench.bench_space()
    (table,) = answer_quality.simulate(rows, space, 0, (12,), policy="default").values()
    (gauss,) = answer_quality.simulate(rows, space, 0, (12,), policy="default",
                                       noise="gaussian").values()
    assert table["cover_noisy"] > table["cover"]
    assert gauss["cover_noisy"] == gauss["cover"]
    assert gauss["effect_cover_noisy"] == gauss["effect_cover"]


def test_diagnose_places_the_most_accurate_architectures_in_the_model():
    """``nasbench_graph.py --diagnose`` on any replay table (PoolBench-digits here, the graph
    table's package being optional): the top architectures are each trained or placed by the
    sampler's model, with an EHVI rank among the untrained candidates."""
    import re

    import nasbench_graph

    table = replay.Table(poolbench.load_table(), poolbench.bench_space(), normalisation="range")
    lines = nasbench_graph.diagnose(table, 0, 8, top=3).splitlines()
    assert lines[0].startswith("seed 0, 8 trainings")
    top = sorted(table.values, key=lambda k: (-table.values[k][0], table.values[k][1]))[:3]
    for key, line in zip(top, lines[1:4]):
        assert line.strip().startswith(f"{key}:")
        ranked = re.search(r"EHVI rank ([\d,]+) of ([\d,]+)", line)
        assert line.endswith("trained") or (ranked and 1 <= int(ranked[1].replace(",", ""))
                                            <= int(ranked[2].replace(",", "")) <= 729 - 1)
    assert sum(line.strip().startswith("EHVI's first choices") for line in lines) == 3


def test_replay_quick(tiny_table, tmp_path, capsys):
    out = tmp_path / "replay"
    replay.main(["--quick", "--table", str(tiny_table), "--seeds", "2", "--cap", "8",
                 "--out", str(out)])
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [r["strategy"] for r in summary["results"]] == list(replay.STRATEGIES)
    assert summary["reference_flops"] == max(
        json.loads(line)["flops"] for line in tiny_table.read_text().splitlines())
    for result in summary["results"]:
        assert 1 <= result["to_95"]["median"] <= 9
        assert all(0 <= v <= 1 + 1e-9 for band in result["hv_bands"] for v in band)
    assert out.with_suffix(".png").stat().st_size > 0
    assert "trainings to 95 % HV" in capsys.readouterr().out


def test_replay_runs_split_over_processes_and_merged_equal_one_run(tiny_table, tmp_path):
    def runs(*args: str) -> tuple[dict[str, list], Path]:
        out = tmp_path / f"replay{len(list(tmp_path.iterdir()))}"
        replay.main(["--quick", "--table", str(tiny_table), "--strategies", "random,surrogate",
                     "--cap", "8", "--out", str(out), *args])
        summary = json.loads(out.with_suffix(".json").read_text())
        return {r["strategy"]: sorted((d["seed"], d["hv"]) for d in r["runs_detail"])
                for r in summary["results"]}, out.with_suffix(".json")

    whole, _ = runs("--seeds", "4")
    assert [seed for seed, _ in whole["random"]] == [0, 1, 2, 3]
    first, first_file = runs("--seeds", "2")
    merged, _ = runs("--seeds", "2", "--first-seed", "2", "--jobs", "2",
                     "--merge", str(first_file))
    assert merged == whole
    assert first != whole
    with pytest.raises(SystemExit, match="had a cap of 8, this replay's is 6"):
        runs("--seeds", "2", "--first-seed", "2", "--cap", "6", "--merge", str(first_file))


def test_replay_refuses_an_incomplete_table(tmp_path):
    path = tmp_path / "partial.jsonl"
    path.write_text("")
    with pytest.raises(SystemExit, match="lacks 16 architectures"):
        replay.main(["--quick", "--table", str(path)])


def test_flops_check_quick(capsys):
    assert flops_check.main(["--quick", "--limit", "2"]) == 0
    assert "2 equal, 0 different" in capsys.readouterr().out


def test_trial_overhead_quick(tmp_path, capsys):
    assert trial_overhead.main(["--quick", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    for heading in ("optimizer update", "clear_session after a build", "study on the default"):
        assert heading in out
    result = json.loads((tmp_path / "o.json").read_text())
    assert sorted(r["fused"] for r in result["update"]) == [False, False, True, True]
    assert {r["frozen"] for r in result["gc"]} == {False, True}
    new, resume = result["study"]["new"], result["study"]["resume"]
    assert new["reference_flops"] == resume["reference_flops"] > 0


def test_throughput_contenders_and_summary(tmp_path):
    from poolnas.evaluators import Budget

    budget = Budget(epochs=1)
    kt = throughput.run_keras_tuner(budget, 1000, 1, str(tmp_path))
    assert kt["trials"] == 1 and len(kt["keys"]) == 1
    plain = throughput.run_plain(budget, 1000, kt["keys"])
    assert plain["trials"] == 1 and plain["per_trial"][0]["train"] > 0
    fake_poolnas = {**plain, "setup_seconds": 1.0, "flops": {kt["keys"][0]: 10**6},
                    "samples_per_epoch": 1024}
    text = throughput.summarise({"keras-tuner": [kt], "poolnas": [fake_poolnas],
                                 "plain": [plain]}, epochs=1, peak=1e10)
    assert "trials per minute" in text and "of peak" in text
