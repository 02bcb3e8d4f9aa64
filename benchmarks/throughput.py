"""Trial throughput: poolnas' search trial vs a plain ``model.fit`` loop vs KerasTuner.

Same architectures (the ones KerasTuner's RandomSearch draws from the default space with the
round's seed), same digits data, same budget (poolnas' default: 5 epochs, batch 64, Adam 3e-3),
one process per contender and round, contenders interleaved round by round (their order
rotates) so that a busy machine slows all of them alike:

- ``poolnas``: ``SearchRunner`` on a fresh SQLite study with the architectures enqueued: the whole
  trial (build, cost, train, validate, save the model artifact, dashboard note, Pareto snapshot).
- ``plain``: ``clear_session``, seed, ``build_model``, ``compile``, ``fit`` on ``tf.data`` batches,
  ``evaluate``: what a hand-written loop does.
- ``keras-tuner``: ``keras_tuner.RandomSearch`` with a ``HyperModel`` that builds the same models
  from one ``hp.Choice`` per space parameter, ``search(x, y, validation_data=..., epochs=5,
  batch_size=64)`` on the same arrays.

Each reports seconds per trial, split where it can be measured: ``build``, ``compile``, ``trace``
(first epoch minus a steady one), ``train`` (training steps), ``evaluate``, ``storage`` and the
rest. Process start and data loading are once per process and reported apart. The training FLOP
rate (3 x forward FLOPs x samples / training-step seconds) is compared with the machine's
float32 matmul peak measured in the same run.

    python benchmarks/throughput.py              # 3 rounds x 5 trials per contender
    python benchmarks/throughput.py --quick      # 1 round x 2 trials, 1 epoch

``--whole-process`` measures what a user waits for instead: whole processes, start-up included,
one after the other in each round (order rotating), on ``--dataset`` (digits or a folder such
as ``benchmarks/make_shapes_folder.py shapes --per-class 300``):

- ``poolnas K=k``: ``poolnas search --sampler random --parallel k --trials N --epochs E`` on a
  fresh SQLite file, for each k of ``--parallel`` (default ``1,auto``);
- ``keras-tuner``: a process that imports KerasTuner, loads the same data and runs
  ``RandomSearch`` over the same space for N trials (``--worker keras-tuner`` below).

It reports trials per minute (N / process seconds), the ratio to KerasTuner, and poolnas'
training FLOP rate (3 x forward FLOPs x samples, summed over the study's trials, over their
summed training-step seconds, tracing excluded as in the per-trial mode) against the float32
matmul peak measured in the same round::

    python benchmarks/throughput.py --whole-process --trials 10 --epochs 5
    python benchmarks/throughput.py --whole-process --dataset shapes --trials 4 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CONTENDERS = ("keras-tuner", "poolnas", "plain")


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def _split_fit(epochs: list[float]) -> tuple[float, float]:
    """``(trace, train)`` from epoch times: trace = first epoch minus a steady one."""
    steady = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
    trace = max(0.0, epochs[0] - steady) if len(epochs) > 1 else 0.0
    return trace, sum(epochs) - trace


# ------------------------------------------------------------------------------ contenders
def run_keras_tuner(budget, seed: int, trials: int, workdir: str,
                    dataset: str = "digits") -> dict[str, Any]:
    import keras_tuner as kt

    from poolnas.evaluators import load_dataset
    from poolnas.spaces import SearchSpace, build_model

    tick = time.perf_counter()
    data = load_dataset(dataset, seed=0)
    data_seconds = time.perf_counter() - tick
    space = SearchSpace()
    timers: list[Any] = []

    class SpaceHyperModel(kt.HyperModel):
        def build(self, hp):
            values = {name: hp.Choice(name, list(v)) for name, v in space.parameters().items()}
            arch = space.architecture(values)
            model = build_model(arch, data.input_shape, data.num_classes,
                                input_scale=data.input_scale, input_offset=data.input_offset)
            model.compile(optimizer=budget.make_optimizer(),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            return model

        def fit(self, hp, model, *args, callbacks=None, **kwargs):
            timer = _epoch_timer()
            timers.append(timer)
            return model.fit(*args, callbacks=[*(callbacks or []), timer], **kwargs)

    tuner = kt.RandomSearch(SpaceHyperModel(), objective="val_accuracy", max_trials=trials,
                            seed=seed, directory=workdir, project_name=f"kt{seed}",
                            overwrite=True)
    started = time.perf_counter()
    tuner.search(data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                 epochs=budget.epochs, batch_size=budget.batch_size, verbose=0)
    total = time.perf_counter() - started
    per_trial = []
    for timer in timers:
        trace, train = _split_fit(timer.seconds)
        per_trial.append({"trace": trace, "train": train})
    keys = [space.architecture(t.hyperparameters.values).key
            for t in tuner.oracle.trials.values()]
    return {"keys": keys, "data_seconds": data_seconds, "trials": len(timers),
            "total": total, "per_trial": per_trial}


def run_poolnas(budget, seed: int, keys: list[str], workdir: str) -> dict[str, Any]:
    from poolnas.evaluators import load_dataset
    from poolnas.search import SearchConfig, SearchRunner
    from poolnas.spaces import Architecture, SearchSpace

    tick = time.perf_counter()
    data = load_dataset("digits", seed=0)
    data_seconds = time.perf_counter() - tick
    space = SearchSpace()
    config = SearchConfig(storage=f"sqlite:///{workdir}/poolnas-{seed}.db", study="throughput",
                          trials=len(keys), budget=budget, seed=seed, space=space)
    tick = time.perf_counter()
    runner = SearchRunner(config, data=data)
    setup_seconds = time.perf_counter() - tick
    for key in keys:
        runner.study.enqueue_trial(space.params_of(Architecture.from_key(key)))
    started = time.perf_counter()
    runner.run()
    total = time.perf_counter() - started
    trials = [t for t in runner.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    flops = {t.user_attrs["architecture"]: t.user_attrs["flops"] for t in trials}
    return {"keys": [t.user_attrs["architecture"] for t in trials], "data_seconds": data_seconds,
            "setup_seconds": setup_seconds, "trials": len(trials), "total": total,
            "per_trial": runner.timings, "flops": flops,
            "samples_per_epoch": (len(data.y_train) // budget.batch_size) * budget.batch_size}


def run_plain(budget, seed: int, keys: list[str]) -> dict[str, Any]:
    import keras

    from poolnas.evaluators import load_dataset
    from poolnas.spaces import Architecture, build_model

    tick = time.perf_counter()
    data = load_dataset("digits", seed=0)
    data_seconds = time.perf_counter() - tick
    per_trial = []
    started = time.perf_counter()
    for number, key in enumerate(keys):
        t0 = time.perf_counter()
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed + number)
        model = build_model(Architecture.from_key(key), data.input_shape, data.num_classes,
                            input_scale=data.input_scale, input_offset=data.input_offset)
        t1 = time.perf_counter()
        model.compile(optimizer=budget.make_optimizer(),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        t2 = time.perf_counter()
        timer = _epoch_timer()
        model.fit(data.train_dataset(budget.batch_size, seed=seed + number),
                  epochs=budget.epochs, verbose=0, callbacks=[timer], shuffle=False)
        t3 = time.perf_counter()
        model.evaluate(data.val_dataset(budget.batch_size), verbose=0)
        t4 = time.perf_counter()
        trace, train = _split_fit(timer.seconds)
        per_trial.append({"build": t1 - t0, "compile": t2 - t1, "trace": trace, "train": train,
                          "fit_other": (t3 - t2) - trace - train, "evaluate": t4 - t3,
                          "total": t4 - t0})
    total = time.perf_counter() - started
    return {"keys": keys, "data_seconds": data_seconds, "trials": len(keys), "total": total,
            "per_trial": per_trial}


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """float32 matmul rate of this machine in TensorFlow, FLOP/s (best of ``repeats``)."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - tick)
    return 2 * size**3 / best


