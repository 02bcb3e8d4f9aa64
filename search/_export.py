"""Export trained trials as ``.keras`` files plus a ``manifest.json``.

The trained weights were saved as Optuna artifacts during the search, so export retrains
nothing: it copies each model out of the artifact store. Each file loads with plain
``keras.saving.load_model(path)`` (``safe_mode`` on, no custom objects).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from poolnas.search._pareto import pareto_front
from poolnas.search._study import STUDY_ATTR
from poolnas.spaces import PoolnasError

if TYPE_CHECKING:
    import optuna

    from poolnas.search._storage import StorageHandle

MANIFEST = "manifest.json"


def select_trials(study: optuna.Study, numbers: list[int] | None) -> list[optuna.trial.FrozenTrial]:
    """The chosen trials (by number), or the Pareto front when ``numbers`` is empty.

    Raises:
        PoolnasError: A number is not a trial of the study, or that trial has no trained model.
    """
    import optuna

    trials = study.get_trials(deepcopy=False)
    if not numbers:
        chosen = pareto_front(trials)
        if not chosen:
            raise PoolnasError(f"study {study.study_name!r} has no complete feasible trial yet")
        return chosen
    by_number = {t.number: t for t in trials}
    chosen = []
    for number in dict.fromkeys(numbers):
        trial = by_number.get(number)
        if trial is None:
            raise PoolnasError(
                f"study {study.study_name!r} has no trial {number} (trials 0-{len(trials) - 1})"
            )
        if trial.state != optuna.trial.TrialState.COMPLETE:
            raise PoolnasError(f"trial {number} is {trial.state.name.lower()}, not complete")
        if "model_artifact" not in trial.user_attrs:
            why = trial.user_attrs.get("infeasible", "no model was saved")
            raise PoolnasError(f"trial {number} has no trained model ({why})")
        chosen.append(trial)
    return chosen


def trial_record(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The manifest/front fields of one trial."""
    attrs = trial.user_attrs
    return {
        "trial": trial.number,
        "architecture": attrs.get("architecture"),
        "accuracy": float(trial.values[0]),
        "accuracy_std": attrs.get("accuracy_std"),
        "flops": int(trial.values[1]),
        "macs": attrs.get("macs"),
        "params": attrs.get("params"),
        "epochs": attrs.get("epochs"),
        "train_seconds": attrs.get("train_seconds"),
    }


def export_trials(
    handle: StorageHandle,
    study: optuna.Study,
    out_dir: str | Path,
    *,
    numbers: list[int] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the chosen (default: Pareto-optimal) trials' models and a manifest into ``out_dir``.

    Nothing is overwritten unless ``overwrite``: if a target file exists the export stops before
    writing anything. Files are written to a temporary name and renamed into place.

    Returns:
        The manifest (also written as ``out_dir/manifest.json``).

    Raises:
        PoolnasError: Bad trial numbers, missing artifacts, existing files, unwritable folder.
    """
    import optuna

    settings = study.user_attrs[STUDY_ATTR]
    chosen = select_trials(study, numbers)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PoolnasError(f"--out {str(out)!r} exists and is not a directory")
    names = [f"trial{t.number:05d}.keras" for t in chosen]
    if not overwrite:
        clashes = [n for n in [*names, MANIFEST] if (out / n).exists()]
        if clashes:
            raise PoolnasError(
                f"{str(out)!r} already holds {', '.join(clashes)}; choose an empty --out or pass "
                "--overwrite"
            )
    if not out.parent.exists():
        raise PoolnasError(f"the parent directory of --out {str(out)!r} does not exist")
    store = handle.artifact_store()
    try:
        out.mkdir(exist_ok=True)
        models = []
        for trial, name in zip(chosen, names):
            artifact = trial.user_attrs["model_artifact"]
            partial = out / f".{name}.partial"
            try:
                optuna.artifacts.download_artifact(
                    artifact_store=store, file_path=str(partial), artifact_id=artifact
                )
            except Exception as error:  # the store's own errors vary by backend
                partial.unlink(missing_ok=True)
                raise PoolnasError(
                    f"the model of trial {trial.number} (artifact {artifact}) cannot be read from "
                    f"the artifact store {handle.artifact_dir}: {error}"
                ) from None
            os.replace(partial, out / name)
            models.append({"file": name, **trial_record(trial)})
    except OSError as error:
        raise PoolnasError(f"cannot write to {str(out)!r}: {error.strerror or error}") from None

    manifest = {
        "study": study.study_name,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": settings["dataset"],
        "data_options": settings["data_options"],
        "input_shape": settings["input_shape"],
        "num_classes": settings["num_classes"],
        "input_dtype": "raw images as the data set stores them (the model rescales)",
        "flops_convention": "TensorFlow profiler, frozen inference graph, batch 1",
        "models": models,
    }
    write_json_atomically(out / MANIFEST, manifest)
    return manifest


def write_json_atomically(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

