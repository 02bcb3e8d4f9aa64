"""Fused training steps: K candidates in one traced step vs one at a time, and the FLOP rate.

For each K of ``--ks``, K architectures drawn from the default space (fixed seed) are trained
for ``--epochs`` epochs by :func:`poolnas.evaluators.evaluate_architectures` (one fused step)
and, for K = 1, one by one by :func:`poolnas.evaluators.evaluate_architecture` (poolnas'
one-at-a-time path; since 2026-11-28 it trains in the same loop with one model, so the two
K = 1 rows differ only by this host's noise). Reported per candidate: the trace seconds (first
epoch minus a steady one) and the training-step seconds, and the training FLOP rate (3 x forward
FLOPs x samples x epochs, summed over the K candidates, over the training-step seconds) against
the float32 matmul peak measured in the same process. Device-agnostic: it runs wherever
TensorFlow places the ops (the GPU when there is one).

    python benchmarks/gpu_fused_steps.py                           # digits, K = 1, 2, 4, 8
    python benchmarks/gpu_fused_steps.py --dataset shapes --ks 1,2,4 --epochs 2
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--mixed-precision", action="store_true")
    args = parser.parse_args(argv)
    import keras
    import tensorflow as tf

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    import throughput  # noqa: E402 - the sibling script, for its matmul peak

    from poolnas.evaluators import (
        Budget,
        evaluate_architecture,
        evaluate_architectures,
        load_dataset,
    )
    from poolnas.spaces import SearchSpace

    data = load_dataset(args.dataset, seed=0)
    budget = Budget(epochs=args.epochs)
    samples = (len(data.y_train) // budget.batch_size) * budget.batch_size * budget.epochs
    archs = list(SearchSpace())
    random.Random(0).shuffle(archs)
    device = tf.config.list_physical_devices("GPU") or ["CPU"]
    peak = throughput.matmul_peak()
    print(f"{args.dataset} {tuple(data.input_shape)}, {budget.epochs} epochs, device {device}, "
          f"policy {keras.mixed_precision.global_policy().name}; float32 matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s\n")
    print("| path | K | wall s | per candidate: trace s | train-step s | total s | "
          "FLOP rate | of peak |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    evaluate_architectures(archs[:1], data, Budget(epochs=1), seeds=[0])  # warm-up
    for k in (int(v) for v in args.ks.split(",")):
        chosen = archs[:k]
        paths = [("fused", lambda c=chosen: evaluate_architectures(
            c, data, budget, seeds=list(range(len(c)))))]
        if k == 1:
            paths.insert(0, ("alone", lambda c=chosen: [evaluate_architecture(
                c[0], data, budget, seed=0)]))
        for name, run in paths:
            tick = time.perf_counter()
            outcomes = run()
            wall = time.perf_counter() - tick
            trace = sum(o.seconds["trace"] for o in outcomes)
            train = sum(o.seconds["train"] for o in outcomes)
            flops = sum(3 * o.flops * samples for o in outcomes)
            print(f"| {name} | {k} | {wall:.2f} | {trace / k:.3f} | {train / k:.3f} | "
                  f"{wall / k:.3f} | {flops / train / 1e9:.2f} GFLOP/s | "
                  f"{flops / train / peak:.1%} |", flush=True)


if __name__ == "__main__":
    main()
