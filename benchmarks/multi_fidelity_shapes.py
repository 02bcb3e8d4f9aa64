"""A real multi-fidelity search against a full-fidelity one, same wall-clock budget, on images.

Two ``poolnas search`` processes on the same image folder (``benchmarks/make_shapes_folder.py``,
32x32 RGB), the same sampler, seed, space and ``--epochs``, the same ``--timeout``:

- ``full``: every trial trains ``--epochs``;
- ``mo-asha``: ``--min-epochs M --reduction-factor η``: new architectures train M epochs, the
  best 1/η of each rung go on (poolnas' MO-ASHA).

They run side by side, each pinned to its own core where the machine has two (so neither slows
the other more than the other way round; with one core they run one after the other). Then each
study's reported front is exported with ``--retrain-epochs``: every member retrained from
scratch on train+val and tested once on the held-out test split. The table gives, per search,
its trials, epochs, architectures seen, and its front's test accuracies and their hypervolume
(exact FLOPs; the same reference for both, the largest FLOPs either study trained)::

    python benchmarks/make_shapes_folder.py /tmp/shapes --per-class 300
    python benchmarks/multi_fidelity_shapes.py --data /tmp/shapes --budget 600 \\
        --out docs/multi_fidelity_shapes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def poolnas(*args: str, core: int | None) -> list[str]:
    command = [sys.executable, "-m", "poolnas.search", *args]
    if core is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(core), *command]
    return command


def run_side_by_side(commands: list[list[str]], logs: list[Path], *, together: bool) -> list[float]:
    """Run ``commands`` (together, or one after the other); the seconds each took."""
    seconds = [0.0] * len(commands)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if together:
        started = time.perf_counter()
        procs = [subprocess.Popen(c, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
                 for c, log in zip(commands, logs)]
        for i, proc in enumerate(procs):
            if proc.wait() != 0:
                raise SystemExit(f"{' '.join(commands[i])} failed: see {logs[i]}")
            seconds[i] = time.perf_counter() - started
        return seconds
    for i, (command, log) in enumerate(zip(commands, logs)):
        started = time.perf_counter()
        if subprocess.run(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                          env=env).returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: see {log}")
        seconds[i] = time.perf_counter() - started
    return seconds


def study_summary(storage: str, name: str, schedule) -> dict:
    import optuna
    from optuna.trial import TrialState

    from poolnas.search._multi_fidelity import epochs_spent
    from poolnas.search._trial_attrs import TrialAttrs

    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # What --epoch-budget counts: a promoted trial only the epochs beyond its parent's.
    trained = epochs_spent(trials, schedule)
    architectures = {t.user_attrs.get(TrialAttrs.ARCHITECTURE) for t in trials
                     if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    flops = [t.user_attrs[TrialAttrs.FLOPS] for t in trials
             if t.user_attrs.get(TrialAttrs.FLOPS)]
    return {"trials": len(trials), "complete": len(complete), "epochs_trained": trained,
            "architectures": len(architectures - {None}), "max_flops": max(flops, default=0)}


def binomial_sd(accuracy: float, examples: int) -> float:
    """A test accuracy's binomial sd over its test images: one test, no seed scatter."""
    return math.sqrt(accuracy * (1 - accuracy) / examples)


