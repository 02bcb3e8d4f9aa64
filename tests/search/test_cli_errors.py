"""Every user mistake: one line `poolnas: error: …`, exit 2, no traceback, nothing written."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from poolnas.search._cli import main

TINY = ["--epochs", "1", "--batch-size", "128", "--trials", "1"]


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def existing(tmp_path_factory) -> Path:
    """A folder with a real study in `ok.db`, a non-database and a space file."""
    where = tmp_path_factory.mktemp("errors")
    ok = f"sqlite:///{where / 'ok.db'}"
    assert main(["search", "--storage", ok, "--study", "ok", *TINY]) == 0
    (where / "notes.db").write_bytes(b"these are my thesis notes, not a database\n" * 50)
    (where / "bad_space.toml").write_text("points = 3\nops = ['max', 'maxpool']\n")
    (where / "broken.npz").write_bytes(b"not a zip")
    _hostile_files(where)
    return where


class _Unpickled:
    """Unpickling one creates the file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _hostile_files(where: Path) -> None:
    """Databases and space files a user can get wrong, beside the real study `ok.db`."""
    import shutil
    import sqlite3

    import optuna

    def db(name: str, *statements: str) -> None:
        shutil.copy(where / "ok.db", where / name)
        with sqlite3.connect(where / name) as connection:
            for statement in statements:
                connection.execute(statement)
        connection.close()

    db("newer_optuna.db", "UPDATE alembic_version SET version_num = 'v9.9.0.a'",
       "UPDATE version_info SET library_version = '9.9.0'")
    db("newer_poolnas.db", "UPDATE poolnas_schema SET version = 99")
    with sqlite3.connect(where / "customers.db") as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO customers VALUES (1, 'Ada')")
    connection.close()
    plain = optuna.create_study(study_name="ok", storage=f"sqlite:///{where / 'plain.db'}")
    plain.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    (where / "unknown_key.toml").write_text('extends = "default"\ncolour = "blue"\n')
    (where / "wrong_type.json").write_text('{"points": "three"}')
    (where / "syntax.toml").write_text('ops = ["max",\n')
    (where / "binary.json").write_bytes(bytes(range(256)))
    # Parsed, never run: executing it would create a file.
    (where / "space.py").write_text('open("pwned", "w").write("ran")\n')
    # Arrays that only unpickling could read; unpickled, they would create a file.
    import numpy as np

    pickled = np.empty(2, dtype=object)
    pickled[:] = [_Unpickled(where / "pwned"), _Unpickled(where / "pwned")]
    np.savez(where / "pickled.npz", x_train=pickled, y_train=np.array([0, 1]))
    (where / "code.toml").write_text('ops = ["__import__(\'os\').system(\'touch pwned\')"]\n')


