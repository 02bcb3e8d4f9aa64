"""Smoke tests of the KerasTuner benchmarks: one trial per arm, nothing timed or compared."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import keras_tuner_hypervolume  # noqa: E402
import keras_tuner_memory  # noqa: E402


@pytest.mark.slow
def test_hypervolume_every_arm_once(capsys) -> None:
    keras_tuner_hypervolume.main(["--quick", "--seeds", "1", "--trials", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()
             if line.startswith("{")]
    assert "machine" in lines[0] and lines[0]["reference_flops"] > 0
    results = lines[1:]
    assert sorted(r["arm"] for r in results) == sorted(keras_tuner_hypervolume.ARMS)
    for result in results:
        assert result["trained"] == 1
        assert 0 < result["hypervolume"] <= 1 and 0 < result["hypervolume_last_epoch"] <= 1


@pytest.mark.slow
def test_memory_reads_rss_after_each_trial(capsys) -> None:
    result = keras_tuner_memory.run_arm("random", 2, 1)
    assert result["trials"] == 2 and all(m > 0 for m in result["rss_mib"])
    keras_tuner_memory.summarise([result])
    assert "growth/trial" in capsys.readouterr().out
    assert keras_tuner_memory.slope([1.0, 2.0, 3.0]) == pytest.approx(1.0)
