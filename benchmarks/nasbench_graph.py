"""NAS-Bench-Graph (Qin et al., NeurIPS 2022 Datasets and Benchmarks), a public tabular NAS
benchmark whose table ships inside its PyPI package (``pip install --no-deps
nas-bench-graph==1.4.0``: ``nas_bench_graph/light/<dataset>.bench``, a pickled dict of 26,206
architectures with validation and test accuracy, latency and parameters), as a poolnas space.

The space: a GNN cell of 4 nodes; ``link`` picks one of 9 wirings (which earlier node feeds each
node) and ``op1``..``op4`` one of 9 operations per node (gat, gcn, gin, cheb, sage, arma, graph,
fc, skip): 9 x 9^4 = 59,049 parameter combinations, which the package's own canonical form
(``Arch(link, ops).valid_hash()``: isomorphic wirings, skip ops moved, equivalent nodes sorted)
maps onto its 26,206 distinct architectures. Choices interact by construction (what an op is worth
depends on the wiring and on the neighbouring ops). Accuracy: ``valid_perf`` (one value per
architecture, no seeds: a noiseless replay); cost: ``para`` (parameters, millions), exact and
known before training, as FLOPs are in poolnas. Searches are replayed with ``replay.py``'s
machinery (unique trainings to 95 % / 99 % of the true range-normalised hypervolume).

    python benchmarks/nasbench_graph.py --dataset cora --seeds 10 --cap 200
    python benchmarks/nasbench_graph.py --seeds 30 --strategies surrogate@300,tpe@1500,random@3000

A strategy may carry its own cap (``name@cap``); ``--jobs`` runs the seeds in processes.
``--diagnose SEED@N`` replays the default for ``N`` trainings and says where the table's most
accurate architectures stand in the model it then proposes from (posterior mean ± sd, rank by
EHVI among the untrained candidates): why a run stops short of 99 %.

    python benchmarks/nasbench_graph.py --diagnose 0@100
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import replay  # noqa: E402


@dataclass(frozen=True)
class GraphArch:
    key: str


class GraphSpace:
    """NAS-Bench-Graph's cell space with the interface ``make_sampler`` asks for."""

    def __init__(self, bench: dict) -> None:
        from nas_bench_graph.architecture import Arch, gnn_list, link_list

        self._Arch = Arch
        self._links = {"".join(map(str, lk)): lk for lk in link_list}
        self._params = {"link": tuple(self._links), **{f"op{i}": tuple(gnn_list)
                                                        for i in range(1, 5)}}
        self._canonical: dict[str, dict] = {}
        for combo in itertools.product(*self._params.values()):
            params = dict(zip(self._params, combo))
            key = self._key(params)
            if key in bench:
                self._canonical.setdefault(key, params)
        self.size = len(self._canonical)
        self.points = 0

    def _key(self, params) -> str:
        arch = self._Arch(list(self._links[params["link"]]),
                          [params[f"op{i}"] for i in range(1, 5)])
        return str(arch.valid_hash())

    def parameters(self):
        return dict(self._params)

    def architecture(self, params) -> GraphArch:
        return GraphArch(self._key(params))

    def params_of(self, arch: GraphArch):
        return dict(self._canonical[arch.key])

    def suggest(self, trial) -> GraphArch:
        return self.architecture({n: trial.suggest_categorical(n, list(v))
                                  for n, v in self._params.items()})

    def __iter__(self):
        for key in self._canonical:
            yield GraphArch(key)


def load(dataset: str):
    from nas_bench_graph import light_read

    bench = light_read(dataset)
    space = GraphSpace({str(k): v for k, v in bench.items()})
    rows = {str(k): {"val_acc": [float(v["valid_perf"])], "flops": float(v["para"])}
            for k, v in bench.items()}
    return replay.Table(rows, space, normalisation="range"), bench


