"""README's "One study on many machines", walked for real, and no credential in any output.

Each machine is a working folder of its own and a ``poolnas`` process of its own; the study is on
the running PostgreSQL, on MariaDB/MySQL, or in a journal file on a shared folder, and the
trained models go to one shared artifacts folder. Two workers start, one is killed with SIGKILL
mid-trial, a third starts later; the study ends with exactly ``--trials`` complete trials. Then a
colleague, from a folder of their own, runs ``front``, ``export`` (the front and ``--trial N``),
``export --retrain-epochs 1``, ``report`` and the dashboard's API; every exported model loads with
plain Keras. On PostgreSQL the URL carries a password, and no output and no written file (nor the
study itself) may show it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from poolnas.search import load_study, open_storage

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "poolnas.search"]
SPACE = 'points = 2\nops = ["max", "avg", "conv"]\nskips = ["none", "projection"]\n' \
        "widths = [8, 16, 32]\n"
#: Every machine's options: the same data, space, budget and seed (a worker with others is
#: refused). Trials of a few seconds, so that a kill lands while one trains.
OPTIONS = ["--study", "lab", "--trials", "4", "--space", "small.toml", "--epochs", "6",
           "--batch-size", "64", "--subset", "300", "--heartbeat", "2"]
PASSWORD = "S3cretPW"


class Machine:
    """A working folder and the ``poolnas`` processes started in it."""

    def __init__(self, root: Path, name: str) -> None:
        self.folder = root / name
        self.folder.mkdir()
        (self.folder / "small.toml").write_text(SPACE)
        self.processes: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        process = subprocess.Popen([*CLI, *args], cwd=self.folder, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        self.processes.append(process)
        return process

    def run(self, *args: str) -> tuple[str, str]:
        result = subprocess.run([*CLI, *args], cwd=self.folder, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr
        return result.stdout, result.stderr

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Callable[[str], Machine]]:
    made: list[Machine] = []

    def make(name: str) -> Machine:
        made.append(Machine(tmp_path, name))
        return made[-1]

    yield make
    for machine in made:
        machine.stop_all()


def _storage(backend: str, new_database: Callable[[str], str], shared: Path) -> str:
    if backend == "journal":
        return str(shared / "lab.log")
    url = new_database(backend)
    if backend == "postgresql":  # The server trusts local users: any password connects.
        url = sa.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)
    return url


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        with open_storage(storage, create=False, heartbeat_interval=None) as handle:
            return load_study(handle, "lab").get_trials()
    except Exception:  # noqa: BLE001 - the study is still being created
        return []


def _wait_for_training(storage: str, pid: int, process: subprocess.Popen) -> int:
    """Wait until process ``pid`` trains a trial; its number."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        for trial in _trials(storage):
            worker = trial.user_attrs.get("worker") or {}
            if (trial.state == TrialState.RUNNING and worker.get("pid") == pid
                    and "flops" in trial.user_attrs):
                return trial.number
        time.sleep(0.05)
    raise AssertionError("the worker never trained a trial")


