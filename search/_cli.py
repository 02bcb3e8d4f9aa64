"""The ``poolnas`` command line. It parses, calls the library, and prints; nothing else.

This is the one module that composes every folder: it may import ``poolnas.dashboards`` (whose
notes and figures it subscribes to the search's trial events, :data:`DASHBOARD_HOOKS`), which no
other module of ``poolnas.search`` does. TensorFlow is imported only by the commands that need it.

Every mistake a user can make ends as one line ``poolnas: error: …`` on stderr and exit status 2,
with nothing written.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import optuna

from poolnas.dashboards import (
    DASHBOARD_HOOKS,
    analyse_study,
    answer_text,
    flops_text,
    serve,
    write_report,
)
from poolnas.evaluators import (
    DEFAULT_TOLERANCE,
    RUNTIMES,
    Budget,
    LatencyTable,
    architecture_kernels,
    cached_table,
    check_runtime,
    count_cost,
    default_table_path,
    keras_home,
    machine_name,
    measure_stable,
    pin_threads,
    point_costs,
    profiler_flops,
    runtime_description,
    space_table,
)
from poolnas.search._accuracy_model import fit_accuracy_model
from poolnas.search._config import DEFAULT_STORAGE, SearchConfig
from poolnas.search._export import MANIFEST, export_trials, trial_record
from poolnas.search._pareto import front_by_text, reported_front
from poolnas.search._pool import (
    available_cores,
    configure_threads,
    quiet_tensorflow,
    run_with_workers,
    thread_split,
)
from poolnas.search._runner import SearchRunner, announce_if_slow
from poolnas.search._samplers import SAMPLERS
from poolnas.search._settings import open_study
from poolnas.search._signals import (
    interrupt_on_signals,
    quiet_interrupted_trials,
    signal_arrived,
)
from poolnas.search._trial_attrs import TrialAttrs
from poolnas.search.keras_tuner import TUNERS
from poolnas.spaces import (
    MERGES,
    OPS,
    SKIPS,
    STEMS,
    Architecture,
    PoolnasError,
    SearchSpace,
    build_model,
    check_input_shape,
)

EXIT_USAGE = 2
#: Ctrl-C or SIGTERM stopped the command (128 + SIGINT, what a shell reports).
EXIT_INTERRUPTED = 130
_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"poolnas: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------- argument types
def _parallel(text: str) -> int | None:
    """``--parallel``: ``auto`` (None) or a whole number of at least 1."""
    if text.strip().lower() == "auto":
        return None
    return _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _flops(text: str) -> int:
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([kKmMgGtT]?)\s*", text)
    try:
        value = float(match[1]) * _SUFFIX[match[2].lower()] if match else float("nan")
    except ValueError:
        value = float("nan")
    if not value >= 1 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a positive FLOPs count like 2000000, 2e6 or 2M, got {text!r}"
        )
    return int(value)


def _image_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)(?:[x,](\d+))?", text.strip())
    if not match or int(match[1]) < 1 or int(match[2] or match[1]) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH like 32x32, got {text!r}")
    return int(match[1]), int(match[2] or match[1])


def _input_shape(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"(\d+)[x,](\d+)[x,](\d+)", text.strip())
    if not match or min(int(g) for g in match.groups()) < 1:
        raise argparse.ArgumentTypeError(f"expected HxWxC like 32x32x3, got {text!r}")
    return int(match[1]), int(match[2]), int(match[3])


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="poolnas",
        description="Search max-pool vs avg-pool vs stride-2 conv (and the shortcut around "
        "them) at every downsampling point: accuracy against FLOPs, with Optuna.",
    )
    parser.add_argument("--version", action="version", version=f"poolnas {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def storage_options(p: argparse.ArgumentParser, study: bool = True) -> None:
        p.add_argument("--storage", default=DEFAULT_STORAGE,
                       help="Optuna storage URL or journal file (.log) "
                            f"(default: {DEFAULT_STORAGE})")
        if study:
            p.add_argument("--study", default="poolnas", help="study name (default: poolnas)")

    search = commands.add_parser("search", help="run or resume a study",
                                 description="Run or resume a study (same --study and --storage).")
    storage_options(search)
    search.add_argument("--trials", type=_positive_int, default=20,
                        help="complete trials the study ends with, in total (default: 20)")
    search.add_argument("--timeout", type=_positive_float, default=None,
                        help="seconds this run may take (default: no limit)")
    search.add_argument("--sampler", choices=SAMPLERS, default="auto",
                        help="what proposes the candidates: auto (default: surrogate, or tpe "
                        "for a space of over 50,000 architectures), surrogate (a Bayesian "
                        "model of accuracy over every architecture, exact FLOPs), or Optuna's "
                        "tpe, nsga2, random, grid")
    search.add_argument("--engine", choices=("optuna", "keras-tuner"), default="optuna",
                        help="what proposes the candidates: optuna (--sampler, default) or "
                        "keras-tuner (--tuner); both record into the same storage")
    search.add_argument("--tuner", choices=TUNERS, default=None,
                        help="with --engine keras-tuner: KerasTuner's random (default), bayesian "
                        "or hyperband (up to --epochs per trial)")
    search.add_argument("--tuner-dir", default=None,
                        help="with --engine keras-tuner: keep KerasTuner's project folder in a "
                        "new sub-folder of this directory (default: a temporary folder)")
    search.add_argument("--space", default=None,
                        help="preset (default, catalogue) or a .toml/.json space file")
    search.add_argument("--dataset", default="digits",
                        help="digits (default), mnist, fashion_mnist, cifar10, cifar100, a .npz "
                        "file or a folder of class sub-folders")
    search.add_argument("--val-fraction", type=_fraction, default=None,
                        help="share of the training data held out for validation (default 0.2)")
    search.add_argument("--subset", type=_positive_int, default=None,
                        help="search on N training examples (a stratified sample)")
    search.add_argument("--image-size", type=_image_size, default=None,
                        help="HEIGHTxWIDTH images of a folder data set are resized to")
    search.add_argument("--epochs", type=_positive_int, default=5,
                        help="training epochs per trial (default: 5)")
    search.add_argument("--batch-size", type=_positive_int, default=64,
                        help="batch size (default: 64)")
    search.add_argument("--learning-rate", type=_positive_float, default=3e-3,
                        help="learning rate (default: 0.003)")
    search.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam",
                        help="optimizer (default: adam)")
    search.add_argument("--repeats", type=_positive_int, default=1,
                        help="train each architecture with K seeds; the objective is the mean")
    search.add_argument("--min-epochs", type=_positive_int, default=None, metavar="M",
                        help="multi-fidelity search (MO-ASHA): train new architectures M epochs "
                        "and promote the best 1/η of each rung (non-dominated rank, then "
                        "crowding) to η times more epochs, up to --epochs; only architectures "
                        "trained to --epochs are complete trials (default: every trial trains "
                        "--epochs)")
    search.add_argument("--reduction-factor", type=_non_negative_int, default=None,
                        metavar="η", help="with --min-epochs: the rungs' ratio η, at least 2 "
                        "(default: 3)")
    search.add_argument("--epoch-budget", type=_positive_int, default=None, metavar="N",
                        help="also end the study once its trials have trained N epochs in total "
                        "(default: no such limit)")
    search.add_argument("--no-reevaluate", dest="reevaluate", action="store_false",
                        help="never spend a training on another seed of an architecture "
                        "already trained (default: the surrogate sampler does where that is "
                        "worth more to the front than a new architecture; trial attr repeat_of)")
    search.add_argument("--augment", action="store_true",
                        help="random flips and shifts during training")
    search.add_argument("--seed", type=_non_negative_int, default=0, help="seed (default: 0)")
    search.add_argument("--max-flops", type=_flops, default=None,
                        help="FLOPs budget: larger candidates are infeasible and not trained "
                        "(e.g. 2e6 or 2M)")
    search.add_argument("--cost", choices=("flops", "latency"), default="flops",
                        help="the second objective: flops (default) or latency (ms on this "
                        "machine, predicted from per-kernel measurements before training)")
    search.add_argument("--max-latency", type=_positive_float, default=None,
                        help="with --cost latency: a budget in ms; slower candidates are "
                        "infeasible and not trained")
    search.add_argument("--latency-runtime", choices=RUNTIMES, default="keras",
                        help="with --cost latency: the runtime kernels are measured on, keras "
                        "(default) or tflite")
    search.add_argument("--latency-tolerance", type=_positive_float, default=DEFAULT_TOLERANCE,
                        help="with --cost latency: refuse the kernel table when a kernel's "
                        "repeat medians disagree by more than this share (default: 0.25)")
    search.add_argument("--latency-table", default=None,
                        help="with --cost latency: a kernel table file measured on the "
                        "deployment device (`poolnas latency --space … --latency-table FILE` "
                        "there) instead of measuring on this machine")
    search.add_argument("--artifacts", default=None,
                        help="artifact store directory (default: beside a SQLite database)")
    search.add_argument("--workers", type=_positive_int, default=1,
                        help="worker processes on this machine, sharing the CPU cores "
                        "(default: 1)")
    search.add_argument("--parallel", type=_parallel, default=None, metavar="K",
                        help="train K trials together in one fused training step (each still "
                        "its own trial with its own seed and the same result as alone); auto "
                        "(default): 8 with a GPU, 1 (one trial at a time) on CPU cores")
    search.add_argument("--heartbeat", type=_positive_int, default=60,
                        help="seconds between heartbeats of a running trial; a trial silent for "
                        "twice this is failed and retried (default: 60)")
    search.add_argument("--quiet", action="store_true", help="print only the final front")

    front = commands.add_parser("front", help="print the Pareto front")
    storage_options(front)
    front.add_argument("--format", choices=("table", "json", "csv"), default="table")
    front.add_argument("--explain", action="store_true",
                       help="also show which op and skip type win at each downsampling point")

    export = commands.add_parser("export", help="write Pareto-optimal trials as .keras files")
    storage_options(export)
    export.add_argument("--out", required=True, help="output directory")
    export.add_argument("--trial", type=_non_negative_int, action="append", dest="trials",
                        help="export this trial (repeatable; default: the Pareto front)")
    export.add_argument("--overwrite", action="store_true", help="replace existing files")
    export.add_argument("--artifacts", default=None,
                        help="the study's artifact folder (default: beside a SQLite or journal "
                        "file, or where the search recorded it)")
    export.add_argument("--retrain-epochs", type=_positive_int, default=None, metavar="E",
                        help="retrain each model from scratch on train+val for E epochs, test it "
                        "once on the held-out test split, and write test_accuracy and Kendall's "
                        "tau (search vs test ranking) into manifest.json")

    dashboard = commands.add_parser("dashboard", help="serve optuna-dashboard on the storage")
    storage_options(dashboard, study=False)
    dashboard.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    dashboard.add_argument("--port", type=_port, default=8080,
                           help="port (default: 8080; 0 picks a free one)")
    dashboard.add_argument("--artifacts", default=None, help="artifact store directory")

    report = commands.add_parser("report", help="write an HTML report with figures",
                                 description="Write report.html (figures embedded), the figures "
                                 "as PNG and answer.json into --out.")
    storage_options(report)
    report.add_argument("--out", required=True, help="output directory")
    report.add_argument("--overwrite", action="store_true", help="replace existing files")
    report.add_argument("--artifacts", default=None,
                        help="the study's artifact folder (default: beside a SQLite or journal "
                        "file, or where the search recorded it)")

    space = commands.add_parser("space", help="describe a search space and the catalogue")
    space.add_argument("--space", default=None, help="preset or space file (default: default)")
    space.add_argument("--format", choices=("text", "json"), default="text")

    flops = commands.add_parser("flops", help="FLOPs, MACs and params of one architecture")
    flops.add_argument("key", help="architecture key, e.g. conv3:16x1/max+projection:32x1")
    flops.add_argument("--input-shape", type=_input_shape, default=(8, 8, 1),
                       help="HxWxC of one image (default: 8x8x1, digits)")
    flops.add_argument("--classes", type=_positive_int, default=10, help="classes (default: 10)")
    flops.add_argument("--verify", action="store_true",
                       help="also count with TensorFlow's profiler and compare")
    flops.add_argument("--format", choices=("text", "json"), default="text")

    latency = commands.add_parser(
        "latency", help="measured (and predicted) inference latency of one architecture",
        description="Measure one architecture's inference latency on this machine (warm-up, "
        "then the median and interquartile range of --runs timed calls, --repeats times; "
        "threads pinned), beside its FLOPs and the per-kernel model's prediction.")
    latency.add_argument("key", help="architecture key, e.g. conv3:16x1/max+projection:32x1, "
                         "or a .keras model file (measured only)")
    latency.add_argument("--input-shape", type=_input_shape, default=(8, 8, 1),
                         help="HxWxC of one input (default: 8x8x1, the digits data)")
    latency.add_argument("--classes", type=_positive_int, default=10,
                         help="classes (default: 10)")
    latency.add_argument("--input-scale", type=float, default=1.0,
                         help="the model's input scaling, as the data set gives it (digits: "
                         "0.0625; default 1: none)")
    latency.add_argument("--input-offset", type=float, default=0.0,
                         help="the model's input offset (default 0)")
    latency.add_argument("--batch-size", type=int, default=1, help="batch size (default: 1)")
    latency.add_argument("--runtime", default="keras",
                         help="keras (default: a tf.function) or tflite (TensorFlow's converter, "
                         "LiteRT's interpreter)")
    latency.add_argument("--threads", type=_positive_int, default=1,
                         help="threads the runtime may use (default: 1)")
    latency.add_argument("--runs", type=_positive_int, default=100,
                         help="timed calls per repeat, of the model and of any kernel or "
                         "calibration model measured into the table (default: 100)")
    latency.add_argument("--repeats", type=_positive_int, default=3,
                         help="repeats of the timed series (default: 3); a measurement whose "
                         "repeat medians disagree by more than 10%% is taken again, up to "
                         "twice, and the most stable one kept")
    latency.add_argument("--warmup", type=_non_negative_int, default=10,
                         help="untimed calls first (default: 10)")
    latency.add_argument("--latency-tolerance", type=_positive_float, default=DEFAULT_TOLERANCE,
                         help="refuse the kernel table when a kernel's repeat medians disagree "
                         "by more than this share (default: 0.25)")
    latency.add_argument("--space", default=None,
                         help="also measure every kernel of this space (preset or file) into "
                         "the table and calibrate it on 20 of the space's architectures, for "
                         "searches with --cost latency")
    latency.add_argument("--latency-table", default=None,
                         help="the kernel table file to use and fill (default: this machine's "
                         "cache file)")
    latency.add_argument("--no-predict", action="store_true",
                         help="skip the per-kernel prediction (it measures missing kernels "
                         "into this machine's cache)")
    latency.add_argument("--format", choices=("text", "json"), default="text")
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("poolnas")
    except Exception:  # not installed as a distribution
        return "unknown"


# ---------------------------------------------------------------------- formatting
def format_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain aligned text table; ``columns`` are (key, header)."""
    cells = [[h for _, h in columns]] + [
        ["-" if r.get(k) is None else str(r[k]) for k, _ in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _front_rows(trials, model: Any = None) -> list[dict[str, Any]]:
    """Rows of the front (:func:`~poolnas.search.reported_front` of ``trials``): the raw
    record of each trial, the accuracy model's posterior mean, sd and ``p_front`` of its
    architecture (None without a model), and ``front_by``: whether it is on the raw front, the
    model's or both."""
    rows = []
    for trial, on in reported_front(trials, model):
        record = trial_record(trial, model)
        record["front_by"] = on
        record["front_by_text"] = front_by_text(on)
        estimate = (None if model is None else
                    model.estimate(trial.user_attrs.get(TrialAttrs.ARCHITECTURE)))
        record["model_text"] = (None if estimate is None else
                                f"{estimate.mean:.4f} ± {estimate.sd:.4f}")
        record["p_front_text"] = None if estimate is None else f"{estimate.p_front:.2f}"
        std = record["accuracy_std"]
        # With repeats the accuracy is a mean: its spread is shown, a zero one too.
        repeated = len(trial.user_attrs.get(TrialAttrs.ACCURACIES) or ()) > 1
        record["accuracy_text"] = f"{record['accuracy']:.4f}" + (
            f" ± {std or 0.0:.4f}" if repeated else "")
        record["flops_text"] = flops_text(record["flops"])
        record["macs_text"] = flops_text(record["macs"])
        latency = record.get("latency_ms")
        record["latency_text"] = "-" if latency is None else f"{latency:.3f}"
        rows.append(record)
    return rows


_FRONT_COLUMNS = (("trial", "trial"), ("accuracy_text", "accuracy"),
                  ("model_text", "model mean ± sd"), ("p_front_text", "p_front"),
                  ("front_by_text", "front"),
                  ("flops_text", "FLOPs"),
                  ("macs_text", "MACs"), ("params", "params"), ("architecture", "architecture"))


def _front_columns(rows: list[dict[str, Any]]) -> Sequence[tuple[str, str]]:
    """The front's columns: the predicted latency beside FLOPs when the trials have it."""
    if not any(r.get("latency_ms") is not None for r in rows):
        return _FRONT_COLUMNS
    after = [key for key, _ in _FRONT_COLUMNS].index("flops_text") + 1
    return (*_FRONT_COLUMNS[:after], ("latency_text", "ms"), *_FRONT_COLUMNS[after:])


# ---------------------------------------------------------------------- commands
def _print_report(r: Any) -> None:
    """The progress line of one finished trial (a :class:`~poolnas.search.TrialReport`).

    Its front and best accuracy are raw single measurements (the model's numbers, with their
    error bars, come in the table at the end and from ``poolnas front``): said so on the line.
    """
    accuracy = "-" if r.accuracy is None else f"{r.accuracy:.4f}"
    best = "-" if r.best_accuracy is None else f"{r.best_accuracy:.4f}"
    flops = "FLOPs -" if r.flops is None else f"{flops_text(r.flops)}FLOPs"
    if r.latency_ms is not None:
        flops += f"  {r.latency_ms:.3f} ms"
    note = f"  ({r.note})" if r.note else ""
    print(f"[{r.done}/{r.total}] trial {r.number} {r.state}: acc {accuracy}  "
          f"{flops}  {r.seconds:.1f}s  {r.key}{note}  | raw front {r.front_size},"
          f" best observed acc {best}", flush=True)


def _say(what: str) -> None:
    """What a slow start-up step is doing, on the progress stream."""
    print(f"poolnas: {what}", flush=True)


def _say_aside(what: str) -> None:
    """:func:`_say` on stderr, where stdout carries a result (``--format json``)."""
    print(f"poolnas: {what}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _keras_home_as_it_was() -> Iterator[None]:
    """A search refused at start writes nothing: not even the ``keras.json`` (and its folder)
    that importing Keras creates in ``$KERAS_HOME`` or ``~/.keras``."""
    home = keras_home()
    made = [p for p in (home, home / "keras.json") if not p.exists()]
    try:
        yield
    except (PoolnasError, KeyboardInterrupt):
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        raise


def _cmd_search(args: argparse.Namespace) -> int:
    with _keras_home_as_it_was():
        return _search(args)


def _search(args: argparse.Namespace) -> int:
    keras_tuner = args.engine == "keras-tuner"
    if not keras_tuner and (args.tuner is not None or args.tuner_dir is not None):
        raise PoolnasError("--tuner and --tuner-dir are options of --engine keras-tuner")
    if keras_tuner and not args.reevaluate:
        raise PoolnasError("--no-reevaluate is an option of --engine optuna's surrogate sampler")
    if keras_tuner and (args.min_epochs, args.reduction_factor, args.epoch_budget) != (
            None, None, None):
        raise PoolnasError("--min-epochs, --reduction-factor and --epoch-budget are options of "
                           "--engine optuna (KerasTuner's multi-fidelity search is --tuner "
                           "hyperband)")
    if keras_tuner and args.workers > 1:
        raise PoolnasError("--engine keras-tuner runs one KerasTuner tuner; leave out --workers")
    if keras_tuner and args.parallel not in (None, 1):
        raise PoolnasError("--parallel is an option of --engine optuna; KerasTuner trains one "
                           "trial at a time")
    # The configuration is checked before TensorFlow is imported: bad input is refused at
    # once, with nothing but the error line.
    data_options = {k: v for k, v in (("val_fraction", args.val_fraction),
                                      ("subset", args.subset),
                                      ("image_size", args.image_size)) if v is not None}
    config = SearchConfig(
        study=args.study, storage=args.storage, trials=args.trials, timeout=args.timeout,
        sampler=args.sampler, space=SearchSpace.resolve(args.space), dataset=args.dataset,
        data_options=data_options,
        budget=Budget(epochs=args.epochs, batch_size=args.batch_size,
                      learning_rate=args.learning_rate, optimizer=args.optimizer,
                      repeats=args.repeats, augment=args.augment),
        seed=args.seed, max_flops=args.max_flops, cost=args.cost,
        max_latency=args.max_latency, latency_runtime=args.latency_runtime,
        latency_tolerance=args.latency_tolerance, latency_table=args.latency_table,
        artifacts=args.artifacts,
        heartbeat=args.heartbeat, reevaluate=args.reevaluate,
        parallel=1 if keras_tuner else args.parallel,
        min_epochs=args.min_epochs, reduction_factor=args.reduction_factor,
        epoch_budget=args.epoch_budget,
    )
    say = None if args.quiet else _say
    with announce_if_slow("importing TensorFlow", say):
        quiet_tensorflow()
    threads = thread_split(args.workers)
    cores = available_cores()
    if args.workers > cores:
        print(f"poolnas: note: {args.workers} workers share {_count(cores, 'core')}; each "
              f"gets one thread and they slow each other down (--workers {cores} uses them all)",
              file=sys.stderr, flush=True)
    if args.workers > 1:
        configure_threads(threads)  # Before TensorFlow runs anything in this process.
    report = None if args.quiet else _print_report
    if keras_tuner:
        from poolnas.search.keras_tuner import KerasTunerRunner

        runner = KerasTunerRunner(config, tuner=args.tuner or "random", directory=args.tuner_dir,
                                  report=report, hooks=DASHBOARD_HOOKS, announce=say)
        proposer = f"KerasTuner {runner.tuner_name} tuner"
    else:
        runner = SearchRunner(config, report=report, hooks=DASHBOARD_HOOKS, announce=say)
        sampler = getattr(runner.study.sampler, "inner", runner.study.sampler)
        proposer = f"sampler {type(sampler).__name__} (--sampler {config.sampler})"
        if config.schedule is not None:
            proposer += (f"; rungs of {', '.join(map(str, config.schedule.rungs))} epochs, "
                         f"η = {config.schedule.reduction_factor}")
    if not args.quiet:
        data = runner.data
        done = runner.complete_trials()
        action = "resuming" if done else "starting"
        print(f"{action} study {config.study!r} in {runner.handle.display_url}: "
              f"{done}/{config.trials} "
              f"trials done; data {config.dataset} {tuple(data.input_shape)} x "
              f"{len(data.y_train)} train / {len(data.y_val)} val, {data.num_classes} classes; "
              f"space of {config.space.size:,} architectures; {proposer}"
              + (f"; {args.workers} workers x {threads} threads" if args.workers > 1 else "")
              + (f"; {runner.parallel} trials per fused step" if runner.parallel > 1 else ""),
              flush=True)
    run_with_workers(runner, args.workers - 1, threads=threads, report=report)
    done = runner.complete_trials()
    if done < config.trials and config.timeout is not None:
        print(f"\n--timeout {config.timeout:g} s reached: {done}/{config.trials} trials complete; "
              "run the same command again to continue the study", flush=True)
    trials = runner.study.get_trials(deepcopy=False)
    rows = _front_rows(trials, fit_accuracy_model(runner.study, trials))
    print(f"\nPareto front of study {config.study!r} ({_count(len(rows), 'architecture')}; "
          "front: on the raw front, the model's, or both):")
    print(format_table(rows, _front_columns(rows)))
    return 0


def _count(n: int, noun: str) -> str:
    """``1 architecture``, ``3 architectures``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _cmd_front(args: argparse.Namespace) -> int:
    if args.explain and args.format == "csv":
        raise PoolnasError("--explain prints a table; use it with --format table or json")
    _, study = open_study(args.storage, args.study)
    trials = study.get_trials(deepcopy=False)
    model = fit_accuracy_model(study, trials)
    rows = _front_rows(trials, model)
    explained = None
    if args.explain:
        explained = analyse_study(study, trials, model=model)
    if args.format == "json":
        keys = ("trial", "architecture", "accuracy", "accuracy_std", "accuracy_mean",
                "accuracy_sd", "p_front", "front_by", "flops", "latency_ms", "macs", "params",
                "epochs", "train_seconds")
        records = [{k: r[k] for k in keys} for r in rows]
        if explained is not None:
            print(json.dumps({"front": records, "explain": explained.as_dict()}, indent=2))
        else:
            print(json.dumps(records, indent=2))
    elif args.format == "csv":
        buffer = io.StringIO()
        keys = ["trial", "architecture", "accuracy", "accuracy_std", "accuracy_mean",
                "accuracy_sd", "p_front", "front_by", "flops", "latency_ms", "macs", "params"]
        writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        print(buffer.getvalue(), end="")
    elif not rows:
        print(f"study {args.study!r} has no complete feasible trial yet")
    else:
        print(format_table(rows, _front_columns(rows)))
    if explained is not None and args.format == "table":
        print()
        print(answer_text(explained))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    handle, study = open_study(args.storage, args.study, artifacts=args.artifacts,
                               announce=_say)
    if args.retrain_epochs is not None:
        quiet_tensorflow()

    def progress(retrained: Any, done: int, total: int) -> None:
        print(f"retrained trial {retrained.trial} ({done}/{total}): test acc "
              f"{retrained.test_accuracy:.4f}  {retrained.seconds:.1f}s", flush=True)

    manifest = export_trials(handle, study, args.out, numbers=args.trials,
                             overwrite=args.overwrite, retrain_epochs=args.retrain_epochs,
                             progress=progress)
    for model in manifest["models"]:
        test = model.get("test_accuracy")
        tested = "" if test is None else f"  test acc {test:.4f}"
        print(f"{os.path.join(args.out, model['file'])}  acc {model['accuracy']:.4f}{tested}  "
              f"{flops_text(model['flops'])}FLOPs  {model['architecture']}")
    print(f"{os.path.join(args.out, MANIFEST)}  ({len(manifest['models'])} models)")
    if args.retrain_epochs is not None:
        tau = manifest["kendall_tau"]
        print(f"search vs test accuracy ranking over {len(manifest['models'])} models: "
              + ("Kendall tau undefined (needs two models whose accuracies differ)" if tau is None
                 else f"Kendall tau {tau:+.3f}"))
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    return serve(args.storage, host=args.host, port=args.port, artifacts=args.artifacts)


def _cmd_report(args: argparse.Namespace) -> int:
    handle, study = open_study(args.storage, args.study, artifacts=args.artifacts,
                               announce=_say)
    with handle:
        for path in write_report(handle, study, args.out, overwrite=args.overwrite):
            print(path)
    return 0


def _cmd_space(args: argparse.Namespace) -> int:
    space = SearchSpace.resolve(args.space)
    if args.format == "json":
        print(json.dumps({**space.to_dict(), "size": space.size}, indent=2))
        return 0
    print(space.describe())
    print()
    for title, entries in (("downsampling ops", OPS), ("skip types", SKIPS), ("merges", MERGES),
                           ("stems", STEMS)):
        print(f"{title}:")
        for entry in entries.values():
            print(f"  {entry.name:<16} {entry.description}  [{entry.reference}]")
    return 0


def _cmd_flops(args: argparse.Namespace) -> int:
    arch = Architecture.from_key(args.key)
    check_input_shape(arch, args.input_shape)
    quiet_tensorflow()
    model = build_model(arch, args.input_shape, args.classes)
    cost = count_cost(model)
    points = point_costs(arch, args.input_shape, args.classes)
    result: dict[str, Any] = {"architecture": arch.key, "input_shape": list(args.input_shape),
                              "classes": args.classes, "flops": cost.flops, "macs": cost.macs,
                              "params": cost.params,
                              "points": [p.as_dict() for p in points]}
    if args.verify:
        result["profiler_flops"] = profiler_flops(model)
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    print(f"{arch.key}\non {'x'.join(map(str, args.input_shape))} inputs, {args.classes} classes, "
          "batch 1 (TensorFlow profiler convention)")
    print(f"  FLOPs  {cost.flops:,} ({flops_text(cost.flops)})")
    print(f"  MACs   {cost.macs:,} ({flops_text(cost.macs)})")
    print(f"  params {cost.params:,}")
    for p in points:
        print(f"  {p.explain()}")
    if args.verify:
        same = "equal" if result["profiler_flops"] == cost.flops else "DIFFERENT"
        print(f"  TensorFlow profiler: {result['profiler_flops']:,} FLOPs ({same})")
    return 0


def _cmd_latency(args: argparse.Namespace) -> int:
    runtime = check_runtime(args.runtime)
    if args.batch_size < 1:
        raise PoolnasError(f"--batch-size must be at least 1, got {args.batch_size}")
    from_file = args.key.endswith(".keras")
    arch = None if from_file else Architecture.from_key(args.key)
    if arch is not None:
        check_input_shape(arch, args.input_shape)
    elif not os.path.isfile(args.key):
        raise PoolnasError(f"no model file {args.key}")
    quiet_tensorflow()
    warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
    threads = pin_threads(args.threads) if runtime == "keras" else args.threads
    if arch is None:
        import keras

        try:
            model = keras.saving.load_model(args.key)
        except Exception as error:  # noqa: BLE001 - an unreadable file is the user's
            raise PoolnasError(f"cannot load {args.key}: {error}") from None
        args.no_predict = True
    else:
        model = build_model(arch, args.input_shape, args.classes, input_scale=args.input_scale,
                            input_offset=args.input_offset)
    try:
        cost = count_cost(model)
    except PoolnasError:
        cost = None  # A file with layers outside poolnas' FLOPs convention.
    timing = measure_stable(model, runtime, batch_size=args.batch_size, threads=args.threads,
                            warmup=args.warmup, runs=args.runs, repeats=args.repeats)
    result: dict[str, Any] = {
        "architecture": args.key if arch is None else arch.key,
        "input_shape": [int(d) for d in model.inputs[0].shape[1:]],
        "classes": args.classes, "batch_size": args.batch_size, "runtime": runtime,
        "runtime_version": runtime_description(runtime), "threads": threads,
        "machine": machine_name(), "warmup": args.warmup, **timing.as_dict(),
        "flops": None if cost is None else cost.flops,
        "macs": None if cost is None else cost.macs,
        "params": model.count_params()}
    if not args.no_predict and arch is not None:
        scaling = {"input_scale": args.input_scale, "input_offset": args.input_offset}
        kernels = architecture_kernels(arch, args.input_shape, args.classes, **scaling)
        path = args.latency_table or default_table_path(runtime, batch_size=args.batch_size,
                                                        threads=args.threads)
        shared = {"batch_size": args.batch_size, "threads": args.threads, "path": path,
                  "tolerance": args.latency_tolerance, "warmup": args.warmup,
                  "runs": args.runs, "repeats": args.repeats}
        if args.space is not None:
            table = space_table(SearchSpace.resolve(args.space), args.input_shape, args.classes,
                                runtime, extra=kernels, announce=_say_aside, **scaling,
                                **shared)
            if table.missing(kernels):  # KEY is not of that space: its kernels, uncalibrated
                table = LatencyTable.load(path)
        else:
            table = cached_table(kernels, runtime, **shared)
        predicted = table.predict(kernels)
        calibration = table.calibration
        result.update(predicted_ms=predicted, kernels=len(kernels), table=str(path),
                      table_kernels=len(table.kernels), table_max_spread=table.max_spread,
                      calibration=None if calibration is None else calibration.as_dict())
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['architecture']}\non {'x'.join(map(str, result['input_shape']))} inputs, "
          f"batch {args.batch_size}; {result['runtime_version']}, "
          f"{threads or 'TensorFlow default'} thread(s), "
          f"{args.warmup} warm-up calls, {args.repeats} x {args.runs} timed calls")
    print(f"  latency   {timing.median_ms:.4f} ms median, IQR {timing.iqr_ms:.4f} ms")
    spread = ", ".join(f"{v:.4f}" for v in timing.repeat_medians_ms)
    print(f"  stability repeat medians {spread} ms: spread {timing.spread:.1%}"
          + ("  (unstable: a busy machine; measure again)" if timing.spread > DEFAULT_TOLERANCE
             else ""))
    if "predicted_ms" in result:
        error = result["predicted_ms"] / timing.median_ms - 1
        calibration = result["calibration"]
        how = ("uncalibrated: --space SPACE calibrates it on the space's architectures"
               if calibration is None else
               f"calibrated on {calibration['architectures']} architectures of the space")
        print(f"  predicted {result['predicted_ms']:.4f} ms from {result['kernels']} kernels "
              f"({error:+.1%} vs measured; {how}; table {result['table']})")
    if cost is not None:
        print(f"  FLOPs     {cost.flops:,} ({flops_text(cost.flops)})")
    return 0


_COMMANDS = {"search": _cmd_search, "front": _cmd_front, "export": _cmd_export,
             "dashboard": _cmd_dashboard, "report": _cmd_report, "space": _cmd_space,
             "flops": _cmd_flops, "latency": _cmd_latency}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``poolnas`` console script."""
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_interrupted_trials()
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    # A search handles SIGTERM like Ctrl-C from its first second (its start then leaves nothing
    # half made); the dashboard has handlers of its own.
    signals = interrupt_on_signals() if args.command == "search" else contextlib.nullcontext()
    try:
        with signals:
            return _COMMANDS[args.command](args)
    except PoolnasError as error:
        print(f"poolnas: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return _interrupted()
    except Exception:
        if not signal_arrived():
            raise
        return _interrupted()  # A library reported the interrupt as an error of its own.


def _interrupted() -> int:
    print("poolnas: interrupted; finished trials are saved (run the same command to resume)",
          file=sys.stderr)
    return EXIT_INTERRUPTED
