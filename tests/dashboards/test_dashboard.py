"""``poolnas dashboard`` as a user runs it: a real search, a real server process, a real browser.

The browser is Debian's Chromium driven by Playwright (never a downloaded browser). Without
``/usr/bin/chromium`` or Playwright the browser test is skipped, or fails where ``CI`` is set.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolnas.search._cli import main

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TINY = ["--epochs", "1", "--batch-size", "128"]
START_TIMEOUT = 120  # seconds for the server to start or stop (imports on a busy machine)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Dashboard:
    """A ``poolnas dashboard`` subprocess; its stdout lines arrive on a queue.

    The process starts with SIGINT ignored, as ``poolnas dashboard &`` in a script starts it
    (the hardest case: Python then installs no KeyboardInterrupt handler of its own), and the
    tests send SIGINT as soon as the URL line arrives: the server must stop all the same.
    """

    def __init__(self, *args: str, cwd: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "poolnas.search", "dashboard", *args],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_ignore_sigint,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self._pumping = threading.Thread(target=self._pump, daemon=True)
        self._pumping.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.stdout.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def url(self) -> str:
        """The URL the server printed (waits for it)."""
        line = self.lines.get(timeout=START_TIMEOUT)
        if line is None:
            self.process.wait(timeout=10)
            raise AssertionError(f"dashboard exited early: {self._stderr()}")
        assert "(Ctrl-C to stop)" in line, line
        return line.split(" on ", 1)[1].split()[0]

    def interrupt(self) -> tuple[int, str, str]:
        """Ctrl-C: SIGINT to the process; its exit status, stdout and stderr."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=START_TIMEOUT)
        self._pumping.join(timeout=10)
        return code, "".join(self.stdout), self._stderr()

    def _stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, str]:
    """A small real search: its folder and its storage URL."""
    where = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{where / 's.db'}"
    space = where / "small.toml"
    space.write_text('points = 2\nops = ["max", "conv"]\nskips = ["none", "projection"]\n')
    code = main(["search", "--storage", url, "--study", "s", "--trials", "3", "--seed", "2",
                 "--space", str(space), "--quiet", *TINY])
    assert code == 0
    return where, url


@pytest.fixture(scope="module")
def server(searched) -> Iterator[str]:
    """``poolnas dashboard`` on the search's storage, on a free port; its URL."""
    where, url = searched
    dashboard = Dashboard("--storage", url, "--port", "0", cwd=where)
    try:
        yield dashboard.url()
        code, out, err = dashboard.interrupt()
        assert code == 0, err
        assert out.rstrip().endswith("dashboard stopped")
    finally:
        dashboard.kill()


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def test_serves_the_study_its_notes_figure_and_artifacts(server) -> None:
    assert server.startswith("http://127.0.0.1:")
    studies = json.loads(get(server + "api/studies"))["study_summaries"]
    assert [s["study_name"] for s in studies] == ["s"]
    study_id = studies[0]["study_id"]
    detail = json.loads(get(f"{server}api/studies/{study_id}"))
    assert detail["objective_names"] == ["accuracy", "flops"]
    assert [g["id"] for g in detail["plotly_graph_objects"]] == ["poolnas-choices"]
    trials = detail["trials"]
    assert len(trials) == 3
    for trial in trials:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert trial["note"]["body"].startswith(f"### `{attrs['architecture']}`")
        if "duplicate_of" in attrs:  # its model and picture belong to the original trial
            assert trial["artifacts"] == []
            continue
        names = sorted(a["filename"] for a in trial["artifacts"])
        assert names == [f"architecture-trial{trial['number']:05d}.png",
                         f"trial{trial['number']:05d}.keras"]
        picture = next(a for a in trial["artifacts"] if a["mimetype"] == "image/png")
        body = get(f"{server}artifacts/{study_id}/{trial['trial_id']}/{picture['artifact_id']}")
        assert body.startswith(b"\x89PNG\r\n\x1a\n")


def _browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        message = "playwright is not installed (pip install 'poolnas[test]')"
    else:
        if os.path.exists(CHROMIUM):
            return sync_playwright
        message = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so this is a failure", pytrace=False)
    pytest.skip(message)


def test_browser_shows_front_trial_key_and_artifacts(server, searched, tmp_path) -> None:
    sync_playwright = _browser()
    _, url = searched
    import optuna

    study = optuna.load_study(study_name="s", storage=url)
    # The last trial that trained its own model (a duplicate shows its original's artifacts).
    shown = max(t.number for t in study.trials if "duplicate_of" not in t.user_attrs)
    key = study.trials[shown].user_attrs["architecture"]
    study_id = json.loads(get(server + "api/studies"))["study_summaries"][0]["study_id"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server}dashboard/studies/{study_id}")
            page.get_by_text("Pareto Front", exact=True).wait_for(timeout=30_000)
            page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
            body = page.inner_text("body")
            assert "s (id=" in body
            assert "Objective X:" in body and "accuracy" in body and "flops" in body
            assert "Which op and skip type the Pareto front uses" in body
            page.screenshot(path=str(tmp_path / "study.png"), full_page=True)

            page.goto(f"{server}dashboard/studies/{study_id}/trials")
            page.get_by_text(f"Trial {shown}", exact=True).first.click()
            page.get_by_text(f"Trial {shown} (trial_id=", exact=False).wait_for(timeout=30_000)
            page.get_by_text(f"architecture-trial{shown:05d}.png").wait_for(timeout=30_000)
            body = page.inner_text("body")
            assert key in body  # in the note and among the user attrs
            assert f"trial{shown:05d}.keras" in body
            preview = page.locator("img[src*='/artifacts/']").first
            preview.wait_for(timeout=30_000)
            page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                   arg=preview.element_handle(), timeout=30_000)
            page.screenshot(path=str(tmp_path / "trial.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "study.png").stat().st_size > 10_000
    assert (tmp_path / "trial.png").stat().st_size > 10_000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ctrl_c_stops_it_cleanly_and_frees_the_port(searched) -> None:
    where, url = searched
    port = _free_port()
    dashboard = Dashboard("--storage", url, "--port", str(port), cwd=where)
    try:
        assert dashboard.url() == f"http://127.0.0.1:{port}/"
        assert json.loads(get(f"http://127.0.0.1:{port}/api/meta"))
        code, out, err = dashboard.interrupt()
    finally:
        dashboard.kill()
    assert code == 0
    assert out.splitlines()[-1] == "dashboard stopped"
    assert "Traceback" not in err and "warning" not in err
    with socket.socket() as again:  # the port can be served again (as servers bind it)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


def test_warns_when_not_bound_to_loopback(searched) -> None:
    where, url = searched
    dashboard = Dashboard("--storage", url, "--host", "0.0.0.0", "--port", "0", cwd=where)
    try:
        assert dashboard.url().startswith("http://0.0.0.0:")
        code, _, err = dashboard.interrupt()
    finally:
        dashboard.kill()
    assert code == 0
    assert "poolnas: warning: serving on 0.0.0.0" in err and "no authentication" in err


def test_a_taken_port_is_one_line_error(searched, capsys) -> None:
    _, url = searched
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["dashboard", "--storage", url, "--port", str(port)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"poolnas: error: cannot serve on 127.0.0.1:{port}")
    assert err.count("\n") == 1


def test_a_missing_storage_is_one_line_error_and_creates_nothing(tmp_path, capsys) -> None:
    code = main(["dashboard", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--port", "0"])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("poolnas: error: storage:") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_a_bad_port_is_a_usage_error(port, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["dashboard", "--port", port])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("poolnas: error: argument --port")
