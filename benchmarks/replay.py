"""Sample efficiency: search strategies replayed against the PoolBench-digits table, no training.

Each strategy searches the table's space many times (one seed per run) and every candidate it
proposes is "trained" by looking its row up. An architecture's objectives are its mean
validation accuracy over the table's seeds (what ``poolnas search --repeats 3`` reports) and its
FLOPs. After each unique training, the hypervolume of everything trained so far is recorded.

Strategies:

- ``tpe`` (Optuna's multi-objective default), ``nsga2``, ``random``, ``grid``: poolnas' own
  :func:`poolnas.search.make_sampler` on an in-memory Optuna study, with poolnas' dedup: a
  duplicate proposal gets the stored values and costs no training (the x axis counts unique
  trainings; duplicates are still shown to the sampler as trials, as in ``poolnas search``).
- ``surrogate`` (what ``poolnas search``'s default ``--sampler auto`` picks for a space of
  this size): :class:`poolnas.search.ParetoSurrogateSampler` (an additive
  Bayesian surrogate of accuracy and the exact expected hypervolume improvement, with the
  table's exact FLOPs as the known cost), on the same kind of study and dedup.
- ``kt-random``, ``kt-bayes``: KerasTuner's ``RandomSearchOracle`` and
  ``BayesianOptimizationOracle`` driven directly, one ``Choice`` per space parameter, with
  KerasTuner's own two-objective form (``[Objective("accuracy", "max"),
  Objective("flops_fraction", "min")]``, which it sums). KerasTuner trains every trial it
  creates, so each trial counts as a training, duplicates included.

Hypervolume (:func:`poolnas.search.hypervolume`): points map to ``(accuracy, 1 - flops /
reference)`` and the reference point is accuracy 0 at ``reference = the table's largest FLOPs``,
exactly (the same number ``CostModel.largest`` finds for this fixed-width space). The true front
and true hypervolume are those of all rows.

    python benchmarks/replay.py                      # 30 seeds per strategy, writes docs/ figures
    python benchmarks/replay.py --quick --table T    # 3 seeds, small caps (the smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from itertools import repeat
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import poolbench  # noqa: E402  (the table's space and file format)

STRATEGIES = ("tpe", "nsga2", "random", "grid", "surrogate", "previous", "kt-random", "kt-bayes")
#: Trainings each strategy may spend per run, at most (Optuna's are also capped by the space
#: size, since poolnas never trains an architecture twice).
CAPS = {"tpe": 300, "nsga2": 400, "random": 600, "grid": 729, "surrogate": 729, "previous": 729,
        "kt-random": 600, "kt-bayes": 100}
#: Runs per strategy when it is slower than the rest: KerasTuner's Bayesian oracle fits a
#: Gaussian process and restarts L-BFGS 50 times per proposal (about 1.4 s of CPU each here).
RUNS = {"kt-bayes": 5}
LEVELS = (0.95, 0.99)


class Table:
    """The benchmark table restricted to a space: objectives by key, reference, true front."""

    def __init__(self, rows: dict[str, dict[str, Any]], space, *,
                 normalisation: str = "poolnas") -> None:
        from poolnas.search import hypervolume

        missing = [a.key for a in space if a.key not in rows]
        if missing:
            raise SystemExit(f"the table lacks {len(missing)} architectures of the space, "
                             f"e.g. {missing[0]}; build it with benchmarks/poolbench.py")
        self.space = space
        self.values = {a.key: (statistics.fmean(rows[a.key]["val_acc"]),
                               float(rows[a.key]["flops"])) for a in space}
        self.reference = max(f for _, f in self.values.values())
        # "poolnas": the search's own convention, (accuracy, 1 - flops / reference) with the
        # reference point (0, reference). "range": the same after mapping the table's accuracy
        # range and FLOPs range onto [0, 1], which stops the empty rectangle below the worst
        # accuracy and left of the cheapest model from dominating the number.
        self.normalisation = normalisation
        self._low_acc = min(a for a, _ in self.values.values()) if normalisation == "range" else 0.0
        self._low_flops = (min(f for _, f in self.values.values())
                           if normalisation == "range" else 0.0)
        high_acc = max(a for a, _ in self.values.values())
        self._acc_span = (high_acc - self._low_acc) if normalisation == "range" else 1.0
        self.true_hv = hypervolume(self._mapped(self.values), reference_flops=self._ref())
        self.front = _front(self.values)

    def _ref(self) -> float:
        return self.reference - self._low_flops

    def _mapped(self, values) -> list[tuple[float, float]]:
        pairs = values.values() if isinstance(values, dict) else values
        return [((a - self._low_acc) / self._acc_span, f - self._low_flops) for a, f in pairs]

    def hv(self, keys) -> float:
        from poolnas.search import hypervolume

        return hypervolume(self._mapped([self.values[k] for k in keys]),
                           reference_flops=self._ref())


def _front(values: dict[str, tuple[float, float]]) -> list[str]:
    ordered = sorted(values, key=lambda k: (values[k][1], -values[k][0]))
    front, best = [], -1.0
    for key in ordered:
        if values[key][0] > best:
            front.append(key)
            best = values[key][0]
    return front


class Curve:
    """Hypervolume after each training of one run."""

    def __init__(self, table: Table, cap: int, *, seed: int = 0) -> None:
        self.table, self.cap, self.seed = table, cap, seed
        self.trained: list[str] = []
        self.unique: set[str] = set()
        self.hv: list[float] = []
        self.proposals = 0

    def train(self, key: str, *, count_duplicate: bool) -> bool:
        """Record a training of ``key``; False once the cap is reached or the whole true
        front has been found (nothing can change after that)."""
        self.proposals += 1
        if key not in self.unique or count_duplicate:
            self.unique.add(key)
            self.trained.append(key)
            self.hv.append(self.table.hv(self.unique))
        found_all = bool(self.hv) and self.hv[-1] >= self.table.true_hv * (1 - 1e-12)
        return len(self.hv) < self.cap and not found_all


def run_optuna(name: str, table: Table, seed: int, cap: int) -> Curve:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curve = Curve(table, cap, seed=seed)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=_sampler(name, table.space, seed, table))

    def objective(trial):
        key = table.space.suggest(trial).key
        # A re-evaluation (the surrogate's ``repeat_of``) is a training: it counts.
        if not curve.train(key, count_duplicate="repeat_of" in trial.user_attrs):
            trial.study.stop()
        return table.values[key]

    # At most 5 proposals per allowed training: a sampler that keeps proposing architectures it
    # has already trained ends its run there (counted as not reaching what it did not reach).
    study.optimize(objective, n_trials=5 * cap)
    return curve


def _sampler(name: str, space, seed: int, table: Table | None = None):
    """poolnas' sampler for ``name``; ``tpe:n_startup_trials=5`` or ``nsga2:population_size=10``
    tries other settings of the same sampler (the tuning evidence in docs/benchmarks.md).

    ``surrogate`` is :class:`poolnas.search.ParetoSurrogateSampler` with the
    table's exact FLOPs; ``surrogate:acquisition=thompson;pairwise=1;n_startup_trials=5;
    cheapest_first=0`` tries its settings."""
    import optuna

    base, _, options = name.partition(":")
    if base == "previous":
        # The pre-issue-14 default, verbatim (benchmarks/previous_surrogate.py).
        import previous_surrogate

        flops = {key: f for key, (_, f) in table.values.items()}
        return previous_surrogate.ParetoSurrogateSampler(
            space, lambda params: flops[space.architecture(params).key], seed=seed)
    if base == "surrogate":
        from poolnas.search import ParetoSurrogateSampler

        settings: dict[str, Any] = {}
        for pair in filter(None, options.split(";")):
            key, value = pair.split("=")
            settings[key] = (value if key == "acquisition" else None if value == "none" else
                             float(value) if "." in value else int(value))
        flops = {key: f for key, (_, f) in table.values.items()}
        return ParetoSurrogateSampler(space, lambda params: flops[space.architecture(params).key],
                                      seed=seed, **settings)

    from poolnas.search import make_sampler

    if not options:
        return make_sampler(name, space, seed)
    kwargs = {k: int(v) for k, v in (pair.split("=") for pair in options.split(";"))}
    if base == "tpe":
        settings = {"multivariate": True, "group": True, **kwargs}
        if not settings["multivariate"]:
            settings["group"] = False
        return optuna.samplers.TPESampler(seed=seed, **settings)
    if base == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **kwargs)
    raise SystemExit(f"no settings for strategy {base!r}")


def run_keras_tuner(name: str, table: Table, seed: int, cap: int, workdir: str) -> Curve:
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for param, values in table.space.parameters().items():
        hp.Choice(param, list(values))
    objective = [kt.Objective("accuracy", "max"), kt.Objective("flops_fraction", "min")]
    if name == "kt-random":
        oracle = kt.oracles.RandomSearchOracle(objective=objective, max_trials=cap,
                                               hyperparameters=hp, seed=seed + 1)
    else:
        oracle = kt.oracles.BayesianOptimizationOracle(objective=objective, max_trials=cap,
                                                       hyperparameters=hp, seed=seed + 1)
    oracle._set_project_dir(workdir, f"{name}-{seed}")
    oracle.verbose = 0
    curve = Curve(table, cap, seed=seed)
    while True:
        trial = oracle.create_trial("replay")
        if trial.status != "RUNNING":
            break
        key = table.space.architecture(trial.hyperparameters.values).key
        accuracy, flops = table.values[key]
        more = curve.train(key, count_duplicate=True)
        # As KerasTuner's Tuner reports a trial from a History: the metrics plus the summed
        # multi-objective (``MultiObjective.get_value``).
        metrics = {"accuracy": accuracy, "flops_fraction": flops / table.reference}
        metrics[oracle.objective.name] = oracle.objective.get_value(metrics)
        oracle.update_trial(trial.trial_id, metrics)
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        if not more:
            break
    return curve


def run(name: str, table: Table, seed: int, cap: int, workdir: str) -> Curve:
    if name.startswith("kt-"):
        return run_keras_tuner(name, table, seed, cap, workdir)
    return run_optuna(name, table, seed, cap)


def run_seeds(name: str, table: Table, seeds: range, cap: int, workdir: str, *,
              jobs: int = 1) -> list[Curve]:
    """One run per seed, in ``jobs`` processes (each run is independent and seeded, so the
    curves are the same however many processes share them)."""
    args = (repeat(name), repeat(table), seeds, repeat(cap), repeat(workdir))
    if jobs <= 1:
        return list(map(run, *args))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # "spawn": a forked child would inherit the parent's threads and locks (Optuna, BLAS).
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run, *args))


def trainings_to(curve: Curve, target: float) -> int | None:
    """Trainings until the hypervolume first reaches ``target`` (None: never)."""
    for index, value in enumerate(curve.hv, start=1):
        if value >= target - 1e-12:
            return index
    return None


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def summarise(name: str, curves: list[Curve], table: Table, cap: int) -> dict[str, Any]:
    result: dict[str, Any] = {"strategy": name, "runs": len(curves), "cap": cap}
    for level in LEVELS:
        counts = [trainings_to(c, level * table.true_hv) for c in curves]
        # A run that never got there counts as cap + 1 (a lower bound), and is reported.
        filled = [c if c is not None else cap + 1 for c in counts]
        low, mid, high = quartiles([float(v) for v in filled])
        result[f"to_{int(level * 100)}"] = {"q1": low, "median": mid, "q3": high,
                                            "reached": sum(c is not None for c in counts)}
    length = max(len(c.hv) for c in curves)
    bands = []
    for n in range(length):
        at_n = [c.hv[min(n, len(c.hv) - 1)] for c in curves]
        bands.append(quartiles(at_n))
    result["hv_bands"] = [[round(v / table.true_hv, 5) for v in band] for band in bands]
    result["proposals_per_training"] = statistics.fmean(
        c.proposals / max(len(c.hv), 1) for c in curves)
    result["runs_detail"] = [{"seed": c.seed, "proposals": c.proposals,
                              "hv": [round(v, 7) for v in c.hv]} for c in curves]
    return result


def load_runs(paths: list[Path], table: Table) -> dict[str, list[Curve]]:
    """The runs stored in earlier ``--out`` JSON files, by strategy (for ``--merge``)."""
    runs: dict[str, list[Curve]] = {}
    for path in paths:
        stored = json.loads(path.read_text())
        if (stored["space_size"], stored["normalisation"]) != (table.space.size,
                                                                 table.normalisation):
            raise SystemExit(f"{path}: another space or normalisation than this replay's")
        for result in stored["results"]:
            for detail in result.get("runs_detail", []):
                curve = Curve(table, result["cap"], seed=detail["seed"])
                curve.hv, curve.proposals = list(detail["hv"]), detail["proposals"]
                runs.setdefault(result["strategy"], []).append(curve)
    return runs


def plot(results: list[dict[str, Any]], path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for result in results:
        bands = result["hv_bands"]
        xs = range(1, len(bands) + 1)
        low, mid, high = zip(*bands)
        (line,) = ax.plot(xs, mid, label=result["strategy"], lw=1.6)
        ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
    for level in LEVELS:
        ax.axhline(level, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("unique trainings (KerasTuner: all trainings)")
    ax.set_ylabel("hypervolume / true front's hypervolume")
    ax.set_ylim(0.5, 1.005)
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: list[dict[str, Any]], table: Table) -> str:
    lines = [f"Space: {table.space.size} architectures; true front: {len(table.front)} "
             f"architectures, hypervolume {table.true_hv:.5f} ({table.normalisation} "
             f"normalisation, reference FLOPs {int(table.reference):,}).", "",
             "| strategy | runs | trainings to 95 % HV (median [q1, q3]) | reached | "
             "trainings to 99 % HV | reached | proposals per training |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        a, b = r["to_95"], r["to_99"]
        lines.append(
            f"| `{r['strategy']}` | {r['runs']} | {a['median']:g} [{a['q1']:g}, {a['q3']:g}] "
            f"| {a['reached']}/{r['runs']} | {b['median']:g} [{b['q1']:g}, {b['q3']:g}] "
            f"| {b['reached']}/{r['runs']} | {r['proposals_per_training']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=poolbench.TABLE)
    parser.add_argument("--quick", action="store_true",
                        help="the quick table's space, 3 seeds, caps of 40: about a minute")
    parser.add_argument("--seeds", type=int, default=None,
                        help="runs per strategy (default 30, kt-bayes 5; --quick 3)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--subspace", default="full", choices=poolbench.SUBSPACES,
                        help="replay on a nested sub-space of the table (default full)")
    parser.add_argument("--normalisation", default="poolnas", choices=("poolnas", "range"),
                        help="hypervolume as poolnas computes it (default) or range-normalised")
    parser.add_argument("--cap", type=int, default=None, help="one cap for every strategy")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seed of the first run (to split runs over machines)")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="<out>.json files of earlier runs of the same strategies and space: "
                             "their runs join this one's")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes to spread a strategy's runs over (default 1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write <out>.json, <out>.png and <out>.md (default: print only)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (3 if args.quick else 30)
    space = poolbench.bench_subspace(args.subspace, quick=args.quick)
    table = Table(poolbench.load_table(args.table), space, normalisation=args.normalisation)
    merged = load_runs(args.merge, table)
    results = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="poolnas-replay-") as workdir:
        for name in args.strategies.split(","):
            cap = args.cap or (40 if args.quick else CAPS[name.partition(":")[0]])
            if name != "kt-bayes":
                cap = min(cap, space.size)
            runs = min(seeds, RUNS.get(name, seeds)) if not args.seeds else seeds
            tick = time.perf_counter()
            seeds_run = range(args.first_seed, args.first_seed + runs)
            curves = run_seeds(name, table, seeds_run, cap, workdir, jobs=args.jobs)
            for curve in merged.get(name, []):
                if curve.cap != cap:
                    raise SystemExit(f"--merge: the stored {name} runs had a cap of {curve.cap}, "
                                     f"this replay's is {cap}")
                if curve.seed not in seeds_run:
                    curves.append(curve)
            result = summarise(name, curves, table, cap)
            result["seconds"] = round(time.perf_counter() - tick, 1)
            results.append(result)
            print(f"{name}: to 95% {result['to_95']}, to 99% {result['to_99']}, "
                  f"{result['seconds']} s", file=sys.stderr, flush=True)
    text = markdown(results, table)
    print(text)
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        summary = {"normalisation": table.normalisation, "true_hv": table.true_hv,
                   "reference_flops": table.reference, "front": table.front,
                   "space_size": space.size, "results": results}
        args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
        args.out.with_suffix(".md").write_text(text + "\n")
        plot(results, args.out.with_suffix(".png"),
             title=f"PoolBench-digits, {args.subspace} ({space.size} architectures), "
                   f"{args.normalisation} hypervolume")


if __name__ == "__main__":
    main()
