"""Measured latency vs the per-kernel latency model vs FLOPs, on this machine (issue 18).

For each runtime (Keras ``tf.function``, TFLite through LiteRT) with threads pinned:

1. **Accuracy of the latency model.** The kernel table of the default and the catalogue space is
   measured afresh (every distinct kernel once, inside a graph) and calibrated on 20 of the
   space's architectures, then ``--archs`` *other* random architectures of each space are built
   and measured whole. Reported: the share whose predicted latency is within ±10 % of the
   measured one, the median absolute error, and the Spearman rank correlation of predicted vs
   measured beside that of FLOPs vs measured; the same for the uncalibrated kernel sum.
2. **Per op, at every point of the default backbone** (stem 16, stages 32/64/128, one block, no
   shortcuts; ``max`` at the other points): FLOPs ratio and measured latency ratio of each op of
   the catalogue against ``max``, and the pairs of ops whose FLOPs order and latency order
   disagree beyond the measurement's noise (their repeat medians do not overlap).
3. **Does the front change?** On the PoolBench-digits table (729 trained architectures, no
   training here): the Pareto front by (accuracy, FLOPs) vs by (accuracy, predicted latency),
   and how much latency the FLOPs front leaves on the table.

Every timing is: ``--warmup`` untimed calls, then the median (and IQR) of ``--runs`` timed calls,
``--repeats`` times; the spread of the repeat medians is reported as stability. Writes
``OUT.json`` and ``OUT.md``.

    python benchmarks/latency_model.py                    # full: 100 archs per space, ~20-40 min
    python benchmarks/latency_model.py --quick            # 6 archs per space, ~2 min
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
TABLE = HERE / "data" / "poolbench_digits.jsonl"
INPUT, CLASSES, SCALE = (8, 8, 1), 10, 1 / 16  # digits: 8x8 pixels of 0..16


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _discordant(names, xs, rows) -> tuple[list[str], int]:
    """Pairs of ops whose FLOPs order and latency order disagree: those whose latencies are
    apart beyond their repeat medians' ranges (no overlap), and how many more disagree only
    within that noise."""
    sure, noise = [], 0
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if xs[i] == xs[j]:
                continue
            cheap, dear = (i, j) if xs[i] < xs[j] else (j, i)
            if rows[cheap]["measured_ms"] <= rows[dear]["measured_ms"]:
                continue
            if min(rows[cheap]["repeat_medians_ms"]) > max(rows[dear]["repeat_medians_ms"]):
                sure.append(f"{names[cheap]} < {names[dear]} in FLOPs, "
                            f"{rows[cheap]['measured_ms'] / rows[dear]['measured_ms']:.2f}× "
                            "in latency")
            else:
                noise += 1
    return sure, noise


def _front(points):
    """Indices of the (max accuracy, min cost) Pareto front of ``points`` = [(acc, cost)]."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0]))
    front, best = [], -1.0
    for i in order:
        if points[i][0] > best:
            front.append(i)
            best = points[i][0]
    return front


def _quality(rows, column):
    """How well ``column`` predicts the measured latency of ``rows``."""
    errors = [r[column] / r["measured_ms"] - 1 for r in rows]
    return {"within_10pct": sum(abs(e) <= 0.10 for e in errors) / len(rows),
            "median_abs_error": statistics.median(abs(e) for e in errors),
            "median_error": statistics.median(errors),
            "spearman": _spearman([r[column] for r in rows], [r["measured_ms"] for r in rows])}


def accuracy_of_model(runtime, spaces, n, seed, timing, tolerance, folder, log):
    """Per space: the kernel table and its calibration measured afresh (into ``folder``), then
    ``n`` random architectures the calibration never saw, measured whole."""
    from poolnas.evaluators import (
        CALIBRATION_ARCHITECTURES,
        LatencyModel,
        architecture_cost,
        measure_stable,
        space_table,
    )
    from poolnas.evaluators._latency import _sample
    from poolnas.spaces import build_model

    results = {}
    path = Path(folder) / f"table-{runtime}.json"
    for name, space in spaces.items():
        started = time.perf_counter()
        table = space_table(space, INPUT, CLASSES, runtime, input_scale=SCALE, path=path,
                            tolerance=tolerance, **timing)
        table_seconds = time.perf_counter() - started
        calibrated = LatencyModel(table, INPUT, CLASSES, input_scale=SCALE)
        bare = dataclasses.replace(table, calibration_key=None)
        uncalibrated = LatencyModel(bare, INPUT, CLASSES, input_scale=SCALE)
        seen = {a.key for a in _sample(space, CALIBRATION_ARCHITECTURES, 0)}
        sample = [a for a in _sample(space, n + len(seen), seed + 1) if a.key not in seen][:n]
        rows = []
        for arch in sample:
            measured = measure_stable(build_model(arch, INPUT, CLASSES, input_scale=SCALE),
                                      runtime, **timing)
            rows.append({"architecture": arch.key, "predicted_ms": calibrated(arch),
                         "uncalibrated_ms": uncalibrated(arch),
                         "measured_ms": measured.median_ms, "iqr_ms": measured.iqr_ms,
                         "spread": measured.spread,
                         "flops": architecture_cost(arch, INPUT, CLASSES,
                                                    input_scale=SCALE).flops})
        measured_ms = [r["measured_ms"] for r in rows]
        results[name] = {
            "kernels": len(table.kernels) - 1, "table_seconds": round(table_seconds, 1),
            "table_max_spread": table.max_spread, "overhead_ms": table.overhead_ms,
            "calibration": table.calibration.as_dict(),
            "architectures": len(rows), **_quality(rows, "predicted_ms"),
            "uncalibrated": _quality(rows, "uncalibrated_ms"),
            "spearman_flops": _spearman([r["flops"] for r in rows], measured_ms),
            "median_measurement_spread": statistics.median(r["spread"] for r in rows),
            "rows": rows,
        }
        log(f"  {runtime} {name}: {results[name]['kernels']} kernels and calibration in "
            f"{table_seconds:.0f}s; {results[name]['within_10pct']:.0%} within ±10% "
            f"(uncalibrated {results[name]['uncalibrated']['within_10pct']:.0%}), Spearman "
            f"{results[name]['spearman']:.2f} (FLOPs {results[name]['spearman_flops']:.2f})")
    return results