def table(args, names, reference: int, results: dict, together: bool) -> str:
    """The comparison as a Markdown paragraph and table."""

    def sd(accuracy: float, r: dict) -> str:
        n = r["test_examples"]
        return f" ± {binomial_sd(accuracy, n):.3f}" if n else ""

    lines = [
        f"Shapes folder `{args.data}` at {args.image_size}, each search `--timeout "
        f"{args.budget}` with `--epochs {args.epochs}` (seed {args.seed}; MO-ASHA: "
        f"`--min-epochs {args.min_epochs} --reduction-factor {args.reduction_factor}`), "
        f"{'side by side, one core each' if together else 'one after the other'}; fronts "
        f"retrained `--retrain-epochs {args.retrain_epochs}` on train+val and tested once. "
        f"Hypervolume: test accuracy and exact FLOPs, reference {reference:,} FLOPs for both. "
        f"Best test accuracy ± its binomial sd over the "
        f"{results[names[0]]['test_examples'] or '?'} test images (a single test of a single "
        f"training: seed scatter comes on top and is not measured here); τ over the front's "
        f"members only (a handful: far from sure).",
        "",
        "| search | seconds | trials (complete) | architectures trained | epochs trained "
        "| front members | front test accuracies (FLOPs) | best test accuracy "
        "| front test hypervolume | τ search vs test |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        members = ", ".join(f"{m['test_accuracy']:.3f} ({m['flops'] / 1e6:.2f} M)"
                            for m in sorted(r["front"], key=lambda m: m["flops"]))
        tau = "–" if r["kendall_tau"] is None else f"{r['kendall_tau']:.2f}"
        lines.append(f"| {name} | {r['search_seconds']:.0f} | {r['trials']} ({r['complete']}) "
                     f"| {r['architectures']} | {r['epochs_trained']} | {len(r['front'])} "
                     f"| {members} | {r['best_test_accuracy']:.3f}{sd(r['best_test_accuracy'], r)} "
                     f"| {r['test_hypervolume']:.4f} | {tau} |")
    first, second = (results[n] for n in names)
    if first["test_examples"] and second["test_examples"]:
        gap = first["best_test_accuracy"] - second["best_test_accuracy"]
        spread = math.hypot(*(binomial_sd(r["best_test_accuracy"], r["test_examples"])
                              for r in (first, second)))
        lines += ["", f"Best test accuracy, {names[0]} − {names[1]}: {gap:+.3f} ± {spread:.3f} "
                      f"(the two binomial sds combined: {abs(gap) / spread:.1f} sds apart; "
                      f"another search seed could move either by more)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="an image folder (make_shapes_folder.py)")
    parser.add_argument("--image-size", default="32x32")
    parser.add_argument("--budget", type=int, default=600, help="--timeout of each search, s")
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--min-epochs", type=int, default=1)
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--retrain-epochs", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write <out>.md/.json")
    args = parser.parse_args()

    from poolnas.search import hypervolume
    from poolnas.search._multi_fidelity import RungSchedule

    work = Path(tempfile.mkdtemp(prefix="poolnas-mf-shapes-"))
    together = (os.cpu_count() or 1) >= 2
    common = ["--dataset", args.data, "--image-size", args.image_size, "--epochs",
              str(args.epochs), "--seed", str(args.seed), "--trials", "100000", "--timeout",
              str(args.budget)]
    names = ("full", "mo-asha")
    extra = {"full": [], "mo-asha": ["--min-epochs", str(args.min_epochs),
                                     "--reduction-factor", str(args.reduction_factor)]}
    storages = {n: f"sqlite:///{work / (n + '.db')}" for n in names}
    schedules = {"full": None, "mo-asha": RungSchedule(args.min_epochs, args.reduction_factor,
                                                       args.epochs)}
    searches = [poolnas("search", "--storage", storages[n], "--study", n, *common, *extra[n],
                        "--artifacts", str(work / (n + "-artifacts")),
                        core=i if together else None) for i, n in enumerate(names)]
    print(f"searching ({'side by side' if together else 'one after the other'}, "
          f"{args.budget} s each) in {work}", flush=True)
    search_seconds = run_side_by_side(searches, [work / f"{n}-search.log" for n in names],
                                      together=together)
    exports = [poolnas("export", "--storage", storages[n], "--study", n, "--out",
                       str(work / (n + "-export")), "--artifacts", str(work / (n + "-artifacts")),
                       "--retrain-epochs", str(args.retrain_epochs),
                       core=i if together else None) for i, n in enumerate(names)]
    print("retraining each front and testing it", flush=True)
    run_side_by_side(exports, [work / f"{n}-export.log" for n in names], together=together)

    results = {}
    for name, seconds in zip(names, search_seconds):
        summary = study_summary(storages[name], name, schedules[name])
        manifest = json.loads((work / f"{name}-export" / "manifest.json").read_text())
        summary["search_seconds"] = round(seconds, 1)
        summary["front"] = [{"trial": m["trial"], "architecture": m["architecture"],
                             "flops": m["flops"], "search_accuracy": m["accuracy"],
                             "accuracy_mean": m.get("accuracy_mean"),
                             "test_accuracy": m["test_accuracy"]} for m in manifest["models"]]
        summary["kendall_tau"] = manifest.get("kendall_tau")
        summary["test_examples"] = manifest.get("test_examples")
        results[name] = summary
    reference = max(r["max_flops"] for r in results.values())
    for r in results.values():
        r["test_hypervolume"] = hypervolume(
            [(m["test_accuracy"], m["flops"]) for m in r["front"]], reference_flops=reference)
        tests = [m["test_accuracy"] for m in r["front"]]
        r["best_test_accuracy"] = max(tests, default=None)

    text = table(args, names, reference, results, together)
    print(text)
    if args.out:
        args.out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "reference_flops": reference,
             "results": results}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
