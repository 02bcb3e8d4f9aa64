"""Hypervolume on the same budget: KerasTuner RandomSearch vs OptunaOracle vs ``poolnas search``.

Three ways to search poolnas' default space on digits, each given the same number of trials and
the same training budget (epochs, batch size, Adam at 3e-3), with several seeds:

- ``kt-random``: ``keras_tuner.RandomSearch`` with :class:`poolnas.search.PoolNASHyperModel`
  (KerasTuner as its users know it: one objective, no FLOPs);
- ``kt-oracle``: ``keras_tuner.Tuner`` with :class:`poolnas.search.OptunaOracle` (TPE, two
  objectives) and the same hypermodel;
- ``poolnas``: ``poolnas search`` (:class:`poolnas.search.SearchRunner`, TPE).

Each arm's trials are scored by the normalised hypervolume of their (validation accuracy,
FLOPs) front (:func:`poolnas.search.hypervolume`, reference: the space's largest FLOPs, the same
for all). Two accuracies are reported: ``recorded``, what each engine stores (KerasTuner's score
is the best epoch's, ``poolnas search``'s the last epoch's), and ``last epoch``, the last epoch's
validation accuracy for every arm (the hypermodel logs it), which compares like with like.

    python benchmarks/keras_tuner_hypervolume.py             # 5 seeds x 20 trials, 2 epochs
    python benchmarks/keras_tuner_hypervolume.py --quick     # 2 seeds x 4 trials, small space

Prints one JSON line per (seed, arm) and a table of medians (min–max over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ARMS = ("kt-random", "kt-oracle", "poolnas")


def bench_space(*, quick: bool):
    """The default space; ``quick``: 2 points x 2 ops x 2 skips (16 architectures, cheap set-up)."""
    from poolnas.spaces import SearchSpace

    if quick:
        return SearchSpace(points=2, ops=("max", "conv"), skips=("none", "projection"),
                           widths=(8, 16, 32))
    return SearchSpace()


def logging_hypermodel(space, data, budget, seed: int):
    """A PoolNASHyperModel that also logs each trained architecture's last-epoch accuracy."""
    from poolnas.search.keras_tuner import PoolNASHyperModel

    class Logged(PoolNASHyperModel):
        def fit(self, hp, model, *args, **kwargs):
            history = super().fit(hp, model, *args, **kwargs)
            self.last_epoch[self.architecture(hp).key] = float(history.history["val_accuracy"][-1])
            return history

    model = Logged(space, data.input_shape, data.num_classes,
                   input_scale=data.input_scale, input_offset=data.input_offset,
                   optimizer=budget.make_optimizer, seed=seed)
    model.last_epoch = {}
    return model


def front_volume(points, reference: int) -> tuple[float, int]:
    from poolnas.search import hypervolume

    points = [(a, f) for a, f in points if f <= reference]
    return hypervolume(points, reference_flops=reference), len(points)


