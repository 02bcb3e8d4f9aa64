"""PoolBench-digits: a tabular benchmark of a poolnas space, in the spirit of NAS-Bench-201.

Every architecture of a fixed space is trained on scikit-learn's digits with several seeds at a
fixed budget, and one row per architecture is appended to a JSON-lines table::

    {"key": ..., "flops": ..., "macs": ..., "params": ...,
     "val_acc": [one per seed], "test_acc": [one per seed],
     "final_loss": [...], "train_seconds": [one per seed], "eval_seconds": ..., "seeds": [0, 1, 2]}

With the table, a search strategy is compared in seconds (``benchmarks/replay.py``) instead of
hours of training, and the true Pareto front and its hypervolume are known.

The space (:func:`bench_space`): stem ``conv3`` with 8 channels, 3 downsampling points with the
ops ``max``, ``avg``, ``conv`` and the skips ``none``, ``projection``, ``pool_pad`` (merge
``add``), stage widths 8/16/32/64, one block per stage: 9**3 = 729 architectures, built in the
order of the nested :data:`SUBSPACES`. The budget (:func:`bench_budget`): 4 epochs, batch 64,
Adam at 3e-3, no augmentation; data ``load_dataset("digits", seed=0)``.

The seeds of one architecture share one traced training step: the first seed's model is
compiled and trained; for every further seed the same model is reloaded with the initial weights
that seed gives (``keras.utils.set_random_seed(seed)`` before ``build_model``) and with the
optimizer's initial state, and trained again on the batches that seed orders. Each seed is then
exactly the training ``evaluate_architecture(..., seed=0)`` with ``repeats=3`` gives it, at about
half the cost (no retracing).

The build is resumable: rows are appended as they finish and keys already in the table are
skipped, so it can be stopped and restarted, and split over processes with ``--shard I/N``::

    python benchmarks/poolbench.py --shard 0/2 &  python benchmarks/poolbench.py --shard 1/2
    python benchmarks/poolbench.py --quick --table /tmp/tiny.jsonl   # tiny space, ~1 minute
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

HERE = Path(__file__).resolve().parent
TABLE = HERE / "data" / "poolbench_digits.jsonl"
SEEDS = (0, 1, 2)
DATA_SEED = 0


def bench_space(*, quick: bool = False):
    """The documented space of the table (``quick``: 2 points x 2 ops x 2 skips, 16 archs)."""
    from poolnas.spaces import SearchSpace

    if quick:
        return SearchSpace(points=2, ops=("max", "conv"), skips=("none", "pool_pad"),
                           widths=(8, 16, 32))
    return SearchSpace(points=3, ops=("max", "avg", "conv"),
                       skips=("none", "projection", "pool_pad"), widths=(8, 16, 32, 64))


#: Nested sub-spaces of the full space, built in this order, so that a build cut short still
#: leaves a complete table: ``last-fixed`` fixes point 3 to ``max+none`` (81 architectures:
#: 3 ops x 3 skips at points 1 and 2), ``last-plain`` lets point 3 choose its op without a
#: shortcut (243), ``full`` is everything (729).
SUBSPACES = ("last-fixed", "last-plain", "full")


def bench_subspace(name: str, *, quick: bool = False):
    """One of :data:`SUBSPACES` of the (quick or full) benchmark space."""
    space = bench_space(quick=quick)
    if name == "full":
        return space
    if name not in SUBSPACES:
        raise ValueError(f"unknown sub-space {name!r}; choose one of {', '.join(SUBSPACES)}")
    ops = [list(o) for o in space.ops]
    skips = [list(k) for k in space.skips]
    skips[-1] = ["none"]
    if name == "last-fixed":
        ops[-1] = [ops[-1][0]]
    return space.narrowed(ops=ops, skips=skips)


def _stage(arch, *, quick: bool) -> int:
    for stage, name in enumerate(SUBSPACES):
        if bench_subspace(name, quick=quick).contains(arch):
            return stage
    return len(SUBSPACES)


def bench_budget(*, quick: bool = False):
    """The fixed training budget of the table (``quick``: 1 epoch)."""
    from poolnas.evaluators import Budget

    return Budget(epochs=1 if quick else 4, batch_size=64, learning_rate=3e-3, optimizer="adam")


def load_table(path: str | Path = TABLE) -> dict[str, dict[str, Any]]:
    """The rows of a table file, by architecture key (a missing file is an empty table)."""
    rows: dict[str, dict[str, Any]] = {}
    path = Path(path)
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a killed build; it is rebuilt
            rows[row["key"]] = row
    return rows


def set_threads(intra: int, inter: int = 1) -> None:
    """Pin TensorFlow's thread pools (before any op runs)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)


def _fresh_model(arch, data, seed: int):
    import keras

    from poolnas.spaces import build_model

    keras.utils.set_random_seed(seed)
    return build_model(arch, data.input_shape, data.num_classes,
                       input_scale=data.input_scale, input_offset=data.input_offset)


