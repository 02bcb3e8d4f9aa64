"""A study's settings: what its trials depend on, stored once, checked on every resume.

One place creates or resumes a poolnas study (:func:`create_or_resume`), for the Optuna loop,
the KerasTuner engine and :class:`~poolnas.search.OptunaOracle` alike. A poolnas study
maximizes accuracy and minimizes FLOPs (:data:`METRIC_NAMES`), or predicted latency in ms when
its settings say ``cost: latency`` (metric ``latency_ms``, :func:`metric_name`; the kernel table
is then stored in ``latency_table``, with ``max_latency`` and ``latency_runtime``), and holds its
settings under
the study user attr :data:`~poolnas.search._trial_attrs.STUDY_ATTR`:

``dataset``, ``data_options`` and ``seed`` (which fixes the split) reload the same data for
``export --retrain-epochs``; ``budget``, ``space``, ``input_shape``, ``num_classes``,
``input_scale``, ``input_offset`` and ``max_flops`` say what a trial is; ``engine`` names what
proposes the candidates when it is not Optuna's sampler (``keras-tuner:random``, …);
``reference_flops`` fixes the hypervolume's reference point; ``artifacts`` is where the search
that created it stored trained models (reading commands use it when it is reachable). A resume
whose settings differ is refused, naming the option that differs, instead of mixing
incomparable trials.

:func:`trial_seed` is the one formula for the training seed of a trial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from poolnas.search._storage import StorageHandle, load_study, open_storage
from poolnas.search._trial_attrs import STUDY_ATTR, TrialAttrs
from poolnas.spaces import PoolnasError

#: The study's two objectives, as ``study.set_metric_names`` labels them for every tool.
METRIC_NAMES = ("accuracy", "flops")
DIRECTIONS = (optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE)
#: Settings that must match for a resume (``seed`` is checked apart: older studies lack it).
RESUME_KEYS = ("engine", "dataset", "data_options", "budget", "space", "max_flops", "cost",
               "max_latency", "latency_runtime", "rungs")
#: The command-line options behind each setting, for the refusal's message.
_OPTIONS = {
    "engine": "--engine/--tuner",
    "dataset": "--dataset",
    "data_options": "--val-fraction/--subset/--image-size",
    "space": "--space",
    "max_flops": "--max-flops",
    "cost": "--cost",
    "max_latency": "--max-latency",
    "latency_runtime": "--latency-runtime",
    "rungs": "--min-epochs and --reduction-factor",
    "input_shape": "data",
    "num_classes": "data",
    "input_scale": "data",
    "input_offset": "data",
}


def trial_seed(seed: int, number: int) -> int:
    """The training seed of trial ``number``'s first repeat in a study searched with ``seed``."""
    return seed * 100_003 + number


def as_json(value: Any) -> Any:
    """``value`` as JSON gives it back (a tuple as a list), so stored and new compare alike."""
    return json.loads(json.dumps(value, default=str))


def check_resume(name: str, stored: Mapping[str, Any], wanted: Mapping[str, Any],
                 keys: Sequence[str] = RESUME_KEYS, *, cli: bool = True) -> None:
    """Refuse to resume study ``name`` when a setting of ``keys`` differs.

    Args:
        name: The study.
        stored: Its stored settings.
        wanted: This run's.
        keys: The settings that must match.
        cli: Word the refusal for the command line (the option to keep, ``--study``); False
            for a library caller (``study_name``).

    Raises:
        PoolnasError: Names the setting that differs, both values and, on the command line,
            the option behind it.
    """
    wanted = as_json(dict(wanted))
    other = "use a new --study" if cli else "use another study_name"
    for key in keys:
        old, new = stored.get(key), wanted.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            differ = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            what = "; ".join(f"{k} {old.get(k)!r} (here {new.get(k)!r})" for k in differ)
            option = (", ".join(f"--{k.replace('_', '-')}" for k in differ)
                      if key == "budget" else _OPTIONS.get(key, key))
        else:
            what, option = f"{old!r} (here {new!r})", _OPTIONS.get(key, key)
        keep = f"resume it with the same {option} or " if cli else ""
        raise PoolnasError(
            f"study {name!r} was created with a different {key.replace('_', ' ')}: {what}; "
            f"{keep}{other}"
        )
    # Studies made before the seed was stored resume with any seed.
    if "seed" in stored and "seed" in wanted and stored["seed"] != wanted["seed"]:
        raise PoolnasError(
            f"study {name!r} was created with {'--seed' if cli else 'seed'} {stored['seed']} "
            f"(the seed fixes the data split); resume it with the same seed or {other}"
        )