def run_optuna(name: str, table, seed: int, cap: int):
    """``replay.run_optuna`` for this table: a parameter combination that is no architecture of
    the table (e.g. every node ``skip``, hash 88888) is a pruned trial, a proposal that costs no
    training (only TPE and random search propose such combinations; the surrogates enumerate)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curve = replay.Curve(table, cap, seed=seed)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=replay._sampler(name, table.space, seed, table))

    def objective(trial):
        key = table.space.suggest(trial).key
        if key not in table.values:
            curve.proposals += 1
            raise optuna.TrialPruned()
        if not curve.train(key, count_duplicate="repeat_of" in trial.user_attrs):
            trial.study.stop()
        return table.values[key]

    study.optimize(objective, n_trials=5 * cap)
    return curve


def diagnose(table, seed: int, trainings: int, top: int = 5) -> str:
    """Where the table's ``top`` most accurate architectures stand after ``trainings`` of the
    default sampler (seed ``seed``): the model the sampler fits then (``fit``, with its own
    hyper-parameter average), its posterior of each, and its rank by EHVI among the untrained
    candidates; and the candidates the EHVI ranks first."""
    import numpy as np

    from poolnas.search._surrogate import expected_improvement, front_steps

    curve = run_optuna("surrogate", table, seed, trainings)
    sampler = replay._sampler("surrogate", table.space, seed, table)
    sampler._prepare()
    index = sampler._index
    observed = {}
    for key in curve.trained:
        observed.setdefault(index[key], []).append(table.values[key][0])
    model = sampler.fit(observed)
    trained = sorted(observed)
    untried = np.array([i for i in range(len(sampler._keys)) if i not in observed])
    t_mu, _ = model.predict(sampler._codes[trained])
    levels, caps = front_steps(list(zip(t_mu, sampler._flops[trained])), sampler._reference)
    mu, sd = model.predict(sampler._codes[untried])
    noise = model.noise_sd ** 2
    score = expected_improvement(mu, np.sqrt(sd ** 2 + noise), sampler._flops[untried], levels,
                                 caps, float(t_mu.min()), sampler._reference)
    rank = np.empty(len(untried), int)
    rank[np.argsort(-score, kind="stable")] = np.arange(1, len(untried) + 1)
    where = {int(i): j for j, i in enumerate(untried)}
    best = max(table.values[k][0] for k in curve.unique)
    lines = [f"seed {seed}, {len(curve.hv)} trainings ({len(curve.unique)} architectures): "
             f"share of the true hypervolume {curve.hv[-1] / table.true_hv:.4f}, best accuracy "
             f"trained {best:.4f}; model: " + ", ".join(f"{k} {v:.4g}" for k, v in
                                                       model.summary().items())]
    ordered = sorted(table.values, key=lambda k: (-table.values[k][0], table.values[k][1]))
    for key in ordered[:top]:
        accuracy, cost = table.values[key]
        i = index[key]
        if i in observed:
            lines.append(f"  {key}: {accuracy:.4f} at {cost:.3f}: trained")
            continue
        j = where[i]
        lines.append(f"  {key}: {accuracy:.4f} at {cost:.3f}: model {mu[j]:.4f} ± {sd[j]:.4f}, "
                     f"EHVI rank {rank[j]:,} of {len(untried):,}  "
                     f"{sampler._candidates[i]}")
    for j in np.argsort(-score, kind="stable")[:3]:
        key = sampler._keys[untried[j]]
        lines.append(f"  EHVI's first choices: {key}: {table.values[key][0]:.4f} at "
                     f"{table.values[key][1]:.3f}, model {mu[j]:.4f} ± {sd[j]:.4f}")
    return "\n".join(lines)


_TABLES: dict = {}


def _run_seed(job):
    """One seeded run in a worker process (the table is loaded once per process)."""
    dataset, name, seed, cap = job
    if dataset not in _TABLES:
        _TABLES[dataset] = load(dataset)[0]
    curve = run_optuna(name, _TABLES[dataset], seed, cap)
    curve.table = None  # the caller has its own copy; do not send the table back
    return curve


def _shares(curve, true_hv: float, at: tuple[int, ...] = (50, 100, 200, 430)) -> str:
    """The run's hypervolume as a share of the true one after a few numbers of trainings (a
    run that found the whole front early keeps its last value): what 'reached 99 %' alone,
    a yes or no per run, does not show."""
    return ", ".join(f"{n}: {curve.hv[min(n, len(curve.hv)) - 1] / true_hv:.4f}"
                     for n in at if curve.hv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cora")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--cap", type=int, default=200, help="trainings per run, at most")
    parser.add_argument("--jobs", type=int, default=1, help="processes for the seeds")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first run")
    parser.add_argument("--seed-list", default=None,
                        help="comma-separated seeds to run instead (e.g. the runs a smaller "
                        "cap left short of 99 %%: a run does not depend on its cap)")
    parser.add_argument("--strategies", default="surrogate,surrogate:reevaluate=0,previous,"
                                                "tpe,random")
    parser.add_argument("--diagnose", default=None, metavar="SEED@N",
                        help="replay the default for N trainings with SEED, then say where the "
                             "table's most accurate architectures stand in its model")
    args = parser.parse_args()
    started = time.perf_counter()
    table, bench = load(args.dataset)
    print(f"NAS-Bench-Graph {args.dataset}: {len(bench)} rows, {table.space.size} reachable "
          f"architectures, true front {len(table.front)} ({time.perf_counter() - started:.0f} s "
          "to load)", file=sys.stderr, flush=True)
    if args.diagnose:
        seed, _, trainings = args.diagnose.partition("@")
        print(diagnose(table, int(seed), int(trainings or 100)))
        return
    seeds = (list(range(args.first_seed, args.first_seed + args.seeds)) if args.seed_list is None
             else [int(v) for v in args.seed_list.split(",")])
    results = []
    for entry in args.strategies.split(","):
        name, _, cap = entry.partition("@")
        cap = int(cap) if cap else args.cap
        tick = time.perf_counter()
        if args.jobs > 1:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
                curves = list(pool.map(_run_seed, [
                    (args.dataset, name, seed, cap) for seed in seeds]))
        else:
            curves = []
            for seed in seeds:
                curves.append(run_optuna(name, table, seed, cap))
                # One line per run as it ends: a long run's partial results are not lost.
                print(f"{name} seed {seed}: to 95% "
                      f"{replay.trainings_to(curves[-1], 0.95 * table.true_hv)}, to 99% "
                      f"{replay.trainings_to(curves[-1], 0.99 * table.true_hv)}; share of the "
                      f"true hypervolume after {_shares(curves[-1], table.true_hv)}",
                      file=sys.stderr, flush=True)
        result = replay.summarise(name, curves, table, cap)
        result["seconds"] = round(time.perf_counter() - tick, 1)
        results.append(result)
        print(f"{name}: to 95% {result['to_95']}, to 99% {result['to_99']}, "
              f"{result['seconds']} s", file=sys.stderr, flush=True)
    print(replay.markdown(results, table))


if __name__ == "__main__":
    main()