# ------------------------------------------------------------------------------ driver
def worker(args) -> None:
    from poolnas.evaluators import Budget

    if args.mixed_precision:
        import keras

        keras.mixed_precision.set_global_policy("mixed_float16")
    budget = Budget(epochs=args.epochs)
    keys = args.keys.split(",") if args.keys else []
    with tempfile.TemporaryDirectory(prefix="poolnas-throughput-") as workdir:
        if args.worker == "keras-tuner":
            result = run_keras_tuner(budget, args.seed, args.trials, workdir, args.dataset)
        elif args.worker == "poolnas":
            result = run_poolnas(budget, args.seed, keys, workdir)
        elif args.worker == "plain":
            result = run_plain(budget, args.seed, keys)
        else:
            result = {"peak_flops": matmul_peak()}
    print("RESULT " + json.dumps(result))


def _spawn(*argv: str) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                          check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"worker {argv} failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_seconds"] = time.perf_counter() - started
    return result


def summarise(runs: dict[str, list[dict[str, Any]]], *, epochs: int, peak: float) -> str:
    lines = ["| contender | trials | s per trial (median of rounds) | trials per minute | "
             "× KerasTuner | fixed overhead |", "|---|---:|---:|---:|---:|---:|"]
    per_trial_seconds = {}
    overhead = {}
    for name, results in runs.items():
        rates = [r["total"] / r["trials"] for r in results]
        per_trial_seconds[name] = statistics.median(rates)
        trains = [p["train"] for r in results for p in r["per_trial"]]
        totals = [r["total"] / r["trials"] for r in results]
        overhead[name] = 1 - statistics.fmean(trains) / statistics.fmean(totals)
    base = per_trial_seconds["keras-tuner"]
    for name in runs:
        s = per_trial_seconds[name]
        lines.append(f"| {name} | {sum(r['trials'] for r in runs[name])} | {s:.2f} | "
                     f"{60 / s:.1f} | {base / s:.2f} | {overhead[name]:.0%} |")
    lines += ["", "Split of a trial (median seconds over all trials):", "",
              "| contender | build | cost | compile | trace | train steps | evaluate | storage | "
              "annotate | rest | total |", "|---|" + "---:|" * 10]
    for name, results in runs.items():
        trials = [p for r in results for p in r["per_trial"]]
        total = statistics.median(r["total"] / r["trials"] for r in results)
        cells = []
        known = 0.0
        for phase in ("build", "cost", "compile", "trace", "train", "evaluate", "storage",
                      "annotate"):
            values = [p[phase] for p in trials if phase in p]
            if values:
                value = statistics.median(values)
                known += value
                cells.append(f"{value:.2f}")
            else:
                cells.append("–")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {max(total - known, 0):.2f} | "
                     f"{total:.2f} |")
    pool = runs["poolnas"]
    rates = []
    for r in pool:
        for key, p in zip(r["keys"], r["per_trial"]):
            rates.append(3 * r["flops"][key] * r["samples_per_epoch"] * epochs / p["train"])
    rate = statistics.median(rates)
    lines += ["", f"Training FLOP rate (3 x forward FLOPs x samples / training-step seconds), "
              f"median over poolnas trials: {rate / 1e9:.3f} GFLOP/s; float32 matmul peak "
              f"(2048², TensorFlow, best of 10): {peak / 1e9:.1f} GFLOP/s: "
              f"{rate / peak:.2%} of peak.",
              "Once per process: data " + ", ".join(
                  f"{n} {statistics.median(r['data_seconds'] for r in rs):.2f} s"
                  for n, rs in runs.items())
              + f"; poolnas study set-up (storage, reference FLOPs) "
              f"{statistics.median(r['setup_seconds'] for r in pool):.2f} s."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ whole process
def _timed(argv: list[str], out: list[str] | None = None) -> float:
    """Seconds a whole process takes (it must succeed); its stdout appended to ``out``."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    if out is not None:
        out.append(done.stdout)
    return time.perf_counter() - started


def _training_flops(keys: list[str], data, epochs: int, samples_per_epoch: int) -> float:
    """3 x forward FLOPs x samples of training the architectures ``keys`` (closed form)."""
    from poolnas.evaluators import architecture_cost
    from poolnas.spaces import Architecture

    return sum(3 * architecture_cost(Architecture.from_key(k), data.input_shape,
                                     data.num_classes, input_scale=data.input_scale,
                                     input_offset=data.input_offset).flops
               * samples_per_epoch * epochs for k in keys)


def _study_rate(db: Path, epochs: int, samples_per_epoch: int) -> dict[str, float]:
    """A poolnas study's training FLOPs and the seconds its trials spent in training steps."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="poolnas", storage=f"sqlite:///{db}")
    flops = seconds = 0.0
    for trial in study.get_trials(deepcopy=False):
        phases = trial.user_attrs.get("seconds") or {}
        if trial.state.name == "COMPLETE" and "train" in phases:
            flops += 3 * trial.user_attrs["flops"] * samples_per_epoch * epochs
            seconds += phases["train"]  # training steps, as in the per-trial mode
    return {"flops": flops, "seconds": seconds}


def whole_process(args) -> str:
    """Run the whole-process comparison; the markdown table."""
    from poolnas.evaluators import load_dataset

    data = load_dataset(args.dataset, seed=0)
    samples = (len(data.y_train) // min(64, len(data.y_train))) * min(64, len(data.y_train))
    # poolnas' CLI in a fresh interpreter; with --mixed-precision Keras' global policy is set
    # first (poolnas has no option for it: this measures what it would give).
    policy = "mixed_float16" if args.mixed_precision else None
    poolnas = [sys.executable, "-c",
               "import sys, keras; p = sys.argv.pop(1); "
               "p != 'none' and keras.mixed_precision.set_global_policy(p); "
               "from poolnas.search._cli import main; sys.exit(main(sys.argv[1:]))",
               policy or "none"]
    ks = args.parallel.split(",")
    names = ["keras-tuner", *(f"poolnas K={k}" for k in ks)]
    seconds: dict[str, list[float]] = {n: [] for n in names}
    rates: dict[str, list[float]] = {n: [] for n in names[1:]}
    # The contenders draw different random architectures; what each trained, in FLOPs, says
    # how much of a difference in seconds is the draw's.
    work: dict[str, list[float]] = {n: [] for n in names}
    peaks = []
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        with tempfile.TemporaryDirectory(prefix="poolnas-whole-") as workdir:
            for name in order:
                if name == "keras-tuner":
                    printed: list[str] = []
                    seconds[name].append(_timed([
                        sys.executable, __file__, "--worker", "keras-tuner", "--seed",
                        str(1000 + round_), "--trials", str(args.trials), "--epochs",
                        str(args.epochs), "--dataset", args.dataset,
                        *(["--mixed-precision"] if policy else [])], printed))
                    result = json.loads([line for line in printed[0].splitlines()
                                         if line.startswith("RESULT ")][-1][len("RESULT "):])
                    work[name].append(_training_flops(result["keys"], data, args.epochs,
                                                      samples))
                    continue
                k = name.split("=")[1]
                db = Path(workdir) / f"k{k}.db"
                seconds[name].append(_timed([
                    *poolnas, "search", "--storage", f"sqlite:///{db}", "--sampler", "random",
                    "--dataset", args.dataset, "--trials", str(args.trials), "--epochs",
                    str(args.epochs), "--parallel", k, "--seed", str(round_), "--quiet"]))
                rate = _study_rate(db, args.epochs, samples)
                rates[name].append(rate["flops"] / rate["seconds"])
                work[name].append(rate["flops"])
        peaks.append(_spawn("--worker", "peak")["peak_flops"])
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(
            f"{n} {seconds[n][-1]:.1f} s" for n in names), file=sys.stderr, flush=True)
    peak = max(peaks)
    base = statistics.median(seconds["keras-tuner"])
    lines = [f"Whole processes on {args.dataset} {tuple(data.input_shape)}, {args.trials} random "
             f"trials x {args.epochs} epochs, {args.rounds} rounds (median); Keras policy "
             f"{policy or 'float32'}:", "",
             "| contender | process seconds | trials per minute | × KerasTuner | "
             "training TFLOP (the draw) | training FLOP rate | of matmul peak |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        s = statistics.median(seconds[name])
        cells = ["–", "–"]
        if name in rates:
            rate = statistics.median(rates[name])
            cells = [f"{rate / 1e9:.2f} GFLOP/s", f"{rate / peak:.1%}"]
        drawn = statistics.median(work[name]) / 1e12 if work[name] else float("nan")
        lines.append(f"| {name} | {s:.1f} | {60 * args.trials / s:.1f} | {base / s:.2f} | "
                     f"{drawn:.2f} | " + " | ".join(cells) + " |")
    lines += ["", f"float32 matmul peak (2048², TensorFlow, best of 10, best round): "
              f"{peak / 1e9:.1f} GFLOP/s. Rounds: " + "; ".join(
                  ", ".join(f"{n} {seconds[n][i]:.1f}" for n in names)
                  for i in range(args.rounds))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round x 2 trials, 1 epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="also write <out>.md/.json")
    parser.add_argument("--whole-process", action="store_true",
                        help="whole processes (start-up included): poolnas search --parallel K "
                        "vs a KerasTuner RandomSearch process")
    parser.add_argument("--dataset", default="digits",
                        help="with --whole-process: digits or a folder data set")
    parser.add_argument("--parallel", default="1,auto",
                        help="with --whole-process: comma-separated --parallel values")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="with --whole-process: Keras' mixed_float16 policy in every process")
    parser.add_argument("--worker", choices=(*CONTENDERS, "peak"), help=argparse.SUPPRESS)
    parser.add_argument("--keys", default="", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.whole_process:
        text = whole_process(args)
        print(text)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".md").write_text(text + "\n")
        return
    rounds, trials, epochs = (1, 2, 1) if args.quick else (args.rounds, args.trials, args.epochs)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONTENDERS}
    peaks = []
    for round_ in range(rounds):
        seed = 1000 + round_
        kt = _spawn("--worker", "keras-tuner", "--seed", str(seed), "--trials", str(trials),
                    "--epochs", str(epochs))
        keys = ",".join(kt["keys"])
        order = ["poolnas", "plain"]
        if round_ % 2:
            order.reverse()
        runs["keras-tuner"].append(kt)
        for name in order:
            runs[name].append(_spawn("--worker", name, "--seed", str(seed), "--keys", keys,
                                     "--epochs", str(epochs)))
        peaks.append(_spawn("--worker", "peak")["peak_flops"])
        print(f"round {round_ + 1}/{rounds}: " + ", ".join(
            f"{n} {runs[n][-1]['total'] / runs[n][-1]['trials']:.2f} s/trial" for n in runs),
            file=sys.stderr, flush=True)
    text = summarise(runs, epochs=epochs, peak=max(peaks))
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"runs": runs, "peaks": peaks}))


if __name__ == "__main__":
    main()