def _is_ours(study: optuna.Study) -> bool:
    return tuple(study.directions) == DIRECTIONS


def create_or_resume(handle: StorageHandle, name: str, wanted: Mapping[str, Any] | None, *,
                     new_costs: Callable[[], Mapping[str, Any]] | None = None,
                     keys: Sequence[str] = RESUME_KEYS,
                     sampler: optuna.samplers.BaseSampler | None = None,
                     cli: bool = True) -> optuna.Study:
    """Resume poolnas study ``name`` (checking ``wanted`` against its settings) or create it.

    Safe when several workers start at once: one creates it, the others resume it.

    Args:
        handle: The opened storage.
        name: The study name.
        wanted: The settings this run would store; None to resume only (an existing study's
            settings are then taken as they are).
        new_costs: Called only when the study is created: what it stores about its costs
            (``reference_flops``).
        keys: The settings that must match to resume.
        sampler: The study's sampler.
        cli: Word refusals for the command line (see :func:`check_resume`).

    Raises:
        PoolnasError: The study exists and is not poolnas', or its settings differ; or it does
            not exist and ``wanted`` is None.
    """
    storage = handle.optuna_storage
    if name in {s.study_name for s in storage.get_all_studies()}:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        stored = study.user_attrs.get(STUDY_ATTR)
        if stored is None and _is_ours(study) and not study.get_trials(deepcopy=False):
            pass  # Another worker is creating it this moment: finish it below.
        elif stored is None or not _is_ours(study):
            raise PoolnasError(
                f"study {name!r} in {handle.display_url} was not created by poolnas; "
                + ("use a new --study" if cli else "use another study_name")
            )
        else:
            if wanted is not None:
                check_resume(name, stored, wanted, keys, cli=cli)
            return study
    if wanted is None:
        raise PoolnasError(f"there is no study {name!r} in {handle.display_url} to resume")
    settings = {**wanted, **(new_costs() if new_costs is not None else {})}
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler,
        directions=[d.name.lower() for d in DIRECTIONS],
        load_if_exists=True,  # another worker may create it at the same moment
    )
    try:
        study.set_metric_names([METRIC_NAMES[0], metric_name(settings)])
        if STUDY_ATTR not in study.user_attrs:
            study.set_user_attr(STUDY_ATTR, as_json(settings))
    except BaseException:
        # Interrupted half way: a study without settings is no poolnas study; remove it unless
        # another worker finished it meanwhile.
        with contextlib.suppress(Exception):
            if STUDY_ATTR not in optuna.load_study(study_name=name, storage=storage).user_attrs:
                optuna.delete_study(study_name=name, storage=storage)
        raise
    if study.user_attrs[STUDY_ATTR] != as_json(settings):
        check_resume(name, study.user_attrs[STUDY_ATTR], wanted, keys, cli=cli)
    return study


def metric_name(settings: Mapping[str, Any]) -> str:
    """The cost objective's metric name in a study of ``settings``: ``flops`` or
    ``latency_ms`` (settings ``cost: latency``)."""
    return "latency_ms" if settings.get("cost") == "latency" else "flops"


def stored_settings(handle: StorageHandle, name: str) -> dict[str, Any] | None:
    """The settings of poolnas study ``name`` in ``handle`` if it exists, else None."""
    storage = handle.optuna_storage
    for summary in storage.get_all_studies():
        if summary.study_name == name:
            return summary.user_attrs.get(STUDY_ATTR)
    return None


