"""Multi-fidelity search (``--min-epochs``, ``--reduction-factor``): the promotion rule, pure
Python; then real searches on digits through the CLI, real SQLite, real processes for kill -9."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from poolnas.search._cli import main
from poolnas.search._multi_fidelity import (
    RungSchedule,
    crowding_distances,
    epochs_spent,
    next_promotion,
    non_dominated_ranks,
    promotable,
    promotion_order,
)
from poolnas.spaces import PoolnasError

SPACE = 'points = 2\nops = ["max", "avg", "conv"]\nskips = ["none", "projection"]\n' \
        "widths = [8, 16, 32]\n"
SMALL = ["--batch-size", "128", "--subset", "300", "--sampler", "random"]
MF = ["--min-epochs", "1", "--reduction-factor", "3", "--epochs", "3"]


# --- the rule, pure Python ---------------------------------------------------------------------
@pytest.mark.parametrize(("m", "eta", "epochs", "rungs"), [
    (1, 3, 3, (1, 3)), (1, 3, 16, (1, 3, 9, 16)), (2, 2, 16, (2, 4, 8, 16)), (4, 3, 4, (4,)),
    (1, 4, 16, (1, 4, 16)),
])
def test_rungs_grow_by_eta_and_end_at_epochs(m, eta, epochs, rungs) -> None:
    schedule = RungSchedule(m, eta, epochs)
    assert schedule.rungs == rungs and schedule.top == len(rungs) - 1


@pytest.mark.parametrize(("m", "eta", "epochs", "words"), [
    (4, 3, 3, "--min-epochs 4 is above --epochs 3"), (1, 1, 3, "at least 2"),
    (1, 0, 3, "at least 2"), (0, 3, 3, "--min-epochs must be a positive"),
])
def test_bad_schedules_are_refused(m, eta, epochs, words) -> None:
    with pytest.raises(PoolnasError, match=words):
        RungSchedule(m, eta, epochs)


def test_ranks_and_crowding() -> None:
    points = [(0.9, 10.0), (0.8, 5.0), (0.7, 20.0), (0.85, 7.0), (0.6, 1.0)]
    # (0.7, 20) is dominated by (0.9, 10); the rest trade accuracy for cost.
    assert non_dominated_ranks(points) == [0, 0, 1, 0, 0]
    front = [(0.9, 10.0), (0.85, 7.0), (0.8, 5.0), (0.6, 1.0)]
    distance = crowding_distances(front)
    assert distance[0] == math.inf and distance[3] == math.inf
    assert distance[1] == pytest.approx((0.9 - 0.8) / 0.3 + (10 - 5) / 9)
    assert distance[2] == pytest.approx((0.85 - 0.6) / 0.3 + (7 - 1) / 9)


@pytest.mark.parametrize("seed", range(5))
def test_ranks_agree_with_peeling_fronts_by_definition(seed) -> None:
    import random

    rng = random.Random(seed)
    points = [(rng.choice([0.1, 0.2, 0.5]), rng.choice([1, 2, 3])) for _ in range(12)]
    points += [(rng.random(), rng.random()) for _ in range(20)]
    expected, left, rank = [-1] * len(points), set(range(len(points))), 0
    while left:
        front = {i for i in left if not any(
            points[j][0] >= points[i][0] and points[j][1] <= points[i][1]
            and points[j] != points[i] for j in left)}
        for i in front:
            expected[i] = rank
        left, rank = left - front, rank + 1
    assert non_dominated_ranks(points) == expected


def test_promotion_order_is_rank_then_crowding_then_trial() -> None:
    points = [(0.9, 10.0), (0.8, 5.0), (0.7, 20.0), (0.85, 7.0), (0.6, 1.0), (0.6, 1.0)]
    order = promotion_order(points)
    # Front members first; the extremes (infinite crowding) before the interior ones; the
    # dominated point last; an exact tie goes to the earlier trial.
    assert set(order[:5]) == {0, 1, 3, 4, 5} and order[-1] == 2
    assert order.index(0) < order.index(1) and order.index(4) < order.index(5)
    # Only the best ⌊n/η⌋ are promotable: none of fewer than η.
    assert promotable(points, 3) == order[:2]
    assert promotable(points[:2], 3) == []


def _rung_trial(number: int, rung: int, accuracy: float, flops: int, *,
                promoted_from: int | None = None, state=TrialState.PRUNED):
    attrs = {"architecture": f"a{number}", "flops": flops, "rung": rung,
             "rung_accuracies": [accuracy] * (rung + 1)}
    if promoted_from is not None:
        attrs["promoted_from"] = promoted_from
    trial = create_trial(state=state, values=None if state != TrialState.COMPLETE else
                         [accuracy, flops], user_attrs=attrs)
    trial.number = number
    return trial


def test_next_promotion_takes_the_highest_rung_first_and_never_a_slot_twice() -> None:
    schedule = RungSchedule(1, 2, 4)  # rungs 1, 2, 4
    trials = [_rung_trial(0, 0, 0.5, 100), _rung_trial(1, 0, 0.9, 100)]
    assert next_promotion(trials, schedule).number == 1  # 0.9 dominates 0.5
    trials.append(_rung_trial(2, 1, 0.92, 100, promoted_from=1, state=TrialState.RUNNING))
    trials[-1].user_attrs.pop("rung_accuracies")  # running: not yet at its rung
    assert next_promotion(trials, schedule) is None  # the one slot of rung 0 is taken
    trials += [_rung_trial(3, 0, 0.6, 50), _rung_trial(4, 0, 0.4, 500)]
    assert next_promotion(trials, schedule).number == 3  # 4 entries: 2 slots
    # A failed promotion still names its parent: the slot stays used (a retry repeats it).
    trials.append(_rung_trial(5, 1, 0.0, 50, promoted_from=3, state=TrialState.FAIL))
    assert next_promotion(trials, schedule) is None
    # Two architectures at rung 1: the better goes to the top rung before rung 0 is looked at.
    trials[2] = _rung_trial(2, 1, 0.92, 100, promoted_from=1)
    trials += [_rung_trial(6, 1, 0.7, 50, promoted_from=3), _rung_trial(7, 0, 0.95, 10),
               _rung_trial(8, 0, 0.96, 5)]
    promotion = next_promotion(trials, schedule)
    # Two points are both extremes of their front: the earlier trial goes first.
    assert (promotion.number, promotion.rung) == (2, 1)
    assert epochs_spent(trials, schedule) == 1 * 6 + 1 * 2  # rung 0: 1 epoch, rung 1: 1 more


# --- real searches -----------------------------------------------------------------------------
def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """``--min-epochs 1 --reduction-factor 3 --epochs 3``: rungs of 1 and 3 epochs."""
    where = tmp_path_factory.mktemp("mf")
    (where / "small.toml").write_text(SPACE)
    db = where / "mf.db"
    args = ["search", "--storage", f"sqlite:///{db}", "--study", "mf", "--trials", "2",
            "--seed", "1", "--space", str(where / "small.toml"), *SMALL, *MF]
    assert args[-len(MF):] == MF
    code = main(args)
    assert code == 0
    return where, db, args


@pytest.mark.slow
def test_rungs_promotions_and_the_front(searched, capsys) -> None:
    _, db, _ = searched
    capsys.readouterr()
    study = optuna.load_study(study_name="mf", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) == 2 and len(pruned) >= 6  # ⌊n/3⌋ of rung 0 go on
    for t in pruned:
        assert t.user_attrs["rung"] == 0 and t.user_attrs["epochs_trained"] == 1
        assert len(t.user_attrs["rung_accuracies"]) == 1
        assert t.intermediate_values == {1: t.user_attrs["rung_accuracies"][0]}
        assert "fail_reason" not in t.user_attrs and t.user_attrs["model_artifact"]
    by_number = {t.number: t for t in trials}
    for t in complete:
        parent = by_number[t.user_attrs["promoted_from"]]
        assert parent.state == TrialState.PRUNED and parent.params == t.params
        assert t.user_attrs["rung"] == 1 and t.user_attrs["epochs_trained"] == 3
        assert t.user_attrs["epochs"] == 3
        assert t.user_attrs["rung_accuracies"] == [*parent.user_attrs["rung_accuracies"],
                                                   t.values[0]]
        assert t.intermediate_values[3] == t.values[0]
        # When it was promoted, its parent was among the best third of rung 0 (by number:
        # the trials that had finished rung 0 before the promotion was made).
        earlier = [p for p in pruned if p.number < t.number]
        points = [(p.user_attrs["rung_accuracies"][0], p.user_attrs["flops"]) for p in earlier]
        chosen = [earlier[i].number for i in promotable(points, 3)]
        assert parent.number in chosen
    assert len({t.user_attrs["promoted_from"] for t in complete}) == 2
    # The front and export read complete trials only: no lower-fidelity value on the front.
    assert run(capsys, "front", "--storage", f"sqlite:///{db}", "--study", "mf",
               "--format", "csv")[0] == 0


@pytest.mark.slow
def test_a_promotion_equals_training_all_epochs_straight(searched) -> None:
    """The promoted trial continued from its parent's stored model and optimizer state, with
    the batch order of the parent's seed: bit-identical to 3 epochs in one go."""
    from poolnas.evaluators import Budget, evaluate_architecture, load_dataset
    from poolnas.search._settings import trial_seed
    from poolnas.spaces import SearchSpace

    where, db, _ = searched
    study = optuna.load_study(study_name="mf", storage=f"sqlite:///{db}")
    trial = study.get_trials(states=(TrialState.COMPLETE,))[0]
    space = SearchSpace.resolve(str(where / "small.toml"))
    arch = space.architecture(trial.params)
    data = load_dataset("digits", seed=1, subset=300)
    straight = evaluate_architecture(arch, data, Budget(epochs=3, batch_size=128),
                                     seed=trial_seed(1, trial.user_attrs["promoted_from"]))
    assert straight.accuracy == trial.values[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("extra", "words"), [
    (["--min-epochs", "4", "--epochs", "3"], "--min-epochs 4 is above --epochs 3"),
    (["--min-epochs", "1", "--reduction-factor", "1"], "--reduction-factor must be"),
    (["--reduction-factor", "3"], "give --min-epochs as well"),
    (["--min-epochs", "1", "--repeats", "2"], "leave out --repeats"),
    (["--min-epochs", "1", "--engine", "keras-tuner"], "options of --engine optuna"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, extra, words):
    db = tmp_path / "bad.db"
    code, out, err = run(capsys, "search", "--storage", f"sqlite:///{db}", *extra)
    assert code == 2 and words in err and err.startswith("poolnas: error:")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not db.exists() and not list(tmp_path.iterdir())


def test_bad_rungs_are_refused_before_tensorflow_is_imported(tmp_path):
    """Rungs that cannot be are refused by the configuration's own check, before the slow
    TensorFlow import (whose progress line would otherwise come before the error line)."""
    script = ("import sys\n"
              "from poolnas.search._cli import main\n"
              "code = main(['search', '--storage', sys.argv[1], '--min-epochs', '4', "
              "'--epochs', '3'])\n"
              "print(code, 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script, f"sqlite:///{tmp_path / 'b.db'}"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], (done.stdout, done.stderr)
    assert done.stderr.startswith("poolnas: error: --min-epochs 4 is above --epochs 3")
    assert done.stderr.count("\n") == 1 and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_resume_with_another_schedule_is_refused_and_changes_nothing(searched, capsys) -> None:
    _, db, args = searched
    before = _digest(db)
    for other in (["--reduction-factor", "2"], ["--min-epochs", "2"]):
        code, _, err = run(capsys, *args, *other)
        assert code == 2 and "different rungs" in err and err.count("\n") == 1, err
    code, _, err = run(capsys, *args[:-len(MF)], "--epochs", "3")
    assert code == 2 and "--min-epochs and --reduction-factor" in err
    assert _digest(db) == before


# --- kill -9 mid-rung --------------------------------------------------------------------------
CLI = [sys.executable, "-m", "poolnas.search"]


@pytest.mark.slow
def test_kill_9_mid_rung_then_the_rerun_repeats_the_rung_and_keeps_the_lower_ones(
        tmp_path: Path) -> None:
    (tmp_path / "small.toml").write_text(SPACE)
    storage = f"sqlite:///{tmp_path / 'k.db'}"
    args = [*CLI, "search", "--storage", storage, "--study", "k", "--trials", "1",
            "--space", "small.toml", "--heartbeat", "30", *SMALL,
            "--min-epochs", "1", "--reduction-factor", "2", "--epochs", "4"]
    worker = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    killed = None
    try:
        while killed is None:
            assert worker.poll() is None, "the search ended before a promotion trained"
            assert time.monotonic() < deadline
            try:
                trials = optuna.load_study(study_name="k", storage=storage).get_trials()
            except Exception:  # noqa: BLE001 - the database is being created
                trials = []
            running = [t for t in trials if t.state == TrialState.RUNNING
                       and "promoted_from" in t.user_attrs and "flops" in t.user_attrs]
            if running:
                worker.kill()
                worker.wait()
                killed = running[0]
            time.sleep(0.05)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    before = {t.number: t for t in optuna.load_study(study_name="k",
                                                      storage=storage).get_trials()}
    if before[killed.number].state != TrialState.RUNNING:
        pytest.skip("the promotion finished before the kill landed")
    rerun = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    trials = optuna.load_study(study_name="k", storage=storage).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == TrialState.FAIL
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == killed.number)
    assert retry.user_attrs["promoted_from"] == killed.user_attrs["promoted_from"]
    assert retry.user_attrs["rung"] == killed.user_attrs["rung"]
    assert retry.state in (TrialState.PRUNED, TrialState.COMPLETE)
    # The lower rungs finished before the kill are intact, and no slot was promoted twice.
    for number, old in before.items():
        if old.state in (TrialState.PRUNED, TrialState.COMPLETE):
            assert by_number[number].user_attrs == old.user_attrs
    live = [t.user_attrs["promoted_from"] for t in trials
            if "promoted_from" in t.user_attrs and t.state != TrialState.FAIL]
    assert len(live) == len(set(live))
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 1


# --- workers on a database server ------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_two_workers_on_a_server_never_promote_a_slot_twice(
        backend, new_database, tmp_path, capsys) -> None:
    url = new_database(backend)
    (tmp_path / "small.toml").write_text(SPACE)
    code, out, err = run(capsys, "search", "--storage", url, "--study", "w", "--trials", "2",
                         "--workers", "2", "--artifacts", str(tmp_path / "artifacts"),
                         "--space", str(tmp_path / "small.toml"), *SMALL,
                         "--min-epochs", "1", "--reduction-factor", "2", "--epochs", "2")
    assert code == 0, err
    trials = optuna.load_study(study_name="w", storage=url).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    parents = [t.user_attrs["promoted_from"] for t in trials
               if "promoted_from" in t.user_attrs and t.state != TrialState.FAIL]
    assert len(parents) == len(set(parents))
    by_number = {t.number: t for t in trials}
    for t in trials:
        if t.state == TrialState.COMPLETE:
            parent = by_number[t.user_attrs["promoted_from"]]
            assert parent.user_attrs["architecture"] == t.user_attrs["architecture"]
            assert t.user_attrs["epochs_trained"] == 2


@pytest.mark.slow
def test_epoch_budget_ends_the_study(tmp_path, capsys) -> None:
    (tmp_path / "small.toml").write_text(SPACE)
    storage = f"sqlite:///{tmp_path / 'b.db'}"
    code, out, _ = run(capsys, "search", "--storage", storage, "--study", "b", "--trials", "50",
                       "--space", str(tmp_path / "small.toml"), *SMALL, "--epochs", "2",
                       "--epoch-budget", "5")
    assert code == 0
    trials = optuna.load_study(study_name="b", storage=storage).get_trials()
    # 2 epochs a trial: the third trial takes the study to 6 epochs >= 5, then it ends.
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
