"""Memory over a long KerasTuner search with poolnas' plugin: does it stay flat?

KerasTuner's users see RAM grow over trials (keras-team/keras-tuner#873, #1031). This script runs
long searches on digits, each in a fresh process, and reads the process's resident memory
(``VmRSS``, after ``gc.collect()``) at the end of every trial:

- ``plain``: the alternative, KerasTuner without the plugin: ``keras_tuner.RandomSearch`` with a
  plain build function that returns the same models (KerasTuner clears the Keras session before
  each build, as it always does);
- ``random``: ``keras_tuner.RandomSearch`` with :class:`poolnas.search.PoolNASHyperModel`;
- ``oracle``: ``keras_tuner.Tuner`` with :class:`poolnas.search.OptunaOracle` (SQLite study).

It prints one JSON line per arm and a table: memory just after the warm-up (median of trials
6-10), at the end (median of the last 5 trials), and the growth per trial (least-squares slope
over the trials after the warm-up). Only trained trials are measured: the OptunaOracle completes
a candidate its study already trained without training it again::

    python benchmarks/keras_tuner_memory.py            # 40 trials per arm
    python benchmarks/keras_tuner_memory.py --quick    # 8 trials per arm, a few minutes
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ARMS = ("plain", "random", "oracle")
WARMUP = 5


def rss_mib() -> float:
    gc.collect()
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_arm(arm: str, trials: int, epochs: int) -> dict:
    """One arm in this process: RSS after each trial."""
    import keras_tuner

    from poolnas.evaluators import load_dataset
    from poolnas.search.keras_tuner import OptunaOracle, PoolNASHyperModel
    from poolnas.spaces import SearchSpace

    data = load_dataset("digits")
    hypermodel = PoolNASHyperModel(SearchSpace(), data.input_shape, data.num_classes,
                                   input_scale=data.input_scale, input_offset=data.input_offset,
                                   seed=0)
    memory: list[float] = []
    seconds: list[float] = []

    def measured(base):
        class Measured(base):
            def on_trial_end(self, trial):
                super().on_trial_end(trial)
                memory.append(rss_mib())
                seconds.append(time.perf_counter() - started)

        return Measured

    with tempfile.TemporaryDirectory(prefix="poolnas-memory-") as tmp:
        common = {"hypermodel": hypermodel, "directory": tmp, "project_name": arm}
        if arm == "oracle":
            oracle = OptunaOracle(storage=f"sqlite:///{tmp}/memory.db", study_name="memory",
                                  max_trials=trials, seed=0)
            tuner = measured(keras_tuner.Tuner)(oracle=oracle, **common)
        else:
            if arm == "plain":  # the same models, built by a function: KerasTuner's own fit
                common["hypermodel"] = lambda hp: hypermodel.build(hp)
            tuner = measured(keras_tuner.RandomSearch)(objective="val_accuracy",
                                                       max_trials=trials, seed=1, **common)
        before = rss_mib()
        started = time.perf_counter()
        tuner.search(data.train_dataset(128, seed=0), validation_data=data.val_dataset(128),
                     epochs=epochs, shuffle=False, verbose=0)
    return {"arm": arm, "trials": len(memory), "rss_before_mib": round(before, 1),
            "rss_mib": [round(m, 1) for m in memory], "seconds": round(seconds[-1], 1)}


def slope(values: list[float]) -> float:
    """Least-squares growth per step."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return num / sum((i - mean_x) ** 2 for i in range(n))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 trials per arm")
    parser.add_argument("--trials", type=int, default=None, help="trials per arm (default 40)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm here
    parser.add_argument("--summarise", metavar="FILE",
                        help="print the table of the JSON lines in FILE (a previous run's output)")
    args = parser.parse_args(argv)
    trials = args.trials or (8 if args.quick else 40)
    if args.summarise:
        with open(args.summarise, encoding="utf-8") as lines:
            summarise([json.loads(line) for line in lines if line.startswith("{")])
        return
    if args.arm:
        print(json.dumps(run_arm(args.arm, trials, args.epochs)), flush=True)
        return
    results = []
    for arm in args.arms.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--arm", arm, "--trials", str(trials),
             "--epochs", str(args.epochs)],
            check=True, capture_output=True, text=True,
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(result), flush=True)
        results.append(result)
    summarise(results)


def summarise(results: list[dict]) -> None:
    print(f"\n{'arm':<8} {'trained':>7} {'RSS after warm-up':>18} {'RSS at end':>11} "
          f"{'growth/trial':>13} {'seconds':>8}")
    for r in results:
        memory = r["rss_mib"]
        after = memory[WARMUP:] if len(memory) > WARMUP + 1 else memory
        warm = statistics.median(after[:5])
        end = statistics.median(memory[-5:])
        print(f"{r['arm']:<8} {r['trials']:>7} {warm:>14.0f} MiB {end:>7.0f} MiB "
              f"{slope(after):>9.2f} MiB {r['seconds']:>8.0f}")


if __name__ == "__main__":
    main()