def create_or_resume_general(handle: StorageHandle, name: str, *, directions: Sequence[str],
                             metric_names: Sequence[str],
                             attrs: Mapping[str, Any]) -> optuna.Study:
    """Resume or create a plain Optuna study (a general KerasTuner search, not a poolnas one).

    Args:
        handle: The opened storage.
        name: The study name.
        directions: ``"maximize"``/``"minimize"`` per objective.
        metric_names: The objectives' names.
        attrs: Study user attrs set when missing (what made the study).

    Raises:
        PoolnasError: The study is a poolnas architecture study, or has other objectives.
    """
    study = optuna.create_study(study_name=name, storage=handle.optuna_storage,
                                directions=list(directions), load_if_exists=True)
    if STUDY_ATTR in study.user_attrs:
        raise PoolnasError(
            f"study {name!r} in {handle.display_url} is a poolnas architecture study; search a "
            "PoolNASHyperModel in it, or use another study_name for this KerasTuner space"
        )
    stored = [d.name.lower() for d in study.directions]
    names = study.metric_names
    if stored != list(directions) or (names is not None and list(names) != list(metric_names)):
        raise PoolnasError(
            f"study {name!r} in {handle.display_url} has the objectives "
            f"{names or stored}, not {list(metric_names)} ({list(directions)}); use another "
            "study_name or the study's objectives"
        )
    if names is None:
        study.set_metric_names(list(metric_names))
    for key, value in attrs.items():
        if key not in study.user_attrs:
            study.set_user_attr(key, as_json(value))
    return study


def settings_of(study: optuna.Study) -> dict[str, Any]:
    """The settings stored with a poolnas study."""
    return study.user_attrs[STUDY_ATTR]


def recorded_artifacts(handle: StorageHandle) -> Path | None:
    """The artifact folder the storage's poolnas studies recorded, when they agree on one and
    it is reachable from here (for a database server opened without ``--artifacts``)."""
    folders = set()
    for summary in handle.optuna_storage.get_all_studies():
        settings = summary.user_attrs.get(STUDY_ATTR)
        if isinstance(settings, dict) and isinstance(settings.get("artifacts"), str):
            folders.add(settings["artifacts"])
    if len(folders) == 1 and os.path.isdir(folder := folders.pop()):
        return Path(folder)
    return None


def _check_holds_models(study: optuna.Study, folder: Path) -> None:
    """Refuse an artifact folder that holds none of the study's trained models."""
    ids = [t.user_attrs[TrialAttrs.MODEL_ARTIFACT] for t in study.get_trials(deepcopy=False)
           if TrialAttrs.MODEL_ARTIFACT in t.user_attrs]
    if ids and not any((folder / str(i)).is_file() for i in ids):
        raise PoolnasError(
            f"--artifacts {str(folder)!r} holds none of the {len(ids)} models of study "
            f"{study.study_name!r} (another study's folder?); pass the folder its search used"
        )


def open_study(storage: str, study: str, *, artifacts: str | None = None,
               announce: Callable[[str], None] | None = None,
               ) -> tuple[StorageHandle, optuna.Study]:
    """Open an existing poolnas study to read it (nothing is created).

    Without ``artifacts``, the study is given the artifact folder its search recorded (settings
    ``artifacts``) when that folder is reachable from here, and ``announce`` is told so;
    otherwise the folder beside an SQLite or journal file, and for a database server reading
    its models asks for ``--artifacts``.

    Raises:
        PoolnasError: No such storage or study, or not a poolnas study.
    """
    if artifacts is not None and not os.path.isdir(artifacts):
        raise PoolnasError(f"--artifacts {artifacts!r} is not an existing folder; pass the folder "
                           "the search stored its models in")
    handle = open_storage(storage, create=False, artifacts=artifacts)
    loaded = load_study(handle, study)
    if STUDY_ATTR not in loaded.user_attrs:
        if str(loaded.user_attrs.get("engine", "")).startswith("keras-tuner:optuna-oracle"):
            raise PoolnasError(
                f"study {study!r} in {handle.display_url} is a KerasTuner search of a general "
                "space (not poolnas architectures): read it with optuna-dashboard or the "
                "tuner's get_best_trials/results_summary"
            )
        raise PoolnasError(f"study {study!r} in {handle.display_url} was not created by poolnas")
    if artifacts is not None:
        _check_holds_models(loaded, Path(artifacts))
    recorded = loaded.user_attrs[STUDY_ATTR].get("artifacts")
    if (artifacts is None and isinstance(recorded, str) and os.path.isdir(recorded)
            and Path(recorded) != handle.artifact_dir):
        handle = dataclasses.replace(handle, artifact_dir=Path(recorded))
        if announce is not None:
            announce(f"artifacts: {recorded} (recorded by the search; --artifacts overrides)")
    return handle, loaded
