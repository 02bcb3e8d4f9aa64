"""Closed-form cost: ``architecture_cost`` (no model) against ``count_cost(build_model(...))``.

Checks FLOPs, MACs and parameters of every PoolBench-digits architecture (729, 8x8x1 digits, 10
classes, input scale 1/16) and of randomly sampled catalogue architectures on several input
shapes (odd ones too) against the count read off the built Keras model, and a sample against
TensorFlow's profiler; times both ways per architecture; and times :func:`cost_table` on the
catalogue space and on a 49,152-architecture space, cold (empty memo) and against ``list(space)``.

    python benchmarks/closed_form_check.py                     # everything (~5 minutes)
    python benchmarks/closed_form_check.py --quick             # 40 + 20 archs, 2 profiled
    python benchmarks/closed_form_check.py --out docs/closed_form_check   # also write .json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import poolbench  # noqa: E402

#: Input shapes of the catalogue sample: digits, odd sizes, CIFAR, MNIST.
SHAPES = ((8, 8, 1), (9, 9, 3), (7, 7, 1), (11, 8, 2), (32, 32, 3), (28, 28, 1))


def large_space():
    """49,152 architectures: 3 stems x 2 stem widths x (4 ops x 4 skips)^3 x 2 last depths."""
    from poolnas.spaces import SearchSpace

    return SearchSpace.from_dict({
        "points": 3, "stems": ["conv3", "conv3s2", "conv7s2"],
        "ops": ["max", "avg", "conv", "blur_max"],
        "skips": ["none", "projection", "pool_projection", "pool_pad"],
        "widths": [[16, 24], 32, 64, 128], "depths": [1, 1, 1, [1, 2]],
    })


def _clear_memo() -> None:
    from poolnas.evaluators import _closed_form

    for memo in (_closed_form._stem_cost, _closed_form._point_cost, _closed_form._head_cost):
        memo.cache_clear()


def _compare(cases, *, profile: int, rng: random.Random) -> dict:
    """``cases``: (arch, input_shape, classes, scale). Returns counts, mismatches and timings."""
    import keras

    from poolnas.evaluators import architecture_cost, count_cost, profiler_flops
    from poolnas.spaces import build_model

    profiled = set(rng.sample(range(len(cases)), min(profile, len(cases))))
    cold_s = []
    for arch, shape, classes, scale in cases:  # each architecture counted from an empty memo
        _clear_memo()
        tick = time.perf_counter()
        architecture_cost(arch, shape, classes, input_scale=scale)
        cold_s.append(time.perf_counter() - tick)
    closed_s, built_s, mismatches, profiler_mismatches = [], [], [], []
    _clear_memo()  # from here on the memo fills as in a search: parts are shared
    for index, (arch, shape, classes, scale) in enumerate(cases):
        tick = time.perf_counter()
        ours = architecture_cost(arch, shape, classes, input_scale=scale)
        closed_s.append(time.perf_counter() - tick)
        keras.backend.clear_session()
        tick = time.perf_counter()
        model = build_model(arch, shape, classes, input_scale=scale)
        theirs = count_cost(model)
        built_s.append(time.perf_counter() - tick)
        if ours != theirs:
            mismatches.append([arch.key, list(shape), vars(ours), vars(theirs)])
        if index in profiled and profiler_flops(model) != ours.flops:
            profiler_mismatches.append([arch.key, list(shape), profiler_flops(model), ours.flops])
    return {"archs": len(cases), "equal": len(cases) - len(mismatches),
            "profiled": len(profiled),
            "profiler_equal": len(profiled) - len(profiler_mismatches),
            "mismatches": mismatches + profiler_mismatches,
            "closed_form_cold_median_ms": statistics.median(cold_s) * 1e3,
            "closed_form_median_ms": statistics.median(closed_s) * 1e3,
            "closed_form_total_s": sum(closed_s),
            "built_model_median_ms": statistics.median(built_s) * 1e3,
            "built_model_total_s": sum(built_s)}


def _time_table(space, shape, classes) -> dict:
    from poolnas.evaluators import cost_table

    runs = []
    for _ in range(3):
        _clear_memo()
        tick = time.perf_counter()
        table = cost_table(space, shape, classes)
        runs.append(time.perf_counter() - tick)
    tick = time.perf_counter()
    keys = [arch.key for arch in space]
    iterate_s = time.perf_counter() - tick
    assert keys == list(table)
    return {"size": space.size, "rows": len(table), "cost_table_cold_s": min(runs),
            "cost_table_runs_s": runs, "list_space_s": iterate_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 PoolBench + 20 catalogue archs")
    parser.add_argument("--catalogue", type=int, default=300, help="sampled catalogue archs")
    parser.add_argument("--profile", type=int, default=10, help="profiled archs per set")
    parser.add_argument("--out", type=Path, default=None, help="also write <out>.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from poolnas.evaluators import load_dataset
    from poolnas.spaces import catalogue_space

    rng = random.Random(args.seed)
    data = load_dataset("digits", seed=poolbench.DATA_SEED)
    bench = list(poolbench.bench_space())
    if args.quick:
        bench = rng.sample(bench, 40)
    bench_cases = [(arch, data.input_shape, data.num_classes, data.input_scale)
                   for arch in bench]
    catalogue_cases = []
    for arch in rng.sample(list(catalogue_space()), 20 if args.quick else args.catalogue):
        shape = rng.choice(SHAPES)
        if 2**arch.halvings > min(shape[:2]):
            shape = (9, 9, 3)
        catalogue_cases.append((arch, shape, rng.choice([2, 10]), rng.choice([1.0, 1 / 255])))
    profile = 2 if args.quick else args.profile

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}",
        "poolbench": _compare(bench_cases, profile=profile, rng=rng),
        "catalogue": _compare(catalogue_cases, profile=profile, rng=rng),
        "table_catalogue": _time_table(catalogue_space(), (32, 32, 3), 10),
        "table_large": _time_table(large_space(), (32, 32, 3), 10),
    }
    for name in ("poolbench", "catalogue"):
        r = result[name]
        print(f"{name}: {r['equal']}/{r['archs']} equal to count_cost(build_model) "
              f"(flops, macs, params); profiler {r['profiler_equal']}/{r['profiled']} equal. "
              f"Median per architecture: closed form {r['closed_form_median_ms']:.3f} ms "
              f"({r['closed_form_cold_median_ms']:.2f} ms from an empty memo), "
              f"build + count {r['built_model_median_ms']:.0f} ms "
              f"({r['built_model_median_ms'] / r['closed_form_cold_median_ms']:.0f}x the cold "
              "closed form); totals "
              f"{r['closed_form_total_s']:.2f} s vs {r['built_model_total_s']:.0f} s.")
        for mismatch in r["mismatches"]:
            print(f"  MISMATCH {mismatch}")
    for name in ("table_catalogue", "table_large"):
        r = result[name]
        print(f"{name}: cost_table of {r['rows']:,} architectures in "
              f"{r['cost_table_cold_s']:.3f} s (empty memo; best of 3); list(space) alone takes "
              f"{r['list_space_s']:.2f} s.")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    bad = any(result[n]["mismatches"] for n in ("poolbench", "catalogue"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
