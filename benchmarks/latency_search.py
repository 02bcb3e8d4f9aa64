"""`poolnas search --cost latency` against `--cost flops`: does the front change, and how much
measured latency does the FLOPs front leave on the table? (issue 18)

Pairs of real searches through the CLI (``--seeds`` pairs), one after the other, on the same
data, space, budget and seed, each in a fresh SQLite study (the first latency one measures and
calibrates its kernel table into a fresh cache folder). Then every architecture a search trained
is measured whole on this machine (``--runtime``, one pinned thread), and each search's reported
front (``poolnas front --format json``: raw front plus the model front, accuracy as the
posterior mean ± sd) is read against the *measured* latency:

- the members of each front, shared members;
- for each member of the latency search's front, the fastest member of the FLOPs search's
  front whose accuracy is at least as high (posterior means): how much slower it is;
- the hypervolume of each front in (accuracy, measured ms) with one reference point (0 accuracy,
  the slowest measured architecture), so the two are comparable, and its difference across
  seeds (mean, sd): one pair of searches is one noisy draw.

The two searches train different architectures (the cost steers the sampler), and a posterior
mean is itself a measurement with an error: the report prints the sd beside every accuracy.

    python benchmarks/latency_search.py --trials 40 --seeds 3 --out docs/latency_search
    python benchmarks/latency_search.py --trials 4 --epochs 1 --seeds 1  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _poolnas(*argv: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "poolnas.search", *argv], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"poolnas {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def _hypervolume(points: list[tuple[float, float]], slowest: float) -> float:
    """Area dominated by (accuracy up, ms down) ``points`` against (0, ``slowest``)."""
    area, best = 0.0, 0.0
    for acc, ms in sorted(points, key=lambda p: p[1]):
        if acc > best and ms < slowest:
            area += (acc - best) * (slowest - ms)
            best = acc
    return area


def _compare(searches: dict, measured: dict, slowest: float) -> dict:
    """One seed's two fronts against the measured latency."""
    fronts = {cost: search["rows"] for cost, search in searches.items()}
    for search in searches.values():
        search["hypervolume_measured"] = _hypervolume(
            [(r["accuracy_mean"], r["measured_ms"]) for r in search["rows"]], slowest)
    left = []
    for r in fronts["latency"]:
        rivals = [f for f in fronts["flops"] if f["accuracy_mean"] >= r["accuracy_mean"]]
        if rivals:
            fastest = min(rivals, key=lambda f: f["measured_ms"])
            left.append({"latency_member": r["architecture"], "flops_member":
                         fastest["architecture"], "extra": fastest["measured_ms"]
                         / r["measured_ms"] - 1})
    shared = sorted({r["architecture"] for r in fronts["flops"]}
                    & {r["architecture"] for r in fronts["latency"]})
    return {"shared": shared, "flops_front_extra_latency": left}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=None, help="(default: poolnas' own)")
    parser.add_argument("--space", default="default")
    parser.add_argument("--runtime", default="keras", help="keras or tflite")
    parser.add_argument("--seeds", type=int, default=3, help="pairs of searches (seeds 0…)")
    parser.add_argument("--runs", type=int, default=100, help="timed calls per repeat")
    parser.add_argument("--out", default="/tmp/latency_search", help="output prefix")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="poolnas-latency-search-"))
    env = {**os.environ, "POOLNAS_LATENCY_CACHE": str(folder / "cache")}
    storage = f"sqlite:///{folder / 'studies.db'}"
    report: dict = {"trials": args.trials, "space": args.space, "runtime": args.runtime,
                    "runs": []}
    for seed in range(args.seeds):
        common = ["--storage", storage, "--space", args.space, "--trials", str(args.trials),
                  "--seed", str(seed)]
        if args.epochs is not None:
            common += ["--epochs", str(args.epochs)]
        searches = {}
        for cost in ("flops", "latency"):
            started = time.perf_counter()
            extra = ["--latency-runtime", args.runtime] if cost == "latency" else []
            study = f"{cost}-seed{seed}"
            _poolnas("search", "--study", study, "--cost", cost, *extra, *common, env=env)
            seconds = time.perf_counter() - started
            front = json.loads(_poolnas("front", "--storage", storage, "--study", study,
                                        "--format", "json", env=env))
            searches[cost] = {"study": study, "seconds": round(seconds, 1), "front": front}
            print(f"seed {seed} {cost}: {len(front)} on the front, {seconds:.0f} s", flush=True)
        report["runs"].append({"seed": seed, "searches": searches})

    import optuna

    from poolnas.evaluators import (
        architecture_cost,
        machine_name,
        measure_stable,
        pin_threads,
        runtime_description,
    )
    from poolnas.search import settings_of
    from poolnas.search._trial_attrs import TrialAttrs
    from poolnas.spaces import Architecture, build_model

    threads = pin_threads(1)
    settings = settings_of(optuna.load_study(study_name="flops-seed0", storage=storage))
    shape, classes = tuple(settings["input_shape"]), int(settings["num_classes"])
    scaling = {"input_scale": float(settings["input_scale"]),
               "input_offset": float(settings["input_offset"])}
    trained: set[str] = set()
    for run in report["runs"]:
        for search in run["searches"].values():
            study = optuna.load_study(study_name=search["study"], storage=storage)
            trained |= {t.user_attrs[TrialAttrs.ARCHITECTURE] for t in study.trials
                        if t.state == optuna.trial.TrialState.COMPLETE}
    measured = {}
    for key in sorted(trained):
        model = build_model(Architecture.from_key(key), shape, classes, **scaling)
        measured[key] = measure_stable(model, args.runtime, warmup=10, runs=args.runs,
                                       repeats=3).median_ms
    slowest = max(measured.values())
    for run in report["runs"]:
        for search in run["searches"].values():
            search["rows"] = [
                {"architecture": r["architecture"], "accuracy_mean": r["accuracy_mean"],
                 "accuracy_sd": r["accuracy_sd"], "accuracy": r["accuracy"],
                 "front_by": r.get("front_by"), "flops": architecture_cost(
                     Architecture.from_key(r["architecture"]), shape, classes, **scaling).flops,
                 "predicted_ms": r.get("latency_ms"), "measured_ms": measured[r["architecture"]]}
                for r in search.pop("front")]
        run.update(_compare(run["searches"], measured, slowest))
    report.update(machine=machine_name(), runtime_version=runtime_description(args.runtime),
                  threads=threads or 1, trained=len(trained), slowest_ms=slowest)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(report, indent=1) + "\n")
    Path(f"{out}.md").write_text(markdown(report))
    print(markdown(report))
    return report