def per_op(runtime, timing, log):
    from poolnas.evaluators import architecture_cost, measure_stable
    from poolnas.spaces import OPS, Architecture, build_model

    widths = (32, 64, 128)
    base_segments = ["max+none"] * 3

    def key(segments):
        return "conv3:16x1/" + "/".join(f"{s}:{w}x1" for s, w in zip(segments, widths))

    points = []
    for p in range(3):
        rows = []
        for op in OPS:
            segments = list(base_segments)
            segments[p] = f"{op}+none"
            arch = Architecture.from_key(key(segments))
            t = measure_stable(build_model(arch, INPUT, CLASSES, input_scale=SCALE), runtime,
                               **timing)
            rows.append({"op": op, "flops": architecture_cost(arch, INPUT, CLASSES,
                                                               input_scale=SCALE).flops,
                         "measured_ms": t.median_ms, "iqr_ms": t.iqr_ms, "spread": t.spread,
                         "repeat_medians_ms": list(t.repeat_medians_ms)})
        base = next(r for r in rows if r["op"] == "max")
        for r in rows:
            r["flops_ratio"] = r["flops"] / base["flops"]
            r["latency_ratio"] = r["measured_ms"] / base["measured_ms"]
        names = [r["op"] for r in rows]
        sure, noise = _discordant(names, [r["flops"] for r in rows], rows)
        points.append({"point": p + 1, "rows": rows, "disagree": sure,
                       "disagree_within_noise": noise})
        log(f"  {runtime} point {p + 1}: {len(sure)} op pairs ordered differently by FLOPs "
            f"and latency beyond the noise ({noise} more within it)")
    return points


def fronts(runtime, timing, tolerance, folder, log):
    """PoolBench's table: the FLOPs front vs the latency front (predicted latency)."""
    from poolbench import bench_space

    from poolnas.evaluators import LatencyModel, space_table
    from poolnas.spaces import Architecture

    rows = [json.loads(line) for line in TABLE.read_text().splitlines() if line.strip()]
    archs = [Architecture.from_key(r["key"]) for r in rows]
    table = space_table(bench_space(), INPUT, CLASSES, runtime, input_scale=SCALE,
                        path=Path(folder) / f"table-{runtime}.json", tolerance=tolerance,
                        **timing)
    model = LatencyModel(table, INPUT, CLASSES, input_scale=SCALE)
    acc = [statistics.mean(r["val_acc"]) for r in rows]
    ms = [model(a) for a in archs]
    by_flops = _front([(a, r["flops"]) for a, r in zip(acc, rows)])
    by_latency = _front(list(zip(acc, ms)))
    # For each latency-front member: the fastest FLOPs-front member at least as accurate.
    left = []
    for i in by_latency:
        rivals = [ms[j] for j in by_flops if acc[j] >= acc[i]]
        if rivals:
            left.append(min(rivals) / ms[i] - 1)
    shared = sorted(set(by_flops) & set(by_latency))
    result = {"architectures": len(rows), "flops_front": [rows[i]["key"] for i in by_flops],
              "latency_front": [rows[i]["key"] for i in by_latency], "shared": len(shared),
              "extra_latency_of_flops_front": {
                  "median": statistics.median(left) if left else 0.0,
                  "max": max(left) if left else 0.0},
              "spearman_flops_predicted_ms": _spearman([r["flops"] for r in rows], ms)}
    log(f"  {runtime} PoolBench fronts: FLOPs {len(by_flops)}, latency {len(by_latency)}, "
        f"{len(shared)} shared")
    return result