CASES = {
    "no-reevaluate with repeats 0": (["search", "--no-reevaluate", "--repeats", "0"],
                                     "--repeats"),
    "no-reevaluate with tpe": (["search", "--no-reevaluate", "--sampler", "tpe"],
                               "--no-reevaluate"),
    "no-reevaluate with keras-tuner": (["search", "--no-reevaluate", "--engine", "keras-tuner"],
                                       "--no-reevaluate"),
    "unknown sampler": (["search", "--sampler", "bayes"], "invalid choice: 'bayes'"),
    "malformed storage": (["search", "--storage", "sqlite:/:/x"], "storage"),
    "unknown dialect": (["search", "--storage", "oracle2://u@h/db"], "storage"),
    "missing directory": (["search", "--storage", "sqlite:///no/such/dir/x.db"], "does not exist"),
    "not a database": (["search", "--storage", "sqlite:///{w}/notes.db"], "not an SQLite database"),
    "unknown study": (["front", "--storage", "sqlite:///{w}/ok.db", "--study", "nope"], "nope"),
    "front of a missing db": (["front", "--storage", "sqlite:///{w}/none.db"], "does not exist"),
    "unknown trial": (["export", "--storage", "sqlite:///{w}/ok.db", "--study", "ok", "--trial",
                       "99", "--out", "{w}/out"], "no trial 99"),
    "invalid space file": (["search", "--space", "{w}/bad_space.toml"], "unknown op 'maxpool'"),
    "missing space file": (["search", "--space", "{w}/nope.toml"], "neither a preset"),
    "unreadable data": (["search", "--dataset", "{w}/broken.npz"], "broken.npz"),
    "missing data": (["search", "--dataset", "{w}/missing.npz"], "missing.npz"),
    "pickled data": (["search", "--dataset", "{w}/pickled.npz"], "allow_pickle=False"),
    "zero trials": (["search", "--trials", "0"], "must be at least 1"),
    "negative epochs": (["search", "--epochs", "-2"], "must be at least 1"),
    "bad flops budget": (["search", "--max-flops", "lots"], "FLOPs count"),
    "bad key": (["flops", "conv3:16x1/maxpool+none:32x1"], "unknown downsampling op"),
    "too many points": (["flops", "conv3:16x1/max+none:32x1/max+none:64x1/max+none:128x1/"
                                   "max+none:256x1"], "allows at most 3"),
    "no command": ([], "required"),
    # Storage files and databases.
    "missing journal directory": (["search", "--storage", "{w}/no/dir/x.log"], "does not exist"),
    "directory as database": (["search", "--storage", "sqlite:///{w}"], "is a directory"),
    "newer Optuna schema": (["search", "--storage", "sqlite:///{w}/newer_optuna.db"],
                            "written by a newer Optuna"),
    "newer poolnas schema": (["search", "--storage", "sqlite:///{w}/newer_poolnas.db"],
                             "newer poolnas"),
    "newer schema, reading": (["front", "--storage", "sqlite:///{w}/newer_poolnas.db",
                               "--study", "ok"], "newer poolnas"),
    "unrelated tables": (["search", "--storage", "sqlite:///{w}/customers.db"],
                         "not an Optuna study database"),
    "study of another program": (["search", "--storage", "sqlite:///{w}/plain.db"],
                                 "was not created by poolnas"),
    "server without artifacts": (["search", "--storage", "postgresql+psycopg://u@127.0.0.1:9/db"],
                                 "pass --artifacts DIR"),
    # An unknown database is named as such, not taken for a server that needs --artifacts.
    "bogus scheme": (["search", "--storage", "bogus://x"], "unknown database 'bogus'"),
    # Space files: parsed (never evaluated) and checked.
    "unknown space key": (["search", "--space", "{w}/unknown_key.toml"], "unknown key(s) 'colour'"),
    "wrong space type": (["search", "--space", "{w}/wrong_type.json"], "points must be an integer"),
    "space syntax": (["search", "--space", "{w}/syntax.toml"], "not valid TOML"),
    "binary space": (["space", "--space", "{w}/binary.json"], "cannot read space file"),
    "python space file": (["space", "--space", "{w}/space.py"], "must end in .toml or .json"),
    "code in a space file": (["space", "--space", "{w}/code.toml"], "unknown op"),
    # Budgets.
    "zero timeout": (["search", "--timeout", "0"], "must be a positive number"),
    "negative timeout": (["search", "--timeout", "-5"], "must be a positive number"),
    "zero epochs": (["search", "--epochs", "0"], "must be at least 1"),
    "zero batch size": (["search", "--batch-size", "0"], "must be at least 1"),
    "negative trials": (["search", "--trials", "-3"], "must be at least 1"),
    "zero workers": (["search", "--workers", "0"], "must be at least 1"),
    "zero heartbeat": (["search", "--heartbeat", "0"], "must be at least 1"),
    "negative flops budget": (["search", "--max-flops", "-5"], "FLOPs count"),
    # Architecture keys.
    "empty key": (["flops", ""], "non-empty"),
    "key with junk": (["flops", "conv3:16x1/max+none:32x1 ; rm -rf /"], "poolnas: error"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_user_errors_are_one_line_and_write_nothing(name: str, existing: Path, capsys,
                                                     monkeypatch) -> None:
    args, expected = CASES[name]
    args = [a.replace("{w}", str(existing)) for a in args]
    if args and args[0] == "search":
        args = [*args, *TINY[:4], "--study", "ok"] if "--storage" in args else [
            *args, *TINY[:4], "--storage", f"sqlite:///{existing}/ok.db", "--study", "ok"]
    monkeypatch.chdir(existing)
    before = _tree(existing)
    assert _exit_code(args) == 2
    out, err = capsys.readouterr()
    assert err.startswith("poolnas: error: "), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert expected in err
    assert _tree(existing) == before


def _exit_code(args: list[str]) -> int:
    """main()'s status; argparse's own mistakes leave through SystemExit."""
    try:
        return main(args)
    except SystemExit as stop:
        return int(stop.code)


def test_the_console_script_exits_2_with_one_line(tmp_path) -> None:
    bad = tmp_path / "notes.db"
    bad.write_bytes(b"precious")
    result = subprocess.run(
        [sys.executable, "-m", "poolnas.search", "front", "--storage", f"sqlite:///{bad}"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("poolnas: error: ") and result.stderr.count("\n") == 1
    assert bad.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]
