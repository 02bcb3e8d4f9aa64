"""FLOPs counter: poolnas' analytic count against TensorFlow's profiler, on a whole space.

For every architecture of the PoolBench-digits space (or a sub-space), builds the model once and
times :func:`poolnas.evaluators.count_cost` and :func:`poolnas.evaluators.profiler_flops`
(TensorFlow's ``float_operation`` profiler on the frozen inference graph at batch 1) on it,
one after the other, and checks that the two totals are equal.

    python benchmarks/flops_check.py                       # the full space (729 architectures)
    python benchmarks/flops_check.py --subspace last-fixed # 81 architectures
    python benchmarks/flops_check.py --quick               # the quick space (16)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import poolbench  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick space (16 archs)")
    parser.add_argument("--subspace", default="full", choices=poolbench.SUBSPACES)
    parser.add_argument("--limit", type=int, default=None, help="at most this many archs")
    parser.add_argument("--out", type=Path, default=None, help="also write <out>.md/.json")
    args = parser.parse_args(argv)

    import keras

    from poolnas.evaluators import count_cost, load_dataset, profiler_flops
    from poolnas.spaces import build_model

    data = load_dataset("digits", seed=poolbench.DATA_SEED)
    space = poolbench.bench_subspace(args.subspace, quick=args.quick)
    archs = list(space)[: args.limit]
    analytic_s, profiler_s, mismatches = [], [], []
    for arch in archs:
        keras.backend.clear_session()
        model = build_model(arch, data.input_shape, data.num_classes,
                            input_scale=data.input_scale, input_offset=data.input_offset)
        tick = time.perf_counter()
        ours = count_cost(model).flops
        analytic_s.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        theirs = profiler_flops(model)
        profiler_s.append(time.perf_counter() - tick)
        if ours != theirs:
            mismatches.append((arch.key, ours, theirs))
    a, p = statistics.median(analytic_s), statistics.median(profiler_s)
    text = (f"{len(archs)} architectures ({args.subspace if not args.quick else 'quick'} space): "
            f"{len(archs) - len(mismatches)} equal, {len(mismatches)} different. "
            f"Median time per model: analytic {a * 1e3:.2f} ms, profiler {p * 1e3:.0f} ms: "
            f"the analytic count is {p / a:.0f}x faster "
            f"(totals {sum(analytic_s):.2f} s vs {sum(profiler_s):.1f} s).")
    print(text)
    for key, ours, theirs in mismatches:
        print(f"  {key}: analytic {ours} profiler {theirs}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(
            {"archs": len(archs), "mismatches": mismatches, "analytic_s": analytic_s,
             "profiler_s": profiler_s}))
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
