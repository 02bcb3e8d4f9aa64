"""Proposal time of the default sampler on a 50,000-architecture space (issue 14: <= 1 s).

One whole proposal of :class:`poolnas.search.ParetoSurrogateSampler` is timed, as a search
makes it: ``sample_relative`` on an in-memory Optuna study holding ``n`` trained
architectures (one accuracy each, drawn with additive + pairwise structure and noise), i.e.
reading the trials, the evidence grid and the fit, the posterior of every candidate, EHVI, and
the re-evaluation weighing (default on). The candidates' encoding and FLOPs are computed once
per sampler (its first proposal) and timed separately. Medians of ``--repeats`` proposals.

    python benchmarks/proposal_time.py                 # 50, 100, 200 trained; the docs' table
    python benchmarks/proposal_time.py --trained 200 --no-reevaluate
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from dataclasses import dataclass

import numpy as np

SIZES = {"a": 10, "b": 10, "c": 10, "d": 5, "e": 5, "f": 2}  # 50,000 architectures


@dataclass(frozen=True)
class Arch:
    key: str


class GridSpace:
    """A plain categorical space with the interface make_sampler asks for."""

    def __init__(self, sizes=SIZES) -> None:
        self._params = {n: tuple(f"v{i}" for i in range(k)) for n, k in sizes.items()}
        self.size = int(np.prod(list(sizes.values())))

    def parameters(self):
        return dict(self._params)

    def architecture(self, params):
        return Arch("-".join(str(params[n]) for n in self._params))

    def params_of(self, arch):
        return dict(zip(self._params, arch.key.split("-")))

    def __iter__(self):
        for combo in itertools.product(*self._params.values()):
            yield Arch("-".join(combo))


def build(n: int, reevaluate: bool, seed: int = 0):
    import optuna
    from optuna.distributions import CategoricalDistribution

    from poolnas.search import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = GridSpace()
    rng = np.random.default_rng(seed)
    names = list(space.parameters())
    main = {(p, v): rng.normal(0, 0.01) for p, vs in space.parameters().items() for v in vs}
    pair = {}

    def accuracy(params):
        acc = 0.9 + sum(main[p, params[p]] for p in names)
        for p, q in itertools.combinations(names[:3], 2):
            acc += pair.setdefault((p, params[p], q, params[q]), rng.normal(0, 0.005))
        return acc + rng.normal(0, 0.01)

    def flops_of(params):
        return 1e6 * (1 + sum(int(params[p][1:]) for p in names))

    sampler = make_sampler("surrogate", space, seed, flops_of=flops_of, reevaluate=reevaluate)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    dists = {p: CategoricalDistribution(list(v)) for p, v in space.parameters().items()}
    archs = list(itertools.islice(space, 0, space.size, max(space.size // (4 * n), 1)))
    picks = rng.choice(len(archs), n, replace=False)
    for i in picks:
        params = space.params_of(archs[i])
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, values=[accuracy(params), flops_of(params)],
            user_attrs={"accuracies": [accuracy(params)]}))
    return sampler, study


def measure(n: int, reevaluate: bool, repeats: int) -> tuple[float, float, float]:
    sampler, study = build(n, reevaluate)
    start = time.perf_counter()
    sampler._prepare()
    prepare = time.perf_counter() - start
    times, cpu = [], []
    for _ in range(repeats):
        trial = study.ask()
        start, start_cpu = time.perf_counter(), time.process_time()
        sampler.sample_relative(study, trial, sampler.infer_relative_search_space(study, trial))
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        study.tell(trial, state=__import__("optuna").trial.TrialState.FAIL)
    return prepare, statistics.median(times), max(times), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trained", type=int, nargs="*", default=[50, 100, 200])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-reevaluate", action="store_true")
    args = parser.parse_args()
    for n in args.trained:
        prepare, median, worst, cpu = measure(n, not args.no_reevaluate, args.repeats)
        print(f"50,000 candidates, {n} trained, reevaluate={not args.no_reevaluate}: "
              f"proposal median {median:.2f} s (max {worst:.2f} s over {args.repeats}; "
              f"CPU time {cpu:.2f} s, the wall time of a quiet core); "
              f"first-proposal set-up {prepare:.2f} s", flush=True)


if __name__ == "__main__":
    main()
