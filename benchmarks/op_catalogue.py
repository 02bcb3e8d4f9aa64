"""The cost ordering of the downsampling catalogue: one backbone, each op at every point.

Trains the default space's backbone (stem 16 channels, stages of 32/64/128, one block each, no
shortcuts) with the same op at all three points on digits, several seeds, and prints a markdown
table of FLOPs, MACs, params and validation accuracy (mean ± std).

    python benchmarks/op_catalogue.py            # 5 epochs, 3 seeds (a few minutes on 2 cores)
    python benchmarks/op_catalogue.py --quick    # 1 epoch, 1 seed
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch, 1 seed")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--skip", default="none", help="skip type at every point (default none)")
    args = parser.parse_args()
    epochs, seeds = (1, 1) if args.quick else (args.epochs, args.seeds)

    from poolnas.evaluators import Budget, evaluate_architecture, load_dataset
    from poolnas.spaces import OPS, Architecture

    data = load_dataset("digits", seed=0)
    budget = Budget(epochs=epochs, repeats=seeds)
    rows = []
    started = time.perf_counter()
    for op in OPS:
        segment = f"{op}+{args.skip}"
        arch = Architecture.from_key(
            f"conv3:16x1/{segment}:32x1/{segment}:64x1/{segment}:128x1"
        )
        evaluation = evaluate_architecture(arch, data, budget, seed=0)
        rows.append((op, evaluation))
    base = dict(rows)["max"].flops
    print(f"digits, {epochs} epochs, {seeds} seed(s), skip '{args.skip}' at every point; "
          f"{platform.machine()} {os.cpu_count()} cores; {time.perf_counter() - started:.0f} s\n")
    print("| op at every point | FLOPs | × max | MACs | params | val. accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    for op, e in sorted(rows, key=lambda r: r[1].flops):
        print(f"| `{op}` | {e.flops / 1e6:.3f} M | {e.flops / base:.2f} | {e.macs / 1e6:.3f} M | "
              f"{e.params:,} | {e.accuracy:.4f} ± {e.accuracy_std:.4f} |")


if __name__ == "__main__":
    main()