def train_row(arch, data, budget, *, seeds=SEEDS, fused: bool = False) -> dict[str, Any]:
    """Train ``arch`` once per seed and return its table row.

    The first seed's model is compiled and traced once; every further seed reloads that
    model's variables with the initial weights its own seed gives and the optimizer's initial
    state, then trains again with the traced step (no retracing). Seed ``s`` initialises the
    weights and orders the batches, as ``evaluate_architecture(..., seed=seeds[0])`` with
    ``repeats=len(seeds)`` does. The published table was trained with Keras' own optimizer
    update (``fused=False``, before the evaluator fused it); ``fused=True`` applies
    ``poolnas.evaluators.fuse_updates`` as the evaluator does now, which agrees with Keras'
    update up to float rounding (docs/benchmarks.md, "Trial throughput").
    """
    import keras
    import numpy as np

    from poolnas.evaluators import count_cost, fuse_updates

    keras.backend.clear_session()
    model = _fresh_model(arch, data, seeds[0])
    cost = count_cost(model)
    optimizer = budget.make_optimizer()
    model.compile(optimizer=fuse_updates(optimizer) if fused else optimizer,
                  loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    optimizer_start = [v.numpy() for v in model.optimizer.variables]
    images = np.concatenate([data.x_val, data.x_test]).astype("float32")
    n_val = len(data.y_val)
    val_acc, test_acc, losses, train_seconds, eval_seconds = [], [], [], [], 0.0
    for seed in seeds:
        if seed != seeds[0]:
            model.set_weights(_fresh_model(arch, data, seed).get_weights())
            for variable, value in zip(model.optimizer.variables, optimizer_start):
                variable.assign(value)
        keras.utils.set_random_seed(seed)
        tick = time.perf_counter()
        history = model.fit(data.train_dataset(budget.batch_size, seed=seed),
                            epochs=budget.epochs, verbose=0, shuffle=False)
        train_seconds.append(round(time.perf_counter() - tick, 3))
        tick = time.perf_counter()
        predicted = np.asarray(model(images, training=False)).argmax(axis=1)
        val_acc.append(round(float((predicted[:n_val] == data.y_val).mean()), 6))
        test_acc.append(round(float((predicted[n_val:] == data.y_test).mean()), 6))
        losses.append(round(float(history.history["loss"][-1]), 5))
        eval_seconds += time.perf_counter() - tick
    return {
        "key": arch.key, "flops": cost.flops, "macs": cost.macs, "params": cost.params,
        "val_acc": val_acc, "test_acc": test_acc, "final_loss": losses,
        "train_seconds": train_seconds, "eval_seconds": round(eval_seconds, 3),
        "seeds": list(seeds),
    }


def build_table(path: Path, *, quick: bool, shard: tuple[int, int] = (0, 1),
                limit: int | None = None, seeds: tuple[int, ...] = SEEDS, log=print) -> int:
    """Append the missing rows of this shard to ``path``; the number of rows written."""
    from poolnas.evaluators import load_dataset

    space, budget = bench_space(quick=quick), bench_budget(quick=quick)
    data = load_dataset("digits", seed=DATA_SEED)
    done = set(load_table(path))
    index, count = shard
    # Nested sub-spaces first (see SUBSPACES): a build cut short still leaves a complete table.
    ordered = sorted(space, key=lambda a: _stage(a, quick=quick))
    todo = [a for i, a in enumerate(ordered) if i % count == index and a.key not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    started = time.perf_counter()
    for arch in todo[:limit]:
        row = train_row(arch, data, budget, seeds=seeds)
        with path.open("a", encoding="utf-8") as table:
            table.write(json.dumps(row, separators=(",", ":")) + "\n")
        written += 1
        log(f"[{written}/{len(todo)}] {row['key']} val {row['val_acc']} "
            f"train {row['train_seconds']} s (elapsed {time.perf_counter() - started:.0f} s)")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny space (16 architectures), 1 epoch: about a minute")
    parser.add_argument("--table", type=Path, default=None,
                        help=f"table file (default {TABLE.relative_to(HERE.parent)}; "
                             "--quick: a temporary file must be given)")
    parser.add_argument("--shard", default="0/1", help="I/N: build every N-th architecture")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads")
    parser.add_argument("--limit", type=int, default=None, help="at most this many rows")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)),
                        help="seeds of each row (more seeds of the same table go into another "
                             "file: --seeds 3,4,5 --table benchmarks/data/poolbench_digits_"
                             "seeds345.jsonl; answer_quality.load_rows joins them)")
    args = parser.parse_args(argv)
    seeds = tuple(int(v) for v in args.seeds.split(","))
    if args.quick and args.table is None:
        parser.error("--quick needs --table (the quick space must not go into the real table)")
    index, count = (int(v) for v in args.shard.split("/"))
    path = args.table or TABLE
    if seeds != SEEDS and path == TABLE:
        parser.error("other seeds go into another --table file, not the published table")
    set_threads(args.threads)
    written = build_table(path, quick=args.quick, shard=(index, count), limit=args.limit,
                          seeds=seeds)
    print(f"{written} rows written; the table has {len(load_table(path))} rows", file=sys.stderr)


if __name__ == "__main__":
    main()
