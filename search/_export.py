"""Export trained trials as ``.keras`` files plus a ``manifest.json``.

The trained weights were saved as Optuna artifacts during the search, so by default export
retrains nothing: it copies each model out of the artifact store. ``--retrain-epochs E`` instead
trains each architecture afresh on train + validation and tests it
(:mod:`poolnas.search._retrain`). Each file loads with plain
``keras.saving.load_model(path)`` (``safe_mode`` on, no custom objects).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from poolnas.search._accuracy_model import fit_accuracy_model, model_fields
from poolnas.search._pareto import reported_front
from poolnas.search._retrain import kendall_tau, retrain_trials
from poolnas.search._trial_attrs import STUDY_ATTR, TrialAttrs
from poolnas.spaces import PoolnasError

if TYPE_CHECKING:
    from poolnas.search._retrain import Retrained
    from poolnas.search._storage import StorageHandle

MANIFEST = "manifest.json"


def select_trials(study: optuna.Study, numbers: list[int] | None, model: Any = None
                  ) -> list[optuna.trial.FrozenTrial]:
    """The chosen trials (by number), or the front when ``numbers`` is empty: the raw front
    and, with the study's accuracy ``model``, the model's front members it misses
    (:func:`~poolnas.search.reported_front`; those without a saved model are left out).

    Raises:
        PoolnasError: A number is not a trial of the study, or that trial has no trained model.
    """
    trials = study.get_trials(deepcopy=False)
    if not numbers:
        chosen = [t for t, on in reported_front(trials, model)
                  if on != "model" or TrialAttrs.MODEL_ARTIFACT in t.user_attrs]
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
        if TrialAttrs.MODEL_ARTIFACT not in trial.user_attrs:
            why = trial.user_attrs.get(TrialAttrs.INFEASIBLE, "no model was saved")
            raise PoolnasError(f"trial {number} has no trained model ({why})")
        chosen.append(trial)
    return chosen


def trial_record(trial: optuna.trial.FrozenTrial, model: Any = None) -> dict[str, Any]:
    """The manifest/front fields of one trial: its raw record and, from the study's accuracy
    model (:func:`~poolnas.search.fit_accuracy_model`), its architecture's posterior
    ``accuracy_mean``, ``accuracy_sd`` and ``p_front`` (None without a model)."""
    attrs = trial.user_attrs
    estimate = model_fields(model, attrs.get(TrialAttrs.ARCHITECTURE))
    return {
        "trial": trial.number,
        "architecture": attrs.get(TrialAttrs.ARCHITECTURE),
        "accuracy": float(trial.values[0]),
        "accuracy_std": attrs.get(TrialAttrs.ACCURACY_STD),
        "accuracy_mean": estimate["accuracy_mean"],
        "accuracy_sd": estimate["accuracy_sd"],
        "p_front": estimate["p_front"],
        "flops": int(attrs.get(TrialAttrs.FLOPS, trial.values[1])),
        "latency_ms": attrs.get(TrialAttrs.LATENCY_MS),
        "macs": attrs.get(TrialAttrs.MACS),
        "params": attrs.get(TrialAttrs.PARAMS),
        "epochs": attrs.get(TrialAttrs.EPOCHS),
        "train_seconds": attrs.get(TrialAttrs.TRAIN_SECONDS),
    }


def export_trials(
    handle: StorageHandle,
    study: optuna.Study,
    out_dir: str | Path,
    *,
    numbers: list[int] | None = None,
    overwrite: bool = False,
    retrain_epochs: int | None = None,
    progress: Callable[[Retrained, int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the chosen (default: Pareto-optimal) trials' models and a manifest into ``out_dir``.

    Nothing is overwritten unless ``overwrite``: if a target file exists the export stops before
    writing anything. With ``overwrite``, the models of an earlier export that the new manifest
    does not list are removed, so the folder holds exactly what its manifest says. Files are
    written to a temporary name and renamed into place.

    By default the models are the search's trained models (``"weights": "search"``). With
    ``retrain_epochs``, each architecture is first trained afresh on train + validation and
    scored once on the test split (:func:`~poolnas.search._retrain.retrain_trials`); the files
    are then the retrained models, each model's ``test_accuracy`` is written beside its search
    ``accuracy``, and ``kendall_tau`` says how well the search accuracies ranked them. All the
    retraining happens before anything is written.

    Args:
        handle: The study's storage.
        study: The study.
        out_dir: Folder to write into (created; its parent must exist).
        numbers: Trials to export (default: the Pareto front).
        overwrite: Replace existing files.
        retrain_epochs: Retrain each model for this many epochs and test it (default: export
            the search's models as they are).
        progress: With ``retrain_epochs``: called after each retraining as
            ``progress(retrained, done, total)``.

    Returns:
        The manifest (also written as ``out_dir/manifest.json``).

    Raises:
        PoolnasError: Bad trial numbers, missing artifacts, existing files, unwritable folder;
            with ``retrain_epochs``, data that cannot be reloaded or a diverged retraining.
    """
    settings = study.user_attrs[STUDY_ATTR]
    # The same model, hence the same numbers, as `poolnas front`, report.html and answer.json.
    model = fit_accuracy_model(study)
    chosen = select_trials(study, numbers, model)
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
    weights = "search"
    if retrain_epochs is not None:
        weights = f"retrained on train+val for {retrain_epochs} epochs"
    with tempfile.TemporaryDirectory(prefix="poolnas-retrain-") as scratch:
        retrained: dict[int, Retrained] = {}
        if retrain_epochs is not None:
            retrained = retrain_trials(study, chosen, epochs=retrain_epochs, into=scratch,
                                       progress=progress)
        try:
            out.mkdir(exist_ok=True)
            models = []
            for trial, name in zip(chosen, names):
                artifact = trial.user_attrs[TrialAttrs.MODEL_ARTIFACT]
                partial = out / f".{name}.partial"
                if trial.number in retrained:
                    shutil.copyfile(retrained[trial.number].path, partial)
                else:
                    try:
                        optuna.artifacts.download_artifact(
                            artifact_store=store, file_path=str(partial), artifact_id=artifact
                        )
                    except Exception as error:  # the store's own errors vary by backend
                        partial.unlink(missing_ok=True)
                        raise PoolnasError(
                            f"the model of trial {trial.number} (artifact {artifact}) cannot be "
                            f"read from the artifact store {handle.artifact_dir}: {error}"
                        ) from None
                os.replace(partial, out / name)
                test = retrained.get(trial.number)
                models.append({"file": name, **trial_record(trial, model), "weights": weights,
                               "test_accuracy": None if test is None else test.test_accuracy})
        except OSError as error:
            raise PoolnasError(
                f"cannot write to {str(out)!r}: {error.strerror or error}"
            ) from None

    manifest = {
        "study": study.study_name,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": settings["dataset"],
        "data_options": settings["data_options"],
        "input_shape": settings["input_shape"],
        "num_classes": settings["num_classes"],
        "input_dtype": "raw images as the data set stores them (the model rescales)",
        "flops_convention": "TensorFlow profiler, frozen inference graph, batch 1",
        "seed": settings.get("seed"),
        "weights": weights,
        "accuracy_model": ("accuracy_mean, accuracy_sd: posterior mean and sd of the "
                           "architecture's accuracy under the study's accuracy model (every "
                           "training of it and of the rest); p_front: its probability of being "
                           "Pareto-optimal; accuracy: the raw observed value"),
        "models": models,
    }
    if retrain_epochs is not None:
        tau = kendall_tau([m["accuracy"] for m in models], [m["test_accuracy"] for m in models])
        manifest.update({
            "retrain_epochs": retrain_epochs,
            "test_examples": next(iter(retrained.values())).test_examples,
            "kendall_tau": tau,
        })
        means = [m["accuracy_mean"] for m in models]
        if all(v is not None for v in means):
            # How well the accuracy model's means ranked them (beside the raw accuracies').
            manifest["kendall_tau_model"] = kendall_tau(
                means, [m["test_accuracy"] for m in models])
    stale = _listed_models(out / MANIFEST) - set(names)
    write_json_atomically(out / MANIFEST, manifest)
    for name in stale:  # An earlier export's models that the new manifest no longer lists.
        (out / name).unlink(missing_ok=True)
    return manifest


def _listed_models(manifest: Path) -> set[str]:
    """The model files an existing manifest lists (none if there is no readable one)."""
    try:
        models = json.loads(manifest.read_text(encoding="utf-8")).get("models", [])
        return {Path(m["file"]).name for m in models if isinstance(m.get("file"), str)}
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return set()


def write_file_atomically(path: Path, body: bytes) -> None:
    """Write ``body`` to a temporary file beside ``path`` and rename it into place.

    The file gets the mode ``open()`` would give it (``0o666`` less the umask), not the
    ``0o600`` of a temporary file, so a manifest or report is as readable as any other output.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomically(path: Path, data: Any) -> None:
    """:func:`write_file_atomically` of ``data`` as indented JSON."""
    write_file_atomically(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
