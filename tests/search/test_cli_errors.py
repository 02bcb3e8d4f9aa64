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
    assert main(["search", "--storage", f"sqlite:///{where / 'ok.db'}", "--study", "ok", *TINY]) == 0
    (where / "notes.db").write_bytes(b"these are my thesis notes, not a database\n" * 50)
    (where / "bad_space.toml").write_text("points = 3\nops = ['max', 'maxpool']\n")
    (where / "broken.npz").write_bytes(b"not a zip")
    return where


CASES = {
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
    "zero trials": (["search", "--trials", "0"], "must be at least 1"),
    "negative epochs": (["search", "--epochs", "-2"], "must be at least 1"),
    "bad flops budget": (["search", "--max-flops", "lots"], "FLOPs count"),
    "bad key": (["flops", "conv3:16x1/maxpool+none:32x1"], "unknown downsampling op"),
    "too many points": (["flops", "conv3:16x1/max+none:32x1/max+none:64x1/max+none:128x1/"
                                   "max+none:256x1"], "allows at most 3"),
    "no command": ([], "required"),
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
