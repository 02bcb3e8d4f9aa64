"""Searches that survive, end to end through the real CLI in real processes: SIGKILL and rerun,
SIGINT/SIGTERM, independent processes and ``--workers`` on one study, on SQLite, PostgreSQL and
MySQL. After each, the study must hold exactly the requested complete trials, nothing left
running, a snapshot after every complete trial that names only complete trials, and the trained
model of every complete trial in the artifact store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from poolnas.search import list_studies, load_study, open_storage
from poolnas.spaces import PoolnasError

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "poolnas.search"]
#: A small space (36 architectures of 8-32 channels): cheap to set up and to train.
SPACE = 'points = 2\nops = ["max", "avg", "conv"]\nskips = ["none", "projection"]\n' \
        "widths = [8, 16, 32]\n"
TINY = ["--epochs", "1", "--batch-size", "128", "--subset", "300", "--heartbeat", "30"]
#: Long enough that a signal sent once a trial has begun lands while it trains.
TRAINING = ["--epochs", "20", "--batch-size", "64", "--subset", "300", "--heartbeat", "30"]
#: Trials that never finish within a test: a signal finds every running one training, not
#: being recorded (a trial being recorded is finished first, by design).
ENDLESS = ["--epochs", "500", "--batch-size", "64", "--subset", "300", "--heartbeat", "30"]


@pytest.fixture(autouse=True)
def _space_file(tmp_path: Path) -> None:
    (tmp_path / "small.toml").write_text(SPACE)  # The processes run in tmp_path.


def search_args(storage: str, study: str, trials: int, *extra: str) -> list[str]:
    return ["search", "--storage", storage, "--study", study, "--trials", str(trials),
            "--space", "small.toml", *extra]


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """``start(args, name)``: a CLI process with output in tmp_path; killed if still running."""
    started: list[subprocess.Popen] = []

    def start(args: list[str], name: str) -> subprocess.Popen:
        out = open(tmp_path / f"{name}.out", "w")
        err = open(tmp_path / f"{name}.err", "w")
        process = subprocess.Popen([*CLI, *args], stdout=out, stderr=err, cwd=tmp_path)
        out.close()
        err.close()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def output(tmp_path: Path, name: str) -> tuple[str, str]:
    return (tmp_path / f"{name}.out").read_text(), (tmp_path / f"{name}.err").read_text()


def run_cli(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


def read_trials(storage: str, study: str) -> list[dict]:
    """Every trial of a study as ``{"number", "state", "attrs"}``; [] while it is being made."""
    try:
        with open_storage(storage, create=False, heartbeat_interval=None) as handle:
            if study not in list_studies(handle):
                return []
            trials = load_study(handle, study).get_trials()
    except PoolnasError:
        return []  # The database or journal is being created.
    return [{"number": t.number, "state": t.state.name, "attrs": t.user_attrs} for t in trials]


def wait_until_training(storage: str, study: str, process: subprocess.Popen, *,
                        after_complete: int) -> int:
    """Wait until ``after_complete`` trials are complete and the next one trains; its number."""
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, "the search ended before it was interrupted"
        assert time.monotonic() < deadline, "no trial began training"
        trials = read_trials(storage, study)
        complete = [t for t in trials if t["state"] == "COMPLETE"]
        training = [t for t in trials if t["state"] == "RUNNING" and "flops" in t["attrs"]]
        if len(complete) >= after_complete and training:
            return training[0]["number"]
        time.sleep(0.1)


def check_study(storage: str, study_name: str, total: int,
                artifacts: Path) -> list[optuna.trial.FrozenTrial]:
    """The invariants every interrupted, resumed or shared study must keep; its trials."""
    with open_storage(storage, create=False) as handle:
        trials = load_study(handle, study_name).get_trials()
        history = handle.snapshots.history(study_name)
    complete = {t.number: t for t in trials if t.state == TrialState.COMPLETE}
    assert len(complete) == total, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sorted(s.after_trial_number for s in history) == sorted(complete)
    for snapshot in history:
        assert 1 <= snapshot.n_complete <= total
        for member in snapshot.members:
            trial = complete[member.trial_number]  # Only complete trials are on a front.
            assert (member.accuracy, member.flops) == tuple(trial.values)
    for trial in complete.values():
        assert trial.user_attrs["architecture"]
        assert (artifacts / trial.user_attrs["model_artifact"]).is_file()
    return trials


# --- Crash and resume ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_kill_9_mid_trial_then_the_same_command_finishes_the_budget(
    kind: str, tmp_path: Path, processes: Callable[..., subprocess.Popen]
) -> None:
    storage = f"sqlite:///{tmp_path / 'k.db'}" if kind == "sqlite" else str(tmp_path / "k.log")
    args = search_args(storage, "k", 3, *TRAINING)
    worker = processes(args, "killed")
    killed = wait_until_training(storage, "k", worker, after_complete=1)
    worker.kill()  # SIGKILL: no handler runs, the trial stays RUNNING with a fresh heartbeat.
    worker.wait()
    before = read_trials(storage, "k")
    assert [t["state"] for t in before] == ["COMPLETE", "RUNNING"]

    rerun = run_cli(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"trial {killed} fail" in rerun.stdout and "queued again" in rerun.stdout
    trials = check_study(storage, "k", 3, tmp_path / "k-artifacts")
    for key in ("architecture", "flops", "model_artifact", "accuracies"):
        assert trials[0].user_attrs[key] == before[0]["attrs"][key]  # Finished: intact.
    dead = trials[killed]
    assert dead.state == TrialState.FAIL and "died" in dead.user_attrs["fail_reason"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1
    retry = retries[0]
    # The killed architecture was trained again, before anything new.
    assert retry.state == TrialState.COMPLETE and retry.number == killed + 1
    assert retry.params == dead.params
    assert retry.user_attrs["architecture"] == dead.user_attrs["architecture"]
    assert retry.user_attrs["retry_of"] == killed
    assert retry.user_attrs["worker"]["pid"] != dead.user_attrs["worker"]["pid"]
    assert len(trials) == 4


def test_kill_9_of_the_keras_tuner_engine_then_the_rerun_fails_the_dead_trial(
    tmp_path: Path, processes: Callable[..., subprocess.Popen]
) -> None:
    storage = f"sqlite:///{tmp_path / 'e.db'}"
    args = search_args(storage, "e", 2, *TRAINING, "--engine", "keras-tuner")
    worker = processes(args, "killed")
    killed = wait_until_training(storage, "e", worker, after_complete=0)
    worker.kill()
    worker.wait()
    rerun = run_cli(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"trial {killed} fail" in rerun.stdout and "died during the trial" in rerun.stdout
    trials = read_trials(storage, "e")
    # Failed, not queued: KerasTuner proposes its own candidates and would never run a copy.
    assert [t["state"] for t in trials].count("COMPLETE") == 2
    assert [t["number"] for t in trials if t["state"] != "COMPLETE"] == [killed]
    assert "died" in trials[killed]["attrs"]["fail_reason"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_trial_stops_cleanly_and_the_rerun_retries_it(
    signum: int, tmp_path: Path, processes: Callable[..., subprocess.Popen]
) -> None:
    storage = f"sqlite:///{tmp_path / 'i.db'}"
    args = search_args(storage, "i", 2, *TRAINING)
    worker = processes(args, "interrupted")
    number = wait_until_training(storage, "i", worker, after_complete=0)
    worker.send_signal(signum)
    assert worker.wait(timeout=120) == 130
    stderr = output(tmp_path, "interrupted")[1]
    assert "poolnas: interrupted; finished trials are saved" in stderr
    assert "Traceback" not in stderr and "failed with value None" not in stderr
    trials = read_trials(storage, "i")
    assert [t["state"] for t in trials] == ["FAIL", "WAITING"]  # Never left RUNNING.
    name = signal.Signals(signum).name
    assert trials[number]["attrs"]["fail_reason"] == f"interrupted: stopped by {name}"
    assert trials[1]["attrs"]["architecture"] == trials[number]["attrs"]["architecture"]

    if signum == signal.SIGTERM:
        return  # The rerun that retries it is the same as after SIGINT.
    rerun = run_cli(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    finished = check_study(storage, "i", 2, tmp_path / "i-artifacts")
    retry = finished[1]
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == number
    assert retry.params == finished[number].params


# --- Many workers on one study ---------------------------------------------------------------


def test_three_independent_processes_on_one_sqlite_study_reach_the_exact_total(
    tmp_path: Path, processes: Callable[..., subprocess.Popen]
) -> None:
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    args = search_args(storage, "shared", 8, *TINY)
    workers = [processes(args, f"worker{i}") for i in range(3)]
    for i, worker in enumerate(workers):
        assert worker.wait(timeout=600) == 0, output(tmp_path, f"worker{i}")[1]
        assert "database is locked" not in output(tmp_path, f"worker{i}")[1]
    trials = check_study(storage, "shared", 8, tmp_path / "shared-artifacts")
    assert len(trials) == 8  # Not one trial more, none failed.


def test_sigterm_to_a_search_with_workers_stops_every_worker_cleanly(
    tmp_path: Path, processes: Callable[..., subprocess.Popen]
) -> None:
    storage = f"sqlite:///{tmp_path / 'w.db'}"
    args = search_args(storage, "w", 20, *ENDLESS, "--workers", "2")
    parent = processes(args, "parent")
    deadline = time.monotonic() + 300
    while len(training := {t["attrs"]["worker"]["pid"]: t["number"]
                           for t in read_trials(storage, "w")
                           if t["state"] == "RUNNING" and "flops" in t["attrs"]}) < 2:
        assert parent.poll() is None and time.monotonic() < deadline, "two workers never ran"
        time.sleep(0.1)
    parent.send_signal(signal.SIGTERM)  # To the parent only: it forwards to its workers.
    assert parent.wait(timeout=120) == 130
    trials = read_trials(storage, "w")
    assert not [t for t in trials if t["state"] == "RUNNING"]
    interrupted = [t for t in trials if t["state"] == "FAIL"]
    # One per worker: the trials that were training, each queued again.
    assert sorted(t["number"] for t in interrupted) == sorted(training.values())
    assert all(t["attrs"]["fail_reason"] == "interrupted: stopped by SIGTERM" for t in interrupted)
    queued = [t for t in trials if t["state"] == "WAITING"]
    assert sorted(t["attrs"]["architecture"] for t in queued) == sorted(
        t["attrs"]["architecture"] for t in interrupted)


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_three_workers_on_a_database_server_reach_the_exact_total(
    backend: str, new_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = new_database(backend)
    artifacts = tmp_path / "shared-artifacts"
    result = run_cli(search_args(url, "srv", 6, *TINY, "--workers", "3",
                                 "--artifacts", str(artifacts)), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 workers x" in result.stdout
    trials = check_study(url, "srv", 6, artifacts)
    assert len(trials) == 6
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) >= 2


def test_timeout_bounds_this_run_and_the_rerun_goes_on(tmp_path: Path, monkeypatch,
                                                       capsys) -> None:
    from poolnas.search._cli import main

    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path / 't.db'}"
    args = search_args(storage, "t", 50, *TINY, "--timeout", "1", "--quiet")
    assert main(args) == 0  # The first trial starts in time; none after the deadline.
    first = read_trials(storage, "t")
    assert 1 <= len(first) < 50 and {t["state"] for t in first} == {"COMPLETE"}
    said = capsys.readouterr().out
    assert f"--timeout 1 s reached: {len(first)}/50 trials complete; run the same command" in said
    assert main(args) == 0  # The same command goes on where the first stopped.
    second = read_trials(storage, "t")
    assert len(first) < len(second) < 50 and {t["state"] for t in second} == {"COMPLETE"}


def test_sigterm_while_a_search_starts_leaves_nothing_behind(tmp_path: Path) -> None:
    """SIGTERM in the first second (TensorFlow still importing): one line, exit 130, no file."""
    work = tmp_path / "work"
    work.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "poolnas.search", "search", "--trials", "1"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # As soon as the command catches SIGTERM (it does from its first line; before that, Python
    # itself is still starting and nothing can be written): TensorFlow is still importing.
    deadline = time.monotonic() + 60
    while not _catches(process.pid, signal.SIGTERM):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == [
        "poolnas: interrupted; finished trials are saved (run the same command to resume)"]
    assert sorted(p.name for p in work.iterdir()) == []


def test_python_m_exits_130_after_an_interrupt_a_c_extension_saw(tmp_path: Path) -> None:
    """Under ``python -m``, CPython kills itself with SIGINT at exit (-2) once a KeyboardInterrupt
    was raised inside ``PyRun_String``, even a caught one; the signal that stops a search can
    land there while TensorFlow imports. The interrupted command still exits 130, its line
    said."""
    (tmp_path / "interrupted_in_c.py").write_text(
        "import ctypes\n"
        "import poolnas.search.__main__ as entry\n"
        "from poolnas.search import _cli\n"
        "run_string = ctypes.pythonapi.PyRun_String\n"
        "run_string.restype = ctypes.py_object\n"
        "run_string.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, "
        "ctypes.py_object]\n"
        "try:\n"
        "    run_string(b'raise KeyboardInterrupt', 257, {}, {})  # 257: Py_file_input\n"
        "except KeyboardInterrupt:\n"
        "    entry.main = _cli._interrupted\n"
        "entry.run()\n")
    done = subprocess.run([sys.executable, "-m", "interrupted_in_c"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines() == [
        "poolnas: interrupted; finished trials are saved (run the same command to resume)"]


def test_an_interrupt_a_library_reports_as_its_own_error_is_still_an_interrupt(
        monkeypatch, capsys) -> None:
    """Keras, interrupted while importing optree, raises "you need to have `optree` installed":
    after a signal, that is still the user's Ctrl-C (one line, exit 130), never a traceback."""
    from poolnas.search import _cli

    def import_swallowing_the_interrupt(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler raises KeyboardInterrupt here
        except KeyboardInterrupt:
            pass
        raise ImportError("To use Keras, you need to have `optree` installed.")

    monkeypatch.setitem(_cli._COMMANDS, "search", import_swallowing_the_interrupt)
    assert _cli.main(["search"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "poolnas: interrupted; finished trials are saved (run the same command to resume)"]

    def failing(args):
        raise ImportError("a real one")

    # Without a signal the same kind of error is not taken for one.
    monkeypatch.setitem(_cli._COMMANDS, "search", failing)
    with pytest.raises(ImportError, match="a real one"):
        _cli.main(["search"])


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (Linux: SigCgt in its status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) >> (signum - 1) & 1)


# --- Re-evaluation with workers, on a database server, across a resume ---------------------

#: 4 architectures: after 4 trainings every further trial must be a re-evaluation.
FOUR = 'points = 1\nops = ["max", "avg"]\nskips = ["none", "projection"]\nwidths = [8, 8]\n'


def check_repeats(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Every re-evaluation repeats an earlier trained trial of its architecture, is trained
    (not a copy), and was never started while another trial of that architecture was
    training (0.5 s of grace: a trial's start is stamped just before its proposal)."""
    from datetime import timedelta

    by_number = {t.number: t for t in trials}
    repeats = [t for t in trials if "repeat_of" in t.user_attrs]
    for r in repeats:
        first = by_number[r.user_attrs["repeat_of"]]
        assert first.number < r.number
        assert first.user_attrs["architecture"] == r.user_attrs["architecture"]
        assert "duplicate_of" not in r.user_attrs and r.user_attrs["accuracies"]
        for t in trials:
            if t.number == r.number or t.params != r.params or t.datetime_start is None:
                continue
            end = t.datetime_complete
            assert not (t.datetime_start < r.datetime_start
                        and (end is None or end > r.datetime_start + timedelta(seconds=0.5))), (
                f"trial {r.number} repeats {r.user_attrs['architecture']} while trial "
                f"{t.number} trains it")
    return repeats


def test_reevaluation_with_two_workers_on_postgresql_and_a_resume(
    new_database: Callable[[str], str], tmp_path: Path
) -> None:
    url = new_database("postgresql")
    (tmp_path / "four.toml").write_text(FOUR)
    artifacts = tmp_path / "shared-artifacts"
    args = ["search", "--storage", url, "--study", "re", "--space", "four.toml",
            "--artifacts", str(artifacts), "--workers", "2", "--seed", "1", *TINY]
    result = run_cli([*args, "--trials", "7"], tmp_path)
    assert result.returncode == 0, result.stderr
    trials = check_study(url, "re", 7, artifacts)
    assert len(check_repeats(trials)) >= 3  # 4 architectures, 7 trainings
    result = run_cli([*args, "--trials", "10"], tmp_path)  # the same command, a larger budget
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout
    trials = check_study(url, "re", 10, artifacts)
    repeats = check_repeats(trials)
    assert len(repeats) >= 6 and len({t.user_attrs["worker"]["pid"] for t in trials}) >= 2
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # No copies: every complete trial was trained, a first training or a repeat.
    assert not [t for t in complete if "duplicate_of" in t.user_attrs]
    unique = {t.user_attrs["architecture"] for t in complete}
    assert len(unique) <= 4 and len(repeats) == len(complete) - len(unique)
