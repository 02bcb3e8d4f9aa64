"""Multi-fidelity vs full-fidelity search, replayed on PoolBench-curves at equal training epochs.

Every run searches the table's sub-space (``benchmarks/poolbench_curves.py``: 81 architectures,
per-epoch validation accuracy for epochs 1…16, 3 seeds) with the same sampler, in two ways:

- ``full``: every proposal trains 16 epochs (``poolnas search --epochs 16``);
- ``mo-asha m/η``: ``poolnas search --epochs 16 --min-epochs m --reduction-factor η``, driven by
  poolnas' own scheduler: :func:`poolnas.search._multi_fidelity.next_promotion` decides each
  promotion from the study's trials (non-dominated rank, then crowding, best ``1/η`` of a rung),
  a promotion is an enqueued trial with ``promoted_from`` and ``rung``, a trial below the top
  rung ends ``PRUNED``, and the sampler sees trials through
  :class:`~poolnas.search._multi_fidelity.FullFidelityView`, exactly as in ``poolnas search``
  with one worker.

An architecture's training in a run is one of the table's three seeds, drawn per run and
architecture (a search trains each architecture once, with one seed): its accuracy after ``e``
epochs is that seed's ``val_acc[e - 1]``, so a promoted architecture continues the same curve.
The x axis is total training epochs spent (a trial continued from rung ``k`` spends the epochs
between the rungs). The y axis is the hypervolume of the architectures trained to 16 epochs so
far, each at its *true* value (mean validation accuracy of the three seeds at epoch 16; FLOPs),
divided by the hypervolume of the whole table's true front; range-normalised as in
``benchmarks/replay.py --normalisation range``. A lower-fidelity value never counts, as in
``poolnas front``.

The sampler is poolnas' default for this space (:class:`~poolnas.search.ParetoSurrogateSampler`,
re-evaluations off in both arms: a multi-fidelity search does not offer them) or Optuna's
``random``; ``--sampler`` picks.

    nice -n 5 python benchmarks/multi_fidelity.py --out docs/figures/multi_fidelity
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import poolbench  # noqa: E402
import poolbench_curves  # noqa: E402

LEVELS = (0.95, 0.99)
EPOCHS = poolbench_curves.EPOCHS
#: Schedules replayed by default: (min_epochs, η).
SCHEDULES = ((1, 3), (2, 2), (3, 3), (4, 2), (4, 4))
#: Epoch budgets at which the hypervolume reached is reported.
AT_EPOCHS = (64, 128, 256, 512)


class CurvesTable:
    """The curves of a sub-space; true values at the top epoch; range-normalised hypervolume."""

    def __init__(self, rows: dict[str, dict[str, Any]], space) -> None:
        missing = [a.key for a in space if a.key not in rows]
        if missing:
            raise SystemExit(f"the curves table lacks {len(missing)} architectures of the "
                             f"sub-space, e.g. {missing[0]}; build it with "
                             "benchmarks/poolbench_curves.py")
        self.space = space
        self.rows = {a.key: rows[a.key] for a in space}
        self.flops = {k: float(r["flops"]) for k, r in self.rows.items()}
        self.true = {k: statistics.fmean(c[EPOCHS - 1] for c in r["val_acc"])
                     for k, r in self.rows.items()}
        self._low_acc = min(self.true.values())
        self._span = max(self.true.values()) - self._low_acc
        self._low_flops = min(self.flops.values())
        self._ref = max(self.flops.values()) - self._low_flops
        self.true_hv = self.hv(self.rows)

    def hv(self, keys) -> float:
        from poolnas.search import hypervolume

        return hypervolume([((self.true[k] - self._low_acc) / self._span,
                             self.flops[k] - self._low_flops) for k in keys],
                           reference_flops=self._ref)

    def accuracy(self, key: str, seed_index: int, epochs: int) -> float:
        return float(self.rows[key]["val_acc"][seed_index][epochs - 1])


class Run:
    """One search: epochs spent, and the hypervolume after each architecture reaches epoch 16."""

    def __init__(self, table: CurvesTable, seed: int, budget: int) -> None:
        import numpy as np

        self.table, self.seed, self.budget = table, seed, budget
        rng = np.random.default_rng(10_000 + seed)
        keys = sorted(table.rows)
        self.seed_of = dict(zip(keys, (int(i) for i in rng.integers(0, 3, len(keys)))))
        self.spent = 0
        self.full: set[str] = set()
        self.points: list[tuple[int, float]] = []  # (epochs spent, hv)

    def finished(self, key: str) -> None:
        self.full.add(key)
        self.points.append((self.spent, self.table.hv(self.full)))

    @property
    def done(self) -> bool:
        return self.spent >= self.budget or (
            bool(self.points) and self.points[-1][1] >= self.table.true_hv * (1 - 1e-12))


def _sampler(name: str, table: CurvesTable, seed: int):
    from poolnas.search import ParetoSurrogateSampler, make_sampler

    if name == "surrogate":
        space = table.space
        return ParetoSurrogateSampler(
            space, lambda params: table.flops[space.architecture(params).key], seed=seed,
            reevaluate=False)
    return make_sampler(name, table.space, seed)


def run_full(table: CurvesTable, sampler: str, seed: int, budget: int) -> Run:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = Run(table, seed, budget)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=_sampler(sampler, table, seed))

    def objective(trial):
        key = table.space.suggest(trial).key
        if key in run.full:  # a duplicate: no training (poolnas copies it)
            trial.set_user_attr("duplicate_of", -1)
            return table.true[key], table.flops[key]
        accuracy = table.accuracy(key, run.seed_of[key], EPOCHS)
        trial.set_user_attr("accuracies", [accuracy])
        run.spent += EPOCHS
        run.finished(key)
        return accuracy, table.flops[key]

    for _ in range(5 * table.space.size):
        if run.done or len(run.full) == table.space.size:
            break
        study.optimize(objective, n_trials=1)
    return run


def run_asha(table: CurvesTable, sampler: str, seed: int, budget: int,
             min_epochs: int, eta: int) -> Run:
    import optuna

    from poolnas.search._multi_fidelity import FullFidelityView, RungSchedule, next_promotion
    from poolnas.search._trial_attrs import TrialAttrs as A

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    schedule = RungSchedule(min_epochs, eta, EPOCHS)
    rungs = schedule.rungs
    run = Run(table, seed, budget)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=FullFidelityView(_sampler(sampler, table, seed)))
    lineages: set[str] = set()

    def objective(trial):
        key = table.space.suggest(trial).key
        parent = trial.user_attrs.get(A.PROMOTED_FROM)
        trial.set_user_attr(A.ARCHITECTURE, key)
        trial.set_user_attr(A.FLOPS, table.flops[key])
        if parent is None:
            if key in lineages:
                trial.set_user_attr(A.DUPLICATE_OF, -1)
                raise optuna.TrialPruned()
            lineages.add(key)
            rung, history = 0, []
        else:
            rung = int(trial.user_attrs[A.RUNG])
            history = list(study.get_trials(deepcopy=False)[int(parent)]
                           .user_attrs[A.RUNG_ACCURACIES])
        epochs = rungs[rung]
        run.spent += epochs - (rungs[rung - 1] if rung else 0)
        accuracy = table.accuracy(key, run.seed_of[key], epochs)
        history.append(accuracy)
        trial.set_user_attr(A.RUNG, rung)
        trial.set_user_attr(A.RUNG_ACCURACIES, history)
        trial.set_user_attr(A.ACCURACIES, [accuracy])
        if rung < schedule.top:
            raise optuna.TrialPruned()
        run.finished(key)
        return accuracy, table.flops[key]

    for _ in range(20 * table.space.size):
        if run.done:
            break
        trials = study.get_trials(deepcopy=False)
        exhausted = len(lineages) == table.space.size
        promotion = next_promotion(trials, schedule, exhausted=exhausted)
        if promotion is not None:
            study.enqueue_trial(trials[promotion.number].params, user_attrs={
                A.PROMOTED_FROM: promotion.number, A.RUNG: promotion.rung + 1})
        elif exhausted:
            break  # every architecture tried and promoted as far as it goes
        study.optimize(objective, n_trials=1)
    return run


def epochs_to(run: Run, target: float) -> int | None:
    for spent, value in run.points:
        if value >= target - 1e-12:
            return spent
    return None


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def summarise(name: str, runs: list[Run], table: CurvesTable) -> dict[str, Any]:
    result: dict[str, Any] = {"arm": name, "runs": len(runs), "budget": runs[0].budget}
    for level in LEVELS:
        counts = [epochs_to(r, level * table.true_hv) for r in runs]
        filled = [float(c) if c is not None else float(r.budget + 1)
                  for c, r in zip(counts, runs)]
        low, mid, high = quartiles(filled)
        result[f"to_{int(level * 100)}"] = {"q1": low, "median": mid, "q3": high,
                                            "reached": sum(c is not None for c in counts),
                                            "each": counts}
    result["full_trainings"] = statistics.fmean(len(r.full) for r in runs)
    result["hv_at"] = {}
    for spent in AT_EPOCHS:
        fractions = [max((v for e, v in r.points if e <= spent), default=0.0) / table.true_hv
                     for r in runs]
        result["hv_at"][spent] = quartiles(fractions)
    return result


def markdown(results: list[dict[str, Any]], table: CurvesTable, sampler: str) -> str:
    base = results[0]
    lines = [f"Sub-space: {table.space.size} architectures; sampler `{sampler}`; "
             f"true hypervolume {table.true_hv:.5f} (range-normalised, epoch {EPOCHS} means).",
             "",
             "| arm | runs | epochs to 95 % HV (median [q1, q3]) | reached | ratio to full "
             "| epochs to 99 % HV | reached | ratio to full |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        a, b = r["to_95"], r["to_99"]
        lines.append(
            f"| `{r['arm']}` | {r['runs']} | {a['median']:g} [{a['q1']:g}, {a['q3']:g}] | "
            f"{a['reached']}/{r['runs']} | {a['median'] / base['to_95']['median']:.2f} | "
            f"{b['median']:g} [{b['q1']:g}, {b['q3']:g}] | {b['reached']}/{r['runs']} | "
            f"{b['median'] / base['to_99']['median']:.2f} |")
    lines += ["", "Hypervolume reached (fraction of the true one, median [q1, q3]) after a "
              "number of training epochs:", "",
              "| arm | " + " | ".join(f"{e} epochs" for e in AT_EPOCHS) + " |",
              "|---|" + "---:|" * len(AT_EPOCHS)]
    for r in results:
        cells = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for lo, m, hi in
                 (r["hv_at"][e] for e in AT_EPOCHS)]
        lines.append(f"| `{r['arm']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(table: CurvesTable) -> str:
    """What the curves say: mean accuracy per epoch, the seeds' spread, and how well one
    seed's accuracy after e epochs ranks the architectures by their true (16-epoch) value."""
    from scipy.stats import kendalltau

    keys = sorted(table.rows)
    truth = [table.true[k] for k in keys]
    sds = [statistics.stdev(c[EPOCHS - 1] for c in table.rows[k]["val_acc"]) for k in keys]
    lines = [f"{len(keys)} architectures x 3 seeds; true accuracy (epoch {EPOCHS} mean) "
             f"{min(truth):.3f}-{max(truth):.3f}, seed sd at epoch {EPOCHS} "
             f"{statistics.fmean(sds):.4f} on average", "",
             "| epochs | mean val accuracy (one seed) | Kendall τ, one seed at e vs truth |",
             "|---:|---:|---:|"]
    for epochs in (1, 2, 3, 4, 6, 8, 9, 12, 16):
        taus, means = [], []
        for seed in range(3):
            single = [table.rows[k]["val_acc"][seed][epochs - 1] for k in keys]
            taus.append(kendalltau(single, truth).statistic)
            means.append(statistics.fmean(single))
        lines.append(f"| {epochs} | {statistics.fmean(means):.3f} | "
                     f"{statistics.fmean(taus):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=poolbench_curves.TABLE)
    parser.add_argument("--subspace", default="last-fixed", choices=poolbench.SUBSPACES)
    parser.add_argument("--sampler", default="surrogate", choices=("surrogate", "random", "tpe"))
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--schedules", default=",".join(f"{m}/{e}" for m, e in SCHEDULES),
                        help="comma-separated MIN/η (default %(default)s)")
    parser.add_argument("--budget", type=int, default=None,
                        help="epochs a run may spend (default: the whole sub-space at 16)")
    parser.add_argument("--out", type=Path, default=None, help="write <out>.json and <out>.md")
    parser.add_argument("--describe", action="store_true",
                        help="print what the curves say (accuracy per epoch, rank agreement)")
    args = parser.parse_args(argv)
    space = poolbench.bench_subspace(args.subspace)
    table = CurvesTable(poolbench.load_table(args.table), space)
    if args.describe:
        print(describe(table))
        return
    budget = args.budget or EPOCHS * space.size
    results = []
    started = time.perf_counter()
    arms: list[tuple[str, Any]] = [("full", None)]
    for text in filter(None, args.schedules.split(",")):
        m, eta = (int(v) for v in text.split("/"))
        arms.append((f"mo-asha {m}/{eta}", (m, eta)))
    for name, schedule in arms:
        tick = time.perf_counter()
        runs = []
        for seed in range(args.seeds):
            if schedule is None:
                runs.append(run_full(table, args.sampler, seed, budget))
            else:
                runs.append(run_asha(table, args.sampler, seed, budget, *schedule))
        result = summarise(name, runs, table)
        result["seconds"] = round(time.perf_counter() - tick, 1)
        results.append(result)
        print(f"{name}: to 95% {result['to_95']['median']}, to 99% {result['to_99']['median']} "
              f"({result['seconds']} s)", file=sys.stderr, flush=True)
    text = markdown(results, table, args.sampler)
    print(text)
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(
            {"sampler": args.sampler, "true_hv": table.true_hv, "space_size": space.size,
             "results": results}, indent=1))
        args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
