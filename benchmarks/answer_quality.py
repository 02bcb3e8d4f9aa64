"""How far the answer can be trusted: the accuracy model on simulated noisy searches.

PoolBench-digits (``benchmarks/data/poolbench_digits.jsonl``, 729 architectures x 3 seeds, and
``poolbench_digits_seeds345.jsonl``, the same architectures and budget with seeds 3, 4, 5: 6
seeds per architecture when both are there) is searched with poolnas' surrogate sampler, and
every training returns *one seed's* validation accuracy drawn at random from the architecture's
seeds (the table's real seed noise). After 30 and 60 trainings the model
(:class:`poolnas.search.AccuracyModel`) is fitted and compared with the table's all-seed truth:

- coverage: share of trained architectures whose 95 % interval holds the mean validation
  accuracy over the table's seeds, and the same for every choice effect (op / skip at each
  point vs the rest and pairwise, :meth:`poolnas.search.StudyModel.effects`);
- wrong sign: share of *decided* effect claims (interval excludes 0) whose sign is wrong;
- true hypervolume (mean test accuracy, exact FLOPs) of the reported front: the posterior-mean
  front of the default policy (model with interactions, re-evaluation on) against today's
  (additive model, no re-evaluation, the raw accuracies' front);
- Kendall tau of posterior means and of raw accuracies against the mean test accuracy;
- where the effect intervals miss: their coverage per parameter, and by how many trainings the
  rarest value of a contrast had (a value an adaptive sampler tried once and then avoided).

Policies: the default sampler, the same additive without re-evaluation, the pre-issue-14
sampler, and Optuna's random sampler (not a poolnas policy: the same model on a design that does
not adapt, for contrast).

``--timing`` measures one proposal's model work (fit + predict + EHVI) on a 50,000-architecture
space; ``benchmarks/proposal_time.py`` times a whole proposal (the number in the docs).

    python benchmarks/answer_quality.py --runs 100 --policies default,random   # docs/benchmarks.md
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

SEEDS_TABLE = Path(__file__).resolve().parent / "data" / "poolbench_digits_seeds345.jsonl"


def load_rows(more_seeds: Path | None = SEEDS_TABLE) -> dict:
    """PoolBench-digits with the seeds of ``more_seeds`` appended to each row (when the file
    has the row: a table still being built adds to the rows it has, and the truth of the others
    is their 3-seed mean)."""
    rows = poolbench.load_table()
    extra = poolbench.load_table(more_seeds) if more_seeds is not None else {}
    for key, row in extra.items():
        if key in rows and not set(row["seeds"]) & set(rows[key]["seeds"]):
            base = rows[key]
            rows[key] = {**base, "val_acc": base["val_acc"] + row["val_acc"],
                         "test_acc": base["test_acc"] + row["test_acc"],
                         "seeds": base["seeds"] + row["seeds"]}
    return rows


def kendall(a, b) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


POLICIES = ("default", "additive", "previous", "random")
POLICY_NAMES = {
    "default": "default: GP with pairwise terms by evidence, re-evaluation on",
    "additive": "same sampler, interactions=False, reevaluate=False",
    "previous": "previous default (benchmarks/previous_surrogate.py, verbatim pre-issue-14)",
    "random": "Optuna's RandomSampler: the same model on a design that does not adapt",
}


def make_policy_sampler(policy: str, space, flops_of, seed: int):
    if policy == "random":
        import optuna

        return optuna.samplers.RandomSampler(seed=seed)
    if policy == "previous":
        import previous_surrogate

        return previous_surrogate.ParetoSurrogateSampler(space, flops_of, seed=seed)
    from poolnas.search import ParetoSurrogateSampler

    default = policy == "default"
    return ParetoSurrogateSampler(space, flops_of, seed=seed, interactions=default,
                                  reevaluate=default)


def _front(points):
    """Keys of the non-dominated (value, flops, key) points."""
    front, best = [], -math.inf
    for m, _f, k in sorted(points, key=lambda x: (x[1], -x[0])):
        if m > best:
            front.append(k)
            best = m
    return front


def simulate(rows, space, seed: int, trainings: tuple[int, ...], *, policy: str,
             components: int | None = None, noise: str = "table"):
    """One simulated search of ``policy``; after each number of trainings, what the product's
    accuracy model (``fit_accuracy_model``'s: pairwise terms allowed) says against the truth.

    ``noise``: "table", a training returns one of the architecture's seeds (the table's real
    noise, skewed and heavy-tailed); "gaussian", the architecture's all-seed mean plus normal
    noise of the table's pooled seed sd, and the truth is that mean exactly (no error of its
    own): whether the answer's misses come from the shape of the noise or the truth's error."""
    import optuna

    from poolnas.search import AccuracyModel, Observations, StudyModel, hypervolume

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    flops = {a.key: float(rows[a.key]["flops"]) for a in space}
    params_of = {a.key: dict(space.params_of(a)) for a in space}

    def flops_of(p):
        return flops[space.architecture(p).key]

    sampler = make_policy_sampler(policy, space, flops_of, seed)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    rng = np.random.default_rng(10_000 + seed)
    reference = max(flops.values())
    val_truth = {k: statistics.fmean(r["val_acc"]) for k, r in rows.items()}
    # The truth is itself a mean of a few seeds: its own variance (sample variance / seeds).
    truth_var = {k: statistics.variance(r["val_acc"]) / len(r["val_acc"])
                 if noise == "table" else 0.0 for k, r in rows.items()}
    pooled_sd = math.sqrt(statistics.fmean(statistics.variance(r["val_acc"])
                                           for r in rows.values()))
    test_truth = {k: statistics.fmean(r["test_acc"]) for k, r in rows.items()}
    results = {}

    drawn: dict[str, list[float]] = {}

    def objective(trial):
        key = space.suggest(trial).key
        # One seed's accuracy (the table's real noise); a re-evaluation trains another seed,
        # so an architecture's seeds are drawn without replacement (then again, reshuffled).
        if noise == "gaussian":
            accuracy = float(val_truth[key] + rng.normal(0.0, pooled_sd))
        else:
            if not drawn.get(key):
                drawn[key] = list(rng.permutation(rows[key]["val_acc"]))
            accuracy = float(drawn[key].pop())
        trial.set_user_attr("accuracies", [accuracy])
        return accuracy, flops[key]

    done = 0
    for target in trainings:
        study.optimize(objective, n_trials=target - done)
        done = target
        observed: dict[str, list[float]] = {}
        for t in study.trials:
            # The previous and the random sampler never repeat on purpose: a proposal of a
            # trained architecture is a copy in poolnas (no training), so it adds no
            # observation and is no training.
            key = space.architecture(t.params).key
            if policy in ("previous", "random") and key in observed:
                continue
            observed.setdefault(key, []).extend(t.user_attrs["accuracies"])
        keys = list(observed)
        model = AccuracyModel(space.parameters(), **(
            {} if components is None else {"components": components})).fit(
            Observations.of([params_of[k] for k in keys], [observed[k] for k in keys]))
        raw = [float(np.mean(observed[k])) for k in keys]
        mean, sd = model.predict(model.encode([params_of[k] for k in keys]))
        truth = np.array([val_truth[k] for k in keys])
        cover = float(np.mean(np.abs(mean - truth) <= 1.959964 * sd))
        tv = np.array([truth_var[k] for k in keys])
        cover_noisy = float(np.mean(np.abs(mean - truth) <= 1.959964 * np.sqrt(sd ** 2 + tv)))
        hv = {}
        for name, values in (("model", mean), ("raw", raw)):
            front = _front([(m, flops[k], k) for m, k in zip(values, keys)])
            hv[name] = hypervolume([(test_truth[k], flops[k]) for k in front],
                                   reference_flops=reference)
        params = {k: params_of[k] for k in keys}
        study_model = StudyModel(space, flops_of, model, {}, params)
        hits = hits_noisy = claims = wrong = sure_claims = sure_wrong = total = 0
        # Coverage per parameter and by how often the rarest value of a contrast was trained:
        # [hits, total] (where the intervals miss, not only how often).
        by_parameter: dict[str, list[int]] = {}
        by_trainings: dict[str, list[int]] = {}
        for point in range(1, space.points + 1):
            for kind in ("op", "skip"):
                name = f"point{point}_{kind}"
                trained_with = {v: sum(len(observed[k]) for k in keys if params_of[k][name] == v)
                                for v in model.parameters[name]}
                for e in study_model.effects(point, kind):
                    values = model.parameters[name]
                    weights = {v: 0.0 for v in values}
                    weights[e.choice] = 1.0
                    if e.other is None:
                        for v in values:
                            if v != e.choice:
                                weights[v] = -1.0 / (len(values) - 1)
                    else:
                        weights[e.other] = -1.0
                    cells: dict[str, float] = {}
                    for v, w in weights.items():
                        for c in params.values():
                            k = space.architecture({**c, f"point{point}_{kind}": v}).key
                            cells[k] = cells.get(k, 0.0) + w / len(params)
                    true_effect = sum(w * val_truth[k] for k, w in cells.items())
                    # The interval widened by the truth's own seed error (independent rows).
                    extra = math.sqrt(sum(w * w * truth_var[k] for k, w in cells.items()))
                    half = 0.5 * (e.high - e.low)
                    centre = 0.5 * (e.high + e.low)
                    covered = e.low <= true_effect <= e.high
                    total += 1
                    hits += covered
                    rarest = min(trained_with[v] for v in values if weights[v])
                    for table, key in ((by_parameter, name),
                                       (by_trainings, _trainings_bin(rarest))):
                        cell = table.setdefault(key, [0, 0])
                        cell[0] += covered
                        cell[1] += 1
                    hits_noisy += abs(true_effect - centre) <= math.hypot(half, 1.959964 * extra)
                    if e.decided:
                        claims += 1
                        wrong += (e.effect > 0) != (true_effect > 0)
                        # Claims whose truth has a sign the table itself is sure of (|truth|
                        # beyond twice the truth's own seed error).
                        if abs(true_effect) > 1.959964 * extra:
                            sure_claims += 1
                            sure_wrong += (e.effect > 0) != (true_effect > 0)
        results[target] = dict(
            cover=cover, cover_noisy=cover_noisy, effect_cover=hits / total,
            effect_cover_noisy=hits_noisy / total, effects=total, claims=claims, wrong=wrong,
            sure_claims=sure_claims, sure_wrong=sure_wrong, by_parameter=by_parameter,
            by_trainings=by_trainings,
            hv_model=hv["model"], hv_raw=hv["raw"],
            tau_model=kendall(mean, [test_truth[k] for k in keys]),
            tau_raw=kendall(raw, [test_truth[k] for k in keys]),
            unique=len(keys), trainings=sum(len(v) for v in observed.values()),
            noise=model.noise_sd, pair=model.summary()["pair_sd"])
    return results


#: Bins of a contrast's rarest value's trainings: (lowest count, label), in increasing order.
TRAININGS_BINS = ((1, "1"), (2, "2-3"), (4, "4-7"), (8, "8-15"), (16, "16+"))


def _trainings_bin(count: int) -> str:
    """The label of the bin of TRAININGS_BINS that ``count`` falls in ("0" below the first)."""
    return next((label for low, label in reversed(TRAININGS_BINS) if count >= low), "0")


def _coverage_table(runs: list[dict], field: str) -> str:
    """The runs' [hits, total] of ``field`` pooled per key, as "key coverage (total)" cells:
    parameters by name, bins in increasing order."""
    pooled: dict[str, list[int]] = {}
    for r in runs:
        for key, (hit, n) in r[field].items():
            cell = pooled.setdefault(key, [0, 0])
            cell[0] += hit
            cell[1] += n

    bins = ["0", *(label for _, label in TRAININGS_BINS)]

    def order(key: str) -> tuple[int, str]:
        return (bins.index(key) if key in bins else 0, key)

    return ", ".join(f"{key} {pooled[key][0] / pooled[key][1]:.2f} ({pooled[key][1]})"
                     for key in sorted(pooled, key=order))


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
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--components", type=int, default=None,
                        help="hyper-parameter settings the answer's model averages over, at "
                             "most (default: the product's, AccuracyModel's MAX_COMPONENTS)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seed of the first simulated search (runs are seeded in a row)")
    parser.add_argument("--noise", choices=("table", "gaussian"), default="table",
                        help="a training's accuracy: one of the table's seeds (default), or the "
                             "all-seed mean plus normal noise of the pooled seed sd (simulate())")
    parser.add_argument("--more-seeds", type=Path, default=SEEDS_TABLE,
                        help="a table of further seeds of the same rows (default %(default)s; "
                             "'none': the 3 seeds of the published table only)")
    args = parser.parse_args()
    if args.timing:
        timing()
        return
    rows = load_rows(None if str(args.more_seeds) == "none" else args.more_seeds)
    seeds = sorted({len(r["val_acc"]) for r in rows.values()})
    print(f"{len(rows)} architectures, seeds per architecture: "
          + ", ".join(f"{n} ({sum(len(r['val_acc']) == n for r in rows.values())})"
                      for n in seeds) + "\n")
    space = poolbench.bench_space()
    print("| policy | trainings | runs | unique archs | arch 95 % coverage (vs noisy truth) "
          "| effect 95 % coverage (vs noisy truth) | decided claims (wrong sign) "
          "| of them, truth's sign sure (wrong) | true HV, model front | true HV, raw front "
          "| τ model | τ raw | noise sd | pair sd |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    started = time.perf_counter()
    diagnostics: list[str] = []
    for policy in args.policies.split(","):
        per = {30: [], 60: []}
        for seed in range(args.first_seed, args.first_seed + args.runs):
            for t, r in simulate(rows, space, seed, (30, 60), policy=policy,
                                 components=args.components, noise=args.noise).items():
                per[t].append(r)
        for t, runs in per.items():
            def avg(k, runs=runs):
                return statistics.fmean(r[k] for r in runs)

            def sem(k, runs=runs):
                values = [r[k] for r in runs]
                return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0

            claims = sum(r["claims"] for r in runs)
            wrong = sum(r["wrong"] for r in runs)
            share = f"{wrong / claims:.0%}" if claims else "-"
            sure = sum(r["sure_claims"] for r in runs)
            sure_wrong = sum(r["sure_wrong"] for r in runs)
            sure_share = f"{sure_wrong / sure:.0%}" if sure else "-"
            print(f"| {policy} | {t} | {len(runs)} | {avg('unique'):.1f} | {avg('cover'):.3f} "
                  f"({avg('cover_noisy'):.3f}) "
                  f"| {avg('effect_cover'):.3f} ({avg('effect_cover_noisy'):.3f}) "
                  f"| {claims} ({wrong}, {share}) | {sure} ({sure_wrong}, {sure_share}) "
                  f"| {avg('hv_model'):.4f} ± {sem('hv_model'):.4f} "
                  f"| {avg('hv_raw'):.4f} ± {sem('hv_raw'):.4f} "
                  f"| {avg('tau_model'):.3f} | {avg('tau_raw'):.3f} | {avg('noise'):.4f} "
                  f"| {avg('pair'):.4f} |", flush=True)
            diagnostics.append(
                f"- {policy}, after {t} trainings: effect coverage per parameter: "
                f"{_coverage_table(runs, 'by_parameter')}; by the trainings of the contrast's "
                f"rarest value: {_coverage_table(runs, 'by_trainings')}")
    print("\nWhere the effect intervals miss (coverage against the truth, number of effects):")
    print("\n".join(diagnostics))
    print(f"\n({time.perf_counter() - started:.0f} s; policies: "
          + "; ".join(f"{p}: {POLICY_NAMES[p]}" for p in args.policies.split(",")) + ")")


if __name__ == "__main__":
    main()