def _dashboard_studies(machine: Machine, *args: str) -> list[str]:
    process = machine.start("dashboard", *args, "--port", "0")
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "(Ctrl-C to stop)" in line, process.stderr.read() if process.stderr else line
    url = line.split(" on ", 1)[1].split()[0]
    with urllib.request.urlopen(url + "api/studies", timeout=30) as response:
        studies = json.loads(response.read())["study_summaries"]
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    machine.seen = getattr(machine, "seen", "") + line + out + err
    return [s["study_name"] for s in studies]


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "journal"])
def test_the_many_machines_recipe_end_to_end(
    backend: str, new_database: Callable[[str], str], machines: Callable[[str], Machine],
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    artifacts = shared / "artifacts"
    storage = _storage(backend, new_database, shared)
    search = ["search", "--storage", storage, "--artifacts", str(artifacts), *OPTIONS]
    first, second, third, colleague = (machines(n) for n in ("a", "b", "c", "colleague"))

    # Two machines start; the second is killed with SIGKILL while it trains.
    a = first.start(*search)
    b = second.start(*search)
    killed = _wait_for_training(storage, b.pid, b)
    b.kill()
    b.communicate(timeout=30)
    # A third machine joins later; every worker stops when the study is done.
    c = third.start(*search)
    outputs = ""
    for process in (a, c):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
        outputs += out + err

    trials = _trials(storage)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    dead = next(t for t in trials if t.number == killed)
    assert dead.state == TrialState.FAIL and "died" in dead.user_attrs["fail_reason"]
    retry = [t for t in complete if t.user_attrs.get("retry_of") == killed]
    assert retry and retry[0].user_attrs["architecture"] == dead.user_attrs["architecture"]
    assert all((artifacts / t.user_attrs["model_artifact"]).is_file() for t in complete
               if "model_artifact" in t.user_attrs)

    # A colleague, from a folder of their own.
    reads = ["--storage", storage, "--study", "lab"]
    out, err = colleague.run("front", *reads, "--format", "json")
    outputs += out + err
    front = json.loads(out)
    assert front and {r["trial"] for r in front} <= {t.number for t in complete}
    out, err = colleague.run("export", *reads, "--out", "front")
    outputs += out + err
    assert f"artifacts: {artifacts}" in out  # The folder the search recorded, and said so.
    chosen = complete[0].number
    out, err = colleague.run("export", *reads, "--artifacts", str(artifacts), "--out", "one",
                             "--trial", str(chosen))
    outputs += out + err
    out, err = colleague.run("export", *reads, "--out", "retrained", "--retrain-epochs", "1",
                             "--trial", str(chosen))
    outputs += out + err
    out, err = colleague.run("report", *reads, "--out", "report")
    outputs += out + err
    assert _dashboard_studies(colleague, "--storage", storage) == ["lab"]
    outputs += colleague.seen

    manifests = {name: json.loads((colleague.folder / name / "manifest.json").read_text())
                 for name in ("front", "one", "retrained")}
    assert [m["trial"] for m in manifests["front"]["models"]] == [r["trial"] for r in front]
    assert [m["trial"] for m in manifests["one"]["models"]] == [chosen]
    assert manifests["retrained"]["models"][0]["test_accuracy"] is not None
    files = [colleague.folder / name / m["file"] for name, manifest in manifests.items()
             for m in manifest["models"]]
    script = textwrap.dedent("""
        import sys, keras
        for path in sys.argv[1:]:
            keras.saving.load_model(path)  # safe_mode on, no custom objects
        print(len(sys.argv) - 1)
    """)
    loaded = subprocess.run([sys.executable, "-c", script, *map(str, files)],
                            capture_output=True, text=True, timeout=300)
    assert loaded.stdout.strip() == str(len(files)), loaded.stderr

    if backend == "postgresql":
        written = [p for p in tmp_path.rglob("*") if p.is_file()]
        leaks = [str(p) for p in written if PASSWORD.encode() in p.read_bytes()]
        assert not leaks, leaks
        assert PASSWORD not in outputs
        assert PASSWORD not in json.dumps([t.user_attrs for t in trials], default=str)
        with open_storage(storage, create=False) as handle:
            study = load_study(handle, "lab")
            assert PASSWORD not in json.dumps(study.user_attrs, default=str)


def test_reading_with_a_wrong_artifacts_folder_is_one_line(
    machines: Callable[[str], Machine], tmp_path: Path,
) -> None:
    machine = machines("a")
    storage = f"sqlite:///{tmp_path / 'a' / 'one.db'}"
    machine.run("search", "--storage", storage, "--study", "one", "--trials", "1", "--space",
                "small.toml", "--epochs", "1", "--subset", "200", "--quiet")
    other = tmp_path / "other-artifacts"
    other.mkdir()
    (other / "not-a-model").write_text("x")
    for folder, says in ((tmp_path / "missing", "is not an existing folder"),
                         (other, "holds none of the 1 models of study 'one'")):
        before = sorted(p.name for p in machine.folder.iterdir())
        result = subprocess.run([*CLI, "export", "--storage", storage, "--study", "one",
                                 "--artifacts", str(folder), "--out", "x"],
                                cwd=machine.folder, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and result.stderr.startswith("poolnas: error: ")
        assert says in result.stderr and result.stderr.count("\n") == 1
        assert sorted(p.name for p in machine.folder.iterdir()) == before