def markdown(report) -> str:
    lines = [f"## Measured latency vs the per-kernel model vs FLOPs ({report['mode']})", "",
             f"Machine: {report['machine']}; threads pinned to {report['threads']}; each timing "
             f"{report['timing']['warmup']} warm-up calls, then the median of "
             f"{report['timing']['runs']} timed calls, {report['timing']['repeats']} repeats; "
             f"kernel tolerance {report['tolerance']:.0%}. Each space's kernel table and "
             "calibration (20 architectures measured whole) are measured afresh; the "
             "architectures below are others, drawn at random.", ""]
    for runtime, part in report["runtimes"].items():
        lines += [f"### {runtime}: {part['description']}", "",
                  "| space | kernels | archs | within ±10 % | median abs. error | median error | "
                  "Spearman predicted | Spearman FLOPs | uncalibrated: within ±10 %, Spearman | "
                  "calibration: intercept ms, slope (fit error) | median repeat spread |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in part["accuracy"].items():
            u, c = r["uncalibrated"], r["calibration"]
            lines.append(f"| {name} | {r['kernels']} | {r['architectures']} | "
                         f"{r['within_10pct']:.0%} | {r['median_abs_error']:.1%} | "
                         f"{r['median_error']:+.1%} | {r['spearman']:.3f} | "
                         f"{r['spearman_flops']:.3f} | {u['within_10pct']:.0%}, "
                         f"{u['spearman']:.3f} | {c['intercept_ms']:.4f}, {c['slope']:.3f} "
                         f"({c['median_abs_error']:.1%}) | "
                         f"{r['median_measurement_spread']:.1%} |")
        lines += ["", "Per op at every point of the default backbone (ratio to `max` at that "
                  "point; whole-model FLOPs and measured latency):", "",
                  "| point | op | FLOPs ratio | latency ratio | latency ms (IQR) | repeat medians "
                  "ms |", "|---|---|---|---|---|---|"]
        for p in part["per_op"]:
            for r in p["rows"]:
                lines.append(f"| {p['point']} | `{r['op']}` | {r['flops_ratio']:.3f} | "
                             f"{r['latency_ratio']:.3f} | {r['measured_ms']:.4f} "
                             f"({r['iqr_ms']:.4f}) | "
                             + ", ".join(f"{v:.4f}" for v in r["repeat_medians_ms"]) + " |")
        lines += ["", "Op pairs whose FLOPs order and measured latency order disagree, where "
                  "the two latencies' repeat medians do not overlap (a pair inside that noise "
                  "is only counted):"]
        for p in part["per_op"]:
            lines.append(f"\n- point {p['point']}: " + ("; ".join(p["disagree"]) or "none")
                         + f" ({p['disagree_within_noise']} more pairs disagree within the "
                         "noise).")
        f = part["fronts"]
        lines += ["", f"PoolBench-digits ({f['architectures']} architectures): FLOPs front "
                  f"{len(f['flops_front'])}, latency front {len(f['latency_front'])}, "
                  f"{f['shared']} shared; the FLOPs front's fastest equally accurate member is "
                  f"{f['extra_latency_of_flops_front']['median']:+.1%} (median), "
                  f"{f['extra_latency_of_flops_front']['max']:+.1%} (max) slower than the "
                  f"latency front's. Spearman(FLOPs, predicted ms) = "
                  f"{f['spearman_flops_predicted_ms']:.3f}.", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="6 architectures per space, 5 runs x 2 repeats, a loose tolerance")
    parser.add_argument("--archs", type=int, default=100, help="architectures per space")
    parser.add_argument("--runtimes", default="keras,tflite")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.25,
                        help="refuse a kernel table whose repeat medians disagree by more")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None,
                        help="output prefix (default docs/latency_model, or "
                        "/tmp/poolnas_latency_model_quick with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.archs, args.warmup, args.runs, args.repeats = 6, 2, 5, 2
        args.tolerance = max(args.tolerance, 10.0)
    out = Path(args.out or ("/tmp/poolnas_latency_model_quick" if args.quick
                            else str(HERE.parent / "docs" / "latency_model")))

    from poolnas.evaluators import machine_name, pin_threads, runtime_description
    from poolnas.spaces import catalogue_space, default_space

    threads = pin_threads(args.threads)
    timing = {"warmup": args.warmup, "runs": args.runs, "repeats": args.repeats,
              "threads": args.threads}
    spaces = {"default": default_space(), "catalogue": catalogue_space()}
    report = {"mode": "quick" if args.quick else "full", "machine": machine_name(),
              "platform": platform.platform(), "threads": threads or args.threads,
              "timing": timing, "tolerance": args.tolerance, "runtimes": {}}

    def log(text):
        print(text, flush=True)

    started = time.perf_counter()
    folder = tempfile.mkdtemp(prefix="poolnas-latency-")  # a fresh table: nothing cached
    for runtime in args.runtimes.split(","):
        accuracy = accuracy_of_model(runtime, spaces, args.archs, args.seed, timing,
                                     args.tolerance, folder, log)
        report["runtimes"][runtime] = {
            "description": runtime_description(runtime), "accuracy": accuracy,
            "per_op": per_op(runtime, timing, log),
            "fronts": fronts(runtime, timing, args.tolerance, folder, log)}
    report["seconds"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(report, indent=1) + "\n")
    Path(f"{out}.md").write_text(markdown(report))
    log(f"wrote {out}.json and {out}.md in {report['seconds']:.0f} s")
    return report


if __name__ == "__main__":
    main()
