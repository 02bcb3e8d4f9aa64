"""Long searches: does memory stay flat over 200 trials, and what do 2 worker processes buy?

1. **Memory.** One ``SearchRunner`` (what ``poolnas search`` runs) does ``--trials`` trials in a
   fresh process on a fresh SQLite study; after every trial it reads the process's resident
   memory (``VmRSS`` after ``gc.collect()``) and its peak (``ru_maxrss``). A search that leaks
   (KerasTuner's issues #873, #1031) shows a peak after 200 trials well above the peak after 20.
   The random sampler is used so that nearly every trial trains a new model (TPE would soon
   propose architectures the study already trained, which are not trained again).
2. **Workers.** ``poolnas search --workers 1`` and ``--workers 2`` run the same number of trials
   on fresh studies, one after the other (their order alternates by round). Reported: trials per
   minute from the first trial's start to the last trial's end (process start-up apart), and the
   wall time of the whole command.

Per-trial budget: ``--epochs 1 --batch-size 128 --subset 300`` on digits, a 3-point space of
8-64 channels with 1,728 architectures. ::

    python benchmarks/memory_and_workers.py             # 200 trials; 1 vs 2 workers x 24 trials
    python benchmarks/memory_and_workers.py --quick     # 25 trials; 1 vs 2 workers x 6 trials
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SPACE = """\
points = 3
ops = ["max", "avg", "conv"]
skips = ["none", "projection", "pool_projection", "pool_pad"]
merges = ["add"]
widths = [8, 16, 32, 64]
"""
BUDGET = ["--epochs", "1", "--batch-size", "128", "--subset", "300"]


def rss_mib() -> tuple[float, float]:
    """(current resident memory, peak resident memory) of this process in MiB."""
    import gc
    import resource

    gc.collect()
    current = 0.0
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return current, peak


def memory_child(trials: int, folder: str, parallel: int = 1) -> None:
    """Run one long search in this process; print a JSON line after every trial."""
    import optuna

    from poolnas.evaluators import Budget
    from poolnas.search import SearchConfig, SearchRunner
    from poolnas.spaces import SearchSpace

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space_file = Path(folder) / "space.toml"
    space_file.write_text(SPACE)
    started = time.perf_counter()
    config = SearchConfig(
        study="memory", storage=f"sqlite:///{Path(folder) / 'memory.db'}", trials=trials,
        sampler="random", space=SearchSpace.from_file(space_file), dataset="digits",
        data_options={"subset": 300}, budget=Budget(epochs=1, batch_size=128), seed=0,
        parallel=parallel,
    )

    def report(r: Any) -> None:
        current, peak = rss_mib()
        print(json.dumps({"done": r.done, "number": r.number, "state": r.state,
                          "duplicate": "same as" in r.note, "rss_mib": round(current, 1),
                          "peak_mib": round(peak, 1),
                          "seconds": round(time.perf_counter() - started, 1)}), flush=True)

    runner = SearchRunner(config, report=report)
    current, peak = rss_mib()
    print(json.dumps({"done": 0, "rss_mib": round(current, 1), "peak_mib": round(peak, 1),
                      "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    runner.run()


def run_memory(trials: int, checkpoints: list[int], parallel: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="poolnas-memory-") as folder:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(trials), folder,
             "--parallel", str(parallel)],
            capture_output=True, text=True, check=True,
        )
        wall = time.perf_counter() - started
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by_done: dict[int, dict[str, Any]] = {}
    for row in rows:
        by_done.setdefault(row["done"], row)  # The first report with that many complete.
    marks = {n: by_done[n] for n in checkpoints if n in by_done}
    trained = sum(1 for r in rows[1:] if r.get("state") == "complete" and not r["duplicate"])
    return {"trials": trials, "trained": trained, "wall_seconds": round(wall, 1),
            "after_setup": rows[0], "checkpoints": marks}


def run_workers(workers: int, trials: int) -> dict[str, Any]:
    import optuna

    with tempfile.TemporaryDirectory(prefix="poolnas-workers-") as folder:
        Path(folder, "space.toml").write_text(SPACE)
        storage = f"sqlite:///{Path(folder) / 'w.db'}"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "poolnas.search", "search", "--storage", storage,
             "--study", "w", "--trials", str(trials), "--space", "space.toml",
             "--sampler", "random", "--workers", str(workers), "--quiet", *BUDGET],
            cwd=folder, check=True, capture_output=True, text=True,
        )
        wall = time.perf_counter() - started
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.load_study(study_name="w", storage=storage)
        complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        first = min(t.datetime_start for t in complete)
        last = max(t.datetime_complete for t in complete)
        pids = {t.user_attrs["worker"]["pid"] for t in complete}
    searching = (last - first).total_seconds()
    return {"workers": workers, "trials": len(complete), "processes_that_ran_trials": len(pids),
            "search_seconds": round(searching, 1), "wall_seconds": round(wall, 1),
            "trials_per_minute": round(60 * len(complete) / searching, 2)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, "
            f"load average {load:.1f} at start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="25 trials; workers x 6 trials")
    parser.add_argument("--trials", type=int, default=None, help="trials of the memory run")
    parser.add_argument("--worker-trials", type=int, default=None,
                        help="trials of each workers run")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of 1 vs 2 workers")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--parallel", type=int, default=1,
                        help="--parallel K of the memory run (trials per fused step)")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(int(args.memory_child[0]), args.memory_child[1], args.parallel)
        return

    trials = args.trials or (25 if args.quick else 200)
    worker_trials = args.worker_trials or (6 if args.quick else 24)
    results: dict[str, Any] = {"machine": machine(), "budget": " ".join(BUDGET)}
    print(f"machine: {results['machine']}", flush=True)
    if not args.skip_memory:
        checkpoints = sorted({min(20, trials), trials // 2, trials})
        memory = run_memory(trials, checkpoints, args.parallel)
        results["memory"] = memory
        print(f"\nMemory of one search process, {memory['trials']} trials "
              f"({memory['trained']} trained, random sampler, --parallel {args.parallel}), "
              f"{memory['wall_seconds']} s:")
        print("| after | trials/s so far | resident MiB | peak MiB |")
        print("|---|---|---|---|")
        setup = memory["after_setup"]
        print(f"| set-up (data, study) | - | {setup['rss_mib']} | {setup['peak_mib']} |")
        for done, row in memory["checkpoints"].items():
            rate = done / max(row["seconds"] - setup["seconds"], 1e-9)
            print(f"| {done} trials | {rate:.2f} | {row['rss_mib']} | {row['peak_mib']} |")
        marks = memory["checkpoints"]
        if marks:
            first, last = marks[min(marks)], marks[max(marks)]
            print(f"peak after {max(marks)} / peak after {min(marks)}: "
                  f"{last['peak_mib'] / first['peak_mib']:.3f}")
    if not args.skip_workers:
        runs: list[dict[str, Any]] = []
        for round_ in range(args.rounds):
            for workers in ((1, 2) if round_ % 2 == 0 else (2, 1)):
                run = run_workers(workers, worker_trials)
                runs.append(run)
                print(f"workers {workers}: {run}", flush=True)
        results["workers"] = runs
        print(f"\nThroughput, {worker_trials} trials per run, {args.rounds} round(s):")
        print("| workers | trials/min (search) | search s | wall s | processes that ran trials |")
        print("|---|---|---|---|---|")
        for run in runs:
            print(f"| {run['workers']} | {run['trials_per_minute']} | {run['search_seconds']} | "
                  f"{run['wall_seconds']} | {run['processes_that_ran_trials']} |")
        one = [r["trials_per_minute"] for r in runs if r["workers"] == 1]
        two = [r["trials_per_minute"] for r in runs if r["workers"] == 2]
        if one and two:
            print(f"2 workers / 1 worker: {sum(two) / len(two) / (sum(one) / len(one)):.2f}x")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