def markdown(report: dict) -> str:
    import statistics

    runs = report["runs"]
    lines = [f"## `--cost latency` vs `--cost flops` ({report['trials']} trials each, space "
             f"`{report['space']}`, {len(runs)} seeds)", "",
             f"Machine: {report['machine']}; latency measured with {report['runtime_version']}, "
             f"{report['threads']} thread; {report['trained']} distinct architectures trained "
             "by the searches, each measured whole; hypervolume in (posterior-mean accuracy, "
             f"measured ms) against (0, {report['slowest_ms']:.4f} ms), the slowest of them.", "",
             "| seed | HV `--cost flops` | HV `--cost latency` | front sizes | shared | "
             "FLOPs front's extra latency at equal accuracy (median, max) |",
             "|---:|---:|---:|---|---:|---|"]
    for run in runs:
        f, lat = run["searches"]["flops"], run["searches"]["latency"]
        extra = [x["extra"] for x in run["flops_front_extra_latency"]]
        cell = (f"{statistics.median(extra):+.1%}, {max(extra):+.1%}" if extra
                else "no FLOPs-front member as accurate")
        lines.append(f"| {run['seed']} | {f['hypervolume_measured']:.5f} | "
                     f"{lat['hypervolume_measured']:.5f} | {len(f['rows'])} / "
                     f"{len(lat['rows'])} | {len(run['shared'])} | {cell} |")
    if len(runs) > 1:
        diffs = [r["searches"]["latency"]["hypervolume_measured"]
                 - r["searches"]["flops"]["hypervolume_measured"] for r in runs]
        lines += ["", f"HV(latency) − HV(flops): mean {statistics.mean(diffs):+.5f}, sd "
                  f"{statistics.stdev(diffs):.5f} over {len(runs)} seeds "
                  f"({sum(d > 0 for d in diffs)} of {len(runs)} positive)."]
    for run in runs:
        for cost, search in run["searches"].items():
            lines += ["", f"### seed {run['seed']}, `--cost {cost}` ({search['seconds']:.0f} s)",
                      "", "| architecture | accuracy (posterior mean ± sd) | raw | on front by | "
                      "FLOPs | predicted ms | measured ms |", "|---|---|---|---|---:|---:|---:|"]
            for r in sorted(search["rows"], key=lambda r: r["measured_ms"]):
                predicted = "" if r["predicted_ms"] is None else f"{r['predicted_ms']:.4f}"
                lines.append(f"| `{r['architecture']}` | {r['accuracy_mean']:.4f} ± "
                             f"{r['accuracy_sd']:.4f} | {r['accuracy']:.4f} | {r['front_by']} | "
                             f"{r['flops']:,} | {predicted} | {r['measured_ms']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
