"""PoolBench-curves: per-epoch learning curves of a sub-space of PoolBench-digits.

Multi-fidelity search (``poolnas search --min-epochs m --reduction-factor η``) stops most
architectures after a few epochs; measuring it by replay needs the accuracy an architecture has
after *every* epoch, not only at the end. This table records it: every architecture of a fixed
sub-space is trained for :data:`EPOCHS` epochs with each of the seeds 0, 1, 2, and after each
epoch its validation and test accuracy are scored. One JSON line per architecture::

    {"key": ..., "flops": ..., "macs": ..., "params": ...,
     "val_acc": [[epoch 1 … 16] per seed], "test_acc": [[epoch 1 … 16] per seed],
     "loss": [[mean training loss per epoch] per seed], "train_seconds": [one per seed],
     "eval_seconds": ..., "epochs": 16, "seeds": [0, 1, 2]}

The space and budget are PoolBench-digits' (``benchmarks/poolbench.py``: :func:`bench_space`,
:func:`bench_budget` but with 16 epochs; data ``load_dataset("digits", seed=0)``), trained the
way poolnas trains a trial now (fused optimizer update). The sub-space is the table's first
nested sub-space, ``last-fixed`` (point 3 fixed to ``max+none``; 3 ops x 3 skips at points 1
and 2 = 81 architectures), then ``last-plain`` (243) and ``full`` (729) if the build goes on.

The 16 epochs of a seed are one ``model.fit`` on one pipeline, so epoch ``k``'s batch order is
the one an uninterrupted ``--epochs 16`` trial with that seed sees; a multi-fidelity search that
continues a promoted trial reproduces the same order (``poolnas.evaluators.continue_training``).
Scoring after each epoch calls the model eagerly on validation + test (no test step traced).

Resumable like PoolBench-digits: rows are appended as they finish, keys already present are
skipped; ``--shard I/N`` splits the work::

    nice -n 5 python benchmarks/poolbench_curves.py --subspace last-fixed
    python benchmarks/poolbench_curves.py --quick --table /tmp/curves.jsonl   # 16 archs, 3 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from poolbench import (  # noqa: E402  (a sibling script, not a package)
    DATA_SEED,
    SEEDS,
    SUBSPACES,
    _fresh_model,
    bench_budget,
    bench_subspace,
    load_table,
    set_threads,
)

HERE = Path(__file__).resolve().parent
TABLE = HERE / "data" / "poolbench_curves.jsonl"
#: Epochs of every curve (the top fidelity of the replays).
EPOCHS = 16


def curves_budget(*, quick: bool = False):
    """PoolBench-digits' budget with :data:`EPOCHS` epochs (``quick``: 3)."""
    import dataclasses

    return dataclasses.replace(bench_budget(quick=quick), epochs=3 if quick else EPOCHS)