def run_arm(arm: str, seed: int, data, budget, trials: int, reference: int, costs,
            tmp: str, space) -> dict:
    import keras_tuner
    import optuna

    from poolnas.search import SearchConfig, SearchRunner
    from poolnas.search.keras_tuner import OptunaOracle
    from poolnas.spaces import Architecture

    started = time.perf_counter()
    storage = f"sqlite:///{tmp}/bench.db"
    search_args = (data.train_dataset(budget.batch_size, seed=seed),)
    search_kwargs = {"validation_data": data.val_dataset(budget.batch_size),
                     "epochs": budget.epochs, "shuffle": False, "verbose": 0}
    if arm == "poolnas":
        config = SearchConfig(study=f"cli-{seed}", storage=storage, trials=trials, seed=seed,
                              budget=budget, space=space)
        runner = SearchRunner(config, data=data)
        runner.run()
        done = runner.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        recorded = [(t.values[0], t.values[1]) for t in done]
        last = recorded
        trained = sum("duplicate_of" not in t.user_attrs for t in done)
    else:
        hypermodel = logging_hypermodel(space, data, budget, seed)
        if arm == "kt-random":
            tuner = keras_tuner.RandomSearch(hypermodel, objective="val_accuracy",
                                             max_trials=trials, seed=seed + 1, directory=tmp,
                                             project_name=f"{arm}-{seed}")
        else:
            oracle = OptunaOracle(storage=storage, study_name=f"oracle-{seed}",
                                  max_trials=trials, seed=seed)
            tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=hypermodel, directory=tmp,
                                      project_name=f"{arm}-{seed}")
        tuner.search(*search_args, **search_kwargs)
        recorded = []
        for trial in tuner.oracle.trials.values():
            if trial.status == "COMPLETED" and trial.score is not None:
                arch = hypermodel.architecture(trial.hyperparameters)
                recorded.append((float(trial.score), costs(arch).flops))
        last = [(acc, costs(Architecture.from_key(key)).flops)
                for key, acc in hypermodel.last_epoch.items()]
        trained = len(hypermodel.last_epoch)
    volume, _ = front_volume(recorded, reference)
    volume_last, _ = front_volume(last, reference)
    return {"arm": arm, "seed": seed, "trials": trials, "trained": trained,
            "hypervolume": round(volume, 5), "hypervolume_last_epoch": round(volume_last, 5),
            "best_accuracy": round(max(a for a, _ in recorded), 4) if recorded else None,
            "seconds": round(time.perf_counter() - started, 1)}


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next(line.split(":", 1)[1].strip() for line in info
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 seeds x 4 trials, 1 epoch, a 16-architecture space")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="start at this seed (to add seeds to an earlier run)")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--summarise", metavar="FILE",
                        help="print the table of the JSON lines in FILE (earlier runs' output)")
    args = parser.parse_args(argv)
    if args.summarise:
        with open(args.summarise, encoding="utf-8") as lines:
            rows = [json.loads(line) for line in lines if line.startswith('{"arm"')]
        summarise(rows, [a for a in ARMS if any(r["arm"] == a for r in rows)])
        return
    seeds = args.seeds or (2 if args.quick else 5)
    trials = args.trials or (4 if args.quick else 20)
    epochs = args.epochs or (1 if args.quick else 2)

    import optuna

    from poolnas.evaluators import Budget, load_dataset
    from poolnas.search import CostModel

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_dataset("digits")
    budget = Budget(epochs=epochs, batch_size=args.batch_size)
    costs = CostModel(data.input_shape, data.num_classes, input_scale=data.input_scale,
                      input_offset=data.input_offset)
    space = bench_space(quick=args.quick)
    reference = costs.largest(space)
    arms = args.arms.split(",")
    print(json.dumps({"machine": machine(), "seeds": seeds, "trials": trials,
                      "budget": {"epochs": epochs, "batch_size": args.batch_size},
                      "reference_flops": reference}), flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="poolnas-hv-") as tmp:
        for seed in range(args.first_seed, args.first_seed + seeds):
            # Rotate the order so that no arm always runs first (or last) on a busy machine.
            order = arms[seed % len(arms):] + arms[:seed % len(arms)]
            for arm in order:
                result = run_arm(arm, seed, data, budget, trials, reference, costs, tmp, space)
                print(json.dumps(result), flush=True)
                results.append(result)

    summarise(results, arms)


def summarise(results: list[dict], arms: list[str]) -> None:
    """Medians (min–max) over seeds, per arm; and how often each arm had the best seed."""

    def summary(arm: str, key: str) -> str:
        values = [r[key] for r in results if r["arm"] == arm]
        return f"{statistics.median(values):.4f} ({min(values):.4f}–{max(values):.4f})"

    seeds = sorted({r["seed"] for r in results})
    wins = dict.fromkeys(arms, 0)
    for seed in seeds:
        mine = [r for r in results if r["seed"] == seed]
        if len(mine) == len(arms):
            wins[max(mine, key=lambda r: r["hypervolume"])["arm"]] += 1
    print(f"\n{'arm':<10} {'HV recorded':>24} {'HV last epoch':>24} {'best acc.':>10} "
          f"{'trained':>8} {'seconds':>8} {'best HV':>8}")
    for arm in arms:
        mine = [r for r in results if r["arm"] == arm]
        print(f"{arm:<10} {summary(arm, 'hypervolume'):>24} "
              f"{summary(arm, 'hypervolume_last_epoch'):>24} "
              f"{statistics.median(r['best_accuracy'] for r in mine):>10.4f} "
              f"{statistics.median(r['trained'] for r in mine):>8.0f} "
              f"{statistics.median(r['seconds'] for r in mine):>8.0f} "
              f"{wins[arm]:>4}/{len(seeds)}")


if __name__ == "__main__":
    main()
