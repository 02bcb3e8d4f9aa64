"""How far the answer can be trusted: the accuracy model on simulated noisy searches.

PoolBench-digits (``benchmarks/data/poolbench_digits.jsonl``, 729 architectures x 3 seeds) is
searched with poolnas' surrogate sampler, and every training returns *one seed's* validation
accuracy drawn at random from the architecture's row (the table's real seed noise). After 30 and
60 trainings the model (:class:`poolnas.search.AccuracyModel`) is fitted and compared with the
table's all-seed truth:

- coverage: share of trained architectures whose 95 % interval holds the mean validation
  accuracy over the table's seeds, and the same for every choice effect (op / skip at each
  point vs the rest and pairwise, :meth:`poolnas.search.StudyModel.effects`);
- wrong sign: share of *decided* effect claims (interval excludes 0) whose sign is wrong;
- true hypervolume (mean test accuracy, exact FLOPs) of the reported front: the posterior-mean
  front of the default policy (model with interactions, re-evaluation on) against today's
  (additive model, no re-evaluation, the raw accuracies' front);
- Kendall tau of posterior means and of raw accuracies against the mean test accuracy.

``--timing`` measures one proposal's model work (fit + predict + EHVI) on a 50,000-architecture
space; ``benchmarks/proposal_time.py`` times a whole proposal (the number in the docs).

    python benchmarks/answer_quality.py --runs 10           # the numbers in docs/benchmarks.md
    python benchmarks/answer_quality.py --timing
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import poolbench  # noqa: E402


def kendall(a, b) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def simulate(rows, space, seed: int, trainings: tuple[int, ...], *, default: bool):
    import optuna

    from poolnas.search import ParetoSurrogateSampler, StudyModel, hypervolume

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    flops = {a.key: float(rows[a.key]["flops"]) for a in space}
    sampler = ParetoSurrogateSampler(space, lambda p: flops[space.architecture(p).key],
                                     seed=seed, interactions=default, reevaluate=default)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    rng = np.random.default_rng(10_000 + seed)
    reference = max(flops.values())
    val_truth = {k: statistics.fmean(r["val_acc"]) for k, r in rows.items()}
    test_truth = {k: statistics.fmean(r["test_acc"]) for k, r in rows.items()}
    results = {}

    def objective(trial):
        key = space.suggest(trial).key
        accuracy = float(rng.choice(rows[key]["val_acc"]))
        trial.set_user_attr("accuracies", [accuracy])
        return accuracy, flops[key]

    done = 0
    for target in trainings:
        study.optimize(objective, n_trials=target - done)
        done = target
        observed, _ = sampler._history(study, -1)
        model = sampler.fit(observed)
        keys = [sampler._keys[i] for i in sorted(observed)]
        raw = [float(np.mean(observed[i])) for i in sorted(observed)]
        mean, sd = model.predict(sampler._codes[sorted(observed)])
        truth = np.array([val_truth[k] for k in keys])
        cover = float(np.mean(np.abs(mean - truth) <= 1.96 * sd))
        if default:
            chosen = [(m, flops[k], k) for m, k in zip(mean, keys)]
        else:
            chosen = [(r, flops[k], k) for r, k in zip(raw, keys)]
        front, best = [], -math.inf
        for m, _f, k in sorted(chosen, key=lambda x: (x[1], -x[0])):
            if m > best:
                front.append(k)
                best = m
        hv = hypervolume([(test_truth[k], flops[k]) for k in front], reference_flops=reference)
        params = {k: dict(space.params_of(next(a for a in space if a.key == k))) for k in keys}
        study_model = StudyModel(space, lambda p: flops[space.architecture(p).key], model, {},
                                 params)
        hits = claims = wrong = total = 0
        for point in range(1, space.points + 1):
            for kind in ("op", "skip"):
                for e in study_model.effects(point, kind):
                    values = model.parameters[f"point{point}_{kind}"]
                    weights = {v: 0.0 for v in values}
                    weights[e.choice] = 1.0
                    if e.other is None:
                        for v in values:
                            if v != e.choice:
                                weights[v] = -1.0 / (len(values) - 1)
                    else:
                        weights[e.other] = -1.0
                    true_effect = statistics.fmean(
                        sum(w * val_truth[space.architecture({**c, f"point{point}_{kind}": v}).key]
                            for v, w in weights.items()) for c in params.values())
                    total += 1
                    hits += e.low <= true_effect <= e.high
                    if e.decided:
                        claims += 1
                        wrong += (e.effect > 0) != (true_effect > 0)
        tau_model = kendall(mean, [test_truth[k] for k in keys])
        tau_raw = kendall(raw, [test_truth[k] for k in keys])
        results[target] = dict(cover=cover, effect_cover=hits / total, claims=claims,
                               wrong=wrong, hv=hv, tau_model=tau_model, tau_raw=tau_raw,
                               unique=len(keys), noise=model.noise_sd,
                               pair=model.summary()["pair_sd"])
    return results


def timing() -> None:
    from poolnas.search import AccuracyModel, Observations
    from poolnas.search._surrogate import expected_improvement, front_steps

    params = {"a": tuple(range(10)), "b": tuple(range(10)), "c": tuple(range(10)),
              "d": tuple(range(5)), "e": tuple(range(5)), "f": tuple(range(2))}
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(len(v)) for v in params.values()],
                                indexing="ij"), -1).reshape(-1, len(params))
    rows = [dict(zip(params, r)) for r in grid]
    flops = rng.uniform(1, 2, len(rows))
    for n in (50, 100, 200):
        pick = rng.choice(len(rows), n, replace=False)
        obs = Observations.of([rows[i] for i in pick], [[rng.normal(0.9, 0.02)] for _ in pick])
        codes = AccuracyModel(params).encode(rows)
        start = time.perf_counter()
        model = AccuracyModel(params).fit(obs)
        mu, sd = model.predict(codes)
        levels, caps = front_steps([(mu[i], flops[i]) for i in pick], 2.0)
        expected_improvement(mu, sd, flops, levels, caps, float(mu[pick].min()), 2.0)
        print(f"{len(rows):,} candidates, {n} trained: {time.perf_counter() - start:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--timing", action="store_true")
    args = parser.parse_args()
    if args.timing:
        timing()
        return
    rows = poolbench.load_table()
    space = poolbench.bench_space()
    for default in (True, False):
        name = "default (interactions, re-evaluation)" if default else "today (additive, raw)"
        per = {30: [], 60: []}
        for seed in range(args.runs):
            for t, r in simulate(rows, space, seed, (30, 60), default=default).items():
                per[t].append(r)
        for t, runs in per.items():
            def avg(k, runs=runs):
                return statistics.fmean(r[k] for r in runs)
            claims = sum(r["claims"] for r in runs)
            wrong = sum(r["wrong"] for r in runs)
            print(f"{name} after {t}: arch coverage {avg('cover'):.3f}, effect coverage "
                  f"{avg('effect_cover'):.3f}, decided claims {claims} wrong {wrong}, "
                  f"true HV {avg('hv'):.4f}, tau model {avg('tau_model'):.3f} raw "
                  f"{avg('tau_raw'):.3f}, unique {avg('unique'):.1f}, "
                  f"noise sd {avg('noise'):.4f}, pair sd {avg('pair'):.4f}", flush=True)


if __name__ == "__main__":
    main()
