"""Where a short trial's fixed overhead went: each change measured against what it replaced.

Three side-by-side measurements in one process, digits, poolnas' default budget (5 epochs,
batch 64, Adam 3e-3) on architectures of the default space:

- ``update``: the training step with poolnas' fused optimizer update
  (:func:`poolnas.evaluators.fuse_updates`) vs Keras' own update, alternating per architecture
  (the order flips every architecture): first epoch (the trace), a steady epoch, the whole
  ``fit``, and the validation accuracy of both (equal up to float rounding of the update).
- ``loop``: poolnas' training loop (:func:`poolnas.evaluators.train_model`: its own traced
  step) vs Keras' ``fit`` as the evaluator called it before (the same model, compiled with the
  fused update and the accuracy metric, over the same batches), alternating per architecture:
  first epoch, a steady epoch, the whole training, and whether the trained weights are the same
  (they are, bit for bit, on CPU).
- ``gc``: ``keras.backend.clear_session()`` (a full garbage collection) after a model build,
  with the start-up objects frozen (:func:`poolnas.spaces.freeze_startup_objects`, what a
  search does) vs not, alternating (``gc.unfreeze()`` in between).
- ``study``: a new study on the default space (``SearchRunner`` on a fresh SQLite file: the
  hypervolume reference and the surrogate sampler's FLOPs table) vs resuming it.
- ``startup``: what a user waits for before the first trial trains, in fresh processes:
  ``import tensorflow`` alone, ``import poolnas.search._cli`` (poolnas' own imports, TensorFlow
  still unimported) with its largest imports from ``python -X importtime``, and
  ``poolnas search --trials 1 --epochs 1 --sampler random``: process wall time and the time from
  the process' start to its first trial's start (``datetime_start``).

    python benchmarks/trial_overhead.py                  # 6 architectures, 20 clears
    python benchmarks/trial_overhead.py --quick          # 2 architectures, 2 epochs, 4 clears
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import _epoch_timer  # noqa: E402


def _fit(model, data, budget, *, fused: bool, metric: bool = False) -> dict[str, float]:
    import keras
    import numpy as np

    from poolnas.evaluators import fuse_updates

    keras.utils.set_random_seed(0)
    optimizer = budget.make_optimizer()
    model.compile(optimizer=fuse_updates(optimizer) if fused else optimizer,
                  loss="sparse_categorical_crossentropy",
                  metrics=[keras.metrics.SparseCategoricalAccuracy()] if metric else None)
    model.optimizer.build(model.trainable_variables)
    timer = _epoch_timer()
    tick = time.perf_counter()
    model.fit(data.train_dataset(budget.batch_size, seed=0), epochs=budget.epochs, verbose=0,
              shuffle=False, callbacks=[timer])
    fit = time.perf_counter() - tick
    epochs = timer.seconds
    predicted = np.asarray(model(data.x_val.astype("float32"), training=False)).argmax(axis=1)
    return {"first_epoch": epochs[0],
            "steady_epoch": statistics.median(epochs[1:]) if len(epochs) > 1 else float("nan"),
            "fit": fit, "train": sum(epochs), "val_acc": float((predicted == data.y_val).mean())}


def measure_update(data, budget, archs) -> list[dict[str, Any]]:
    from poolnas.evaluators import fresh_model

    rows = []
    for i, arch in enumerate(archs):
        for fused in ((True, False) if i % 2 == 0 else (False, True)):
            model = fresh_model(arch, data, budget, seed=0)
            rows.append({"arch": arch.key, "fused": fused, **_fit(model, data, budget,
                                                                  fused=fused)})
    return rows


def measure_loop(data, budget, archs) -> list[dict[str, Any]]:
    import numpy as np

    from poolnas.evaluators import fresh_model, train_model

    rows = []
    for i, arch in enumerate(archs):
        trained = {}
        for loop in (("fit", "poolnas") if i % 2 == 0 else ("poolnas", "fit")):
            model = fresh_model(arch, data, budget, seed=0)
            if loop == "poolnas":
                _, info = train_model(model, data, budget, seed=0)
                epochs = info["epoch_seconds"]
                row = {"first_epoch": epochs[0], "steady_epoch": statistics.median(epochs[1:]),
                       "train": sum(epochs)}
            else:  # What the evaluator ran before its own loop, scoring aside.
                row = _fit(model, data, budget, fused=True, metric=True)
            trained[loop] = model.get_weights()
            rows.append({"arch": arch.key, "loop": loop, **{k: row[k] for k in (
                "first_epoch", "steady_epoch", "train")}})
        same = all(np.array_equal(a, b) for a, b in zip(trained["fit"], trained["poolnas"]))
        for row in rows[-2:]:
            row["same_weights"] = same
    return rows


def measure_gc(data, archs, clears: int) -> list[dict[str, Any]]:
    import keras

    from poolnas.spaces import build_model

    rows = []
    for i in range(clears):
        frozen = i % 2 == 0
        if frozen:
            gc.collect()
            gc.freeze()
        model = build_model(archs[i % len(archs)], data.input_shape, data.num_classes)
        del model
        tracked = len(gc.get_objects())
        tick = time.perf_counter()
        keras.backend.clear_session()
        rows.append({"frozen": frozen, "clear_session": time.perf_counter() - tick,
                     "tracked_objects": tracked, "frozen_objects": gc.get_freeze_count()})
        gc.unfreeze()
    return rows


def measure_study(workdir: Path) -> dict[str, Any]:
    from poolnas.search import SearchConfig, SearchRunner
    from poolnas.spaces import SearchSpace

    space = SearchSpace()
    config = SearchConfig(storage=f"sqlite:///{workdir / 'setup.db'}", study="setup", space=space,
                          trials=1)
    result = {}
    for phase in ("new", "resume"):
        tick = time.perf_counter()
        runner = SearchRunner(config)
        seconds = time.perf_counter() - tick
        # Costs are closed-form: no model is built to set up or resume a study.
        result[phase] = {"seconds": seconds, "reference_flops": runner.reference_flops}
        runner.handle.close()
    return result


def _seconds(argv: list[str], **kwargs: Any) -> tuple[float, Any]:
    import subprocess

    tick = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=True, **kwargs)
    return time.perf_counter() - tick, done


def measure_startup(workdir: Path) -> dict[str, Any]:
    import datetime

    import optuna

    python = sys.executable
    result: dict[str, Any] = {}
    result["import_tensorflow"], _ = _seconds([python, "-c", "import tensorflow"])
    result["import_cli"], done = _seconds([python, "-X", "importtime", "-c",
                                           "import poolnas.search._cli"])
    tops = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2]
            depth = (len(name) - len(name.lstrip())) // 2
            if depth <= 3:
                tops.append((int(parts[1]) / 1e6, name.strip()))
    result["largest_imports"] = sorted(tops, reverse=True)[:8]
    db = workdir / "first.db"
    started = datetime.datetime.now()
    result["search_process"], _ = _seconds(
        [python, "-m", "poolnas.search", "search", "--storage", f"sqlite:///{db}", "--trials",
         "1", "--epochs", "1", "--sampler", "random", "--quiet"])
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    first = optuna.load_study(study_name="poolnas", storage=f"sqlite:///{db}").trials[0]
    result["to_first_trial"] = (first.datetime_start - started).total_seconds()
    result["first_trial"] = (first.datetime_complete - first.datetime_start).total_seconds()
    return result


def summarise(update, clears, study, startup=None, loop=None) -> str:
    def med(rows, key, **where):
        values = [r[key] for r in rows if all(r[k] == v for k, v in where.items())]
        return statistics.median(values)

    lines = ["| optimizer update | first epoch s | steady epoch s | fit s | val. accuracy |",
             "|---|---:|---:|---:|---:|"]
    for fused, name in ((False, "Keras' own"), (True, "fused (poolnas)")):
        accuracy = statistics.fmean(r["val_acc"] for r in update if r["fused"] == fused)
        lines.append(f"| {name} | {med(update, 'first_epoch', fused=fused):.3f} | "
                     f"{med(update, 'steady_epoch', fused=fused):.3f} | "
                     f"{med(update, 'fit', fused=fused):.3f} | {accuracy:.4f} |")
    ratio = med(update, "first_epoch", fused=True) / med(update, "first_epoch", fused=False)
    saved = med(update, "fit", fused=False) - med(update, "fit", fused=True)
    lines.append(f"\nFused / Keras' first epoch: {ratio:.2f}; fit {saved:+.3f} s saved per "
                 f"training (medians over {len(update) // 2} architectures).\n")
    if loop:
        lines += ["| training loop | first epoch s | steady epoch s | training s | "
                  "same weights |", "|---|---:|---:|---:|---|"]
        for name, label in (("fit", "Keras' `fit`"), ("poolnas", "poolnas' own step")):
            same = all(r["same_weights"] for r in loop if r["loop"] == name)
            lines.append(f"| {label} | {med(loop, 'first_epoch', loop=name):.3f} | "
                         f"{med(loop, 'steady_epoch', loop=name):.3f} | "
                         f"{med(loop, 'train', loop=name):.3f} | "
                         f"{'yes' if same else 'NO'} |")
        pairs = {}
        for r in loop:
            pairs.setdefault(r["arch"], {})[r["loop"]] = r["train"]
        saved = [p["fit"] - p["poolnas"] for p in pairs.values()]
        first = (med(loop, "first_epoch", loop="poolnas")
                 / med(loop, "first_epoch", loop="fit"))
        lines.append(f"\npoolnas' loop saves {statistics.median(saved):.3f} s per training "
                     f"(median over {len(saved)} architectures; range {min(saved):+.3f} to "
                     f"{max(saved):+.3f} s); first epoch ratio {first:.2f}.\n")
    lines += ["| clear_session after a build | seconds (median) | objects the collector tracks |",
              "|---|---:|---:|"]
    for frozen, name in ((False, "start-up objects not frozen"), (True, "frozen (poolnas)")):
        lines.append(f"| {name} | {med(clears, 'clear_session', frozen=frozen):.4f} | "
                     f"{int(med(clears, 'tracked_objects', frozen=frozen)):,} |")
    lines += ["", "| study on the default space | seconds | reference FLOPs |",
              "|---|---:|---:|"]
    for phase in ("new", "resume"):
        s = study[phase]
        lines.append(f"| {phase} | {s['seconds']:.2f} | {s['reference_flops']:,} |")
    if startup:
        lines += ["", "| start-up, fresh processes | seconds |", "|---|---:|",
                  f"| `import tensorflow` | {startup['import_tensorflow']:.2f} |",
                  f"| `import poolnas.search._cli` (TensorFlow not imported) | "
                  f"{startup['import_cli']:.2f} |",
                  f"| `poolnas search --trials 1 --epochs 1`: process start to first trial | "
                  f"{startup['to_first_trial']:.2f} |",
                  f"| … its one trial | {startup['first_trial']:.2f} |",
                  f"| … whole process | {startup['search_process']:.2f} |",
                  "", "Largest imports of `poolnas.search._cli` (cumulative s, "
                  "`python -X importtime`): " + ", ".join(
                      f"{name} {sec:.2f}" for sec, name in startup["largest_imports"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 architectures, 2 epochs")
    parser.add_argument("--archs", type=int, default=6)
    parser.add_argument("--clears", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="also write <out>.md/.json")
    args = parser.parse_args(argv)

    import keras  # noqa: F401  (TensorFlow's import is not part of any figure)

    from poolnas.evaluators import Budget, load_dataset
    from poolnas.spaces import SearchSpace

    data = load_dataset("digits", seed=0)
    budget = Budget(epochs=2 if args.quick else 5)
    n = 2 if args.quick else args.archs
    space = list(SearchSpace())
    archs = space[:: max(1, len(space) // n)][:n]
    with tempfile.TemporaryDirectory() as workdir:
        startup = measure_startup(Path(workdir))
        study = measure_study(Path(workdir))  # First: it freezes the start-up objects.
    clears = measure_gc(data, archs, 4 if args.quick else args.clears)
    gc.collect()
    gc.freeze()  # As in a search, for both sides of the update comparison.
    update = measure_update(data, budget, archs)
    loop = measure_loop(data, budget, archs)
    text = summarise(update, clears, study, startup, loop)
    print(text)
    if args.out is not None:
        args.out.with_suffix(".md").write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(
            {"update": update, "loop": loop, "gc": clears, "study": study, "startup": startup,
             "epochs": budget.epochs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