def train_curves(arch, data, budget, *, seeds=SEEDS) -> dict[str, Any]:
    """Train ``arch`` once per seed for ``budget.epochs`` epochs, scoring after every epoch.

    As in ``poolbench.train_row``, the first seed's model is compiled and traced once and every
    further seed reloads it with its own initial weights and a fresh optimizer state.
    """
    import keras
    import numpy as np

    from poolnas.evaluators import count_cost, fuse_updates

    keras.backend.clear_session()
    model = _fresh_model(arch, data, seeds[0])
    cost = count_cost(model)
    model.compile(optimizer=fuse_updates(budget.make_optimizer()),
                  loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    optimizer_start = [v.numpy() for v in model.optimizer.variables]
    images = np.concatenate([data.x_val, data.x_test]).astype("float32")
    n_val = len(data.y_val)
    scored: dict[str, list[float]] = {}
    eval_seconds = [0.0]

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            tick = time.perf_counter()
            predicted = np.asarray(self.model(images, training=False)).argmax(axis=1)
            scored["val"].append(round(float((predicted[:n_val] == data.y_val).mean()), 6))
            scored["test"].append(round(float((predicted[n_val:] == data.y_test).mean()), 6))
            eval_seconds[0] += time.perf_counter() - tick

    val_acc, test_acc, losses, train_seconds = [], [], [], []
    for seed in seeds:
        if seed != seeds[0]:
            model.set_weights(_fresh_model(arch, data, seed).get_weights())
            for variable, value in zip(model.optimizer.variables, optimizer_start):
                variable.assign(value)
        scored = {"val": [], "test": []}
        keras.utils.set_random_seed(seed)
        tick = time.perf_counter()
        history = model.fit(data.train_dataset(budget.batch_size, seed=seed),
                            epochs=budget.epochs, verbose=0, shuffle=False, callbacks=[Score()])
        train_seconds.append(round(time.perf_counter() - tick, 3))
        val_acc.append(scored["val"])
        test_acc.append(scored["test"])
        losses.append([round(float(v), 5) for v in history.history["loss"]])
    return {
        "key": arch.key, "flops": cost.flops, "macs": cost.macs, "params": cost.params,
        "val_acc": val_acc, "test_acc": test_acc, "loss": losses,
        "train_seconds": train_seconds, "eval_seconds": round(eval_seconds[0], 3),
        "epochs": budget.epochs, "seeds": list(seeds),
    }


def build_curves(path: Path, *, quick: bool, subspace: str = "full",
                 shard: tuple[int, int] = (0, 1), limit: int | None = None,
                 reverse: bool = False, log=print) -> int:
    """Append the missing rows of ``subspace`` (nested order) to ``path``; rows written."""
    from poolnas.evaluators import load_dataset

    space = bench_subspace(subspace, quick=quick)
    budget = curves_budget(quick=quick)
    data = load_dataset("digits", seed=DATA_SEED)
    done = set(load_table(path))

    def stage(arch) -> int:
        for number, name in enumerate(SUBSPACES):
            if bench_subspace(name, quick=quick).contains(arch):
                return number
        return len(SUBSPACES)

    ordered = sorted(space, key=stage)
    index, count = shard
    todo = [a for i, a in enumerate(ordered) if i % count == index and a.key not in done]
    if reverse:
        todo.reverse()
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    started = time.perf_counter()
    for arch in todo[:limit]:
        if reverse and arch.key in load_table(path):
            break  # met a build running the other way
        row = train_curves(arch, data, budget)
        with path.open("a", encoding="utf-8") as table:
            table.write(json.dumps(row, separators=(",", ":")) + "\n")
        written += 1
        log(f"[{written}/{len(todo)}] {row['key']} val@E {[c[-1] for c in row['val_acc']]} "
            f"train {row['train_seconds']} s (elapsed {time.perf_counter() - started:.0f} s)",
            flush=True)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny space, 3 epochs")
    parser.add_argument("--table", type=Path, default=None,
                        help=f"table file (default {TABLE.relative_to(HERE.parent)})")
    parser.add_argument("--subspace", default="last-fixed", choices=SUBSPACES,
                        help="build this nested sub-space (default last-fixed: 81 archs)")
    parser.add_argument("--shard", default="0/1", help="I/N: build every N-th architecture")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads")
    parser.add_argument("--limit", type=int, default=None, help="at most this many rows")
    parser.add_argument("--reverse", action="store_true",
                        help="last architecture first, stopping where the table already has "
                             "one (a second process beside a running build)")
    args = parser.parse_args(argv)
    if args.quick and args.table is None:
        parser.error("--quick needs --table (the quick space must not go into the real table)")
    index, count = (int(v) for v in args.shard.split("/"))
    set_threads(args.threads)
    path = args.table or TABLE
    written = build_curves(path, quick=args.quick, subspace=args.subspace,
                           shard=(index, count), limit=args.limit, reverse=args.reverse)
    print(f"{written} rows written; the table has {len(load_table(path))} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
