"""``poolnas report`` and ``poolnas front --explain`` on a study with known values."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from known_study import KEYS

from poolnas.dashboards import REPORT_FILES, analyse_study, summarise, write_report
from poolnas.dashboards._report import hypervolume_points
from poolnas.search._cli import main
from poolnas.search._pareto import hypervolume
from poolnas.spaces import PoolnasError

PNG = b"\x89PNG\r\n\x1a\n"


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_report_files_and_numbers(known_study, tmp_path) -> None:
    handle, study, _ = known_study
    out = tmp_path / "report"
    written = write_report(handle, study, out)
    assert [p.name for p in written] == list(REPORT_FILES)
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)  # no temporary files
    for name in ("pareto_front.png", "hypervolume.png", "choices.png"):
        assert (out / name).read_bytes().startswith(PNG)

    answer = json.loads((out / "answer.json").read_text())
    assert answer["study"] == "known" and answer["front"] == [0, 3, 1]
    rows = {(r["point"], r["kind"], r["choice"]): r for r in answer["choices"]}
    max1 = rows[(1, "op", "max")]
    assert (max1["on_front"], max1["front_size"], max1["trials"], max1["pairs"]) == (2, 3, 2, 2)
    assert max1["mean_accuracy"] == pytest.approx(0.905)
    assert max1["mean_flops"] == pytest.approx(1.1e6)
    assert max1["paired_accuracy_delta"] == pytest.approx(-0.005)
    conv1 = rows[(1, "op", "conv")]
    assert (conv1["trials"], conv1["infeasible"], conv1["on_front"]) == (1, 1, 1)
    assert conv1["paired_accuracy_delta"] == pytest.approx(0.04)
    assert rows[(1, "skip", "projection")]["paired_accuracy_delta"] == pytest.approx(0.01)
    pairs = {(c["point"], c["kind"], c["choice"], c["other"]): c for c in answer["comparisons"]}
    assert pairs[(1, "op", "max", "conv")]["trial_pairs"] == [[0, 1]]
    assert pairs[(1, "op", "max", "conv")]["flops_ratio"] == pytest.approx(0.5)
    assert answer["summary"] == summarise(analyse_study(study))


def test_report_html_is_self_contained_and_says_the_answer(known_study, tmp_path) -> None:
    handle, study, _ = known_study
    write_report(handle, study, tmp_path)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(images) == 3 + 3  # three figures and a picture per front member
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert summarise(analyse_study(study))[0] in page
    for key in KEYS.values():
        assert key in page
    front_table = page.split("<h2>Pareto front</h2>", 1)[1].split("</table>", 1)[0]
    assert [int(n) for n in re.findall(r"<tr><td>(\d+)</td>", front_table)] == [0, 3, 1]
    assert "not trained: 5000000 FLOPs &gt; budget 4000000" in page
    assert "same architecture as trial 0" in page
    assert "failed: RuntimeError: diverged" in page
    final = hypervolume([(0.90, 1.0e6), (0.91, 1.2e6), (0.93, 2.0e6)], reference_flops=6e6)
    assert f"<td>hypervolume</td><td>{final:.4f}</td>" in page


def test_hypervolume_comes_from_the_snapshots(known_study) -> None:
    handle, _, _ = known_study
    points = hypervolume_points(handle.snapshots.history("known"))
    assert [n for n, _ in points] == [1, 2, 3, 4, 5, 6]  # one per complete trial
    volumes = [v for _, v in points]
    assert volumes == sorted(volumes) and volumes[-1] > volumes[0]


def test_report_never_overwrites_silently(known_study, tmp_path) -> None:
    handle, study, _ = known_study
    out = tmp_path / "out"
    write_report(handle, study, out)
    before = digests(out)
    with pytest.raises(PoolnasError, match="already holds pareto_front.png.*--overwrite"):
        write_report(handle, study, out)
    assert digests(out) == before
    write_report(handle, study, out, overwrite=True)
    assert sorted(digests(out)) == sorted(before)

    # One clashing file is enough to write nothing at all.
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.html").write_text("mine")
    with pytest.raises(PoolnasError, match="already holds report.html"):
        write_report(handle, study, other)
    assert digests(other) == {"report.html": hashlib.sha256(b"mine").hexdigest()}


@pytest.mark.parametrize("where", ["a-file", "missing/parent"])
def test_report_refuses_a_bad_out(known_study, tmp_path, where) -> None:
    handle, study, _ = known_study
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(PoolnasError, match="not a directory|parent directory"):
        write_report(handle, study, tmp_path / where)
    assert not (tmp_path / "missing").exists()


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_report(known_study, tmp_path, capsys) -> None:
    _, _, url = known_study
    out = tmp_path / "cli"
    code, stdout, err = run(capsys, "report", "--storage", url, "--study", "known",
                            "--out", str(out))
    assert code == 0, err
    assert stdout.split() == [str(out / name) for name in REPORT_FILES]
    code, stdout, err = run(capsys, "report", "--storage", url, "--study", "known",
                            "--out", str(out))
    assert code == 2 and stdout == ""
    assert err.startswith("poolnas: error: ") and err.count("\n") == 1
    code, _, err = run(capsys, "report", "--storage", url, "--study", "nope",
                       "--out", str(tmp_path / "x"))
    assert code == 2 and "no study named 'nope'" in err
    assert not (tmp_path / "x").exists()


def test_cli_front_explain(known_study, capsys) -> None:
    _, study, url = known_study
    code, stdout, err = run(capsys, "front", "--storage", url, "--study", "known", "--explain")
    assert code == 0, err
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("point  kind"))
    max1 = lines[header + 2].split()
    assert max1[:5] == ["1", "op", "max", "2/3", "2"]
    assert max1[5:8] == ["0.9050", "1.1", "M"]
    # The model's effect vs the rest, its 95 % interval, the exact FLOPs ratio, decided.
    assert max1[8] == "pp" or max1[9] == "pp"
    assert max1[-1] in ("yes", "no")
    conv1 = next(line.split() for line in lines[header:] if line.split()[:3] == ["1", "op", "conv"])
    assert conv1[3:8] == ["1/3", "1", "(+1", "over", "budget)"]
    for sentence in summarise(analyse_study(study)):
        assert sentence in lines

    code, stdout, _ = run(capsys, "front", "--storage", url, "--study", "known", "--explain",
                          "--format", "json")
    data = json.loads(stdout)
    assert [m["trial"] for m in data["front"]] == [0, 3, 1]
    assert data["explain"]["front"] == [0, 3, 1]
    assert {c["choice"] for c in data["explain"]["choices"] if c["point"] == 1} == {
        "max", "avg", "conv", "none", "projection"}
    for member in data["front"]:
        assert 0 <= member["p_front"] <= 1 and member["accuracy_sd"] > 0
        assert abs(member["accuracy_mean"] - member["accuracy"]) < 0.2
    for choice in data["explain"]["choices"]:
        if choice["effect"] is None:
            continue
        assert choice["effect_low"] <= choice["effect"] <= choice["effect_high"]
        assert choice["decided"] == (choice["effect_low"] > 0 or choice["effect_high"] < 0)

    code, stdout, err = run(capsys, "front", "--storage", url, "--study", "known", "--explain",
                            "--format", "csv")
    assert code == 2 and stdout == "" and "--explain" in err


def test_report_answer_front_and_manifest_agree(known_study, tmp_path, capsys) -> None:
    """report.html, answer.json and `front --format json` carry the same model numbers."""
    from poolnas.search import fit_accuracy_model

    handle, study, url = known_study
    write_report(handle, study, tmp_path)
    model = fit_accuracy_model(study)
    assert model is not None
    answer = json.loads((tmp_path / "answer.json").read_text())
    assert [m["trial"] for m in answer["front_models"]] == answer["front"]
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "model mean ± sd" in page and "p_front" in page
    assert main(["front", "--storage", url, "--study", "known", "--format", "json"]) == 0
    rows = {r["trial"]: r for r in json.loads(capsys.readouterr().out)}
    for entry in answer["front_models"]:
        estimate = model.estimate(entry["architecture"])
        assert entry["accuracy_mean"] == pytest.approx(estimate.mean)
        assert entry["accuracy_sd"] == pytest.approx(estimate.sd)
        assert entry["p_front"] == pytest.approx(estimate.p_front)
        assert f"{estimate.mean:.4f} ± {estimate.sd:.4f}" in page
        # Why it is on the front: the same word as `poolnas front`'s front_by column.
        assert entry["front_by"] == rows[entry["trial"]]["front_by"]
        shown = re.escape({"both": "raw+model"}.get(entry["front_by"], entry["front_by"]))
        assert re.search(rf"<tr><td>{entry['trial']}</td>(<td>[^<]*</td>){{3}}<td>{shown}</td>",
                         page)
        row = rows[entry["trial"]]
        assert (row["accuracy_mean"], row["accuracy_sd"], row["p_front"]) == pytest.approx(
            (entry["accuracy_mean"], entry["accuracy_sd"], entry["p_front"]))
    # Every choice's effect vs the rest, with its interval, is in the page.
    for choice in answer["choices"]:
        if choice["effect"] is not None:
            assert f"[{choice['effect_low'] * 100:+.1f}, {choice['effect_high'] * 100:+.1f}]" \
                in page


def test_study_figure_hover_carries_the_model_effects(known_study) -> None:
    from poolnas.dashboards._analysis import pp_bound
    from poolnas.dashboards._annotate import choices_figure

    _, study, _ = known_study
    analysis = analyse_study(study)
    figure = choices_figure(analysis)
    hover = " ".join(t for trace in figure.data for t in trace.hovertext)
    decided = [s for s in analysis.stats if s.effect is not None]
    assert decided
    for s in decided:
        assert f"[{pp_bound(s.effect_low)}, {pp_bound(s.effect_high)}]" in hover


def test_an_interval_end_never_prints_as_zero_unless_it_is() -> None:
    """A decided interval whose end is 0.04 pp from zero must not read "[+0.0, …]"."""
    from poolnas.dashboards._analysis import pp_bound

    assert pp_bound(0.046) == "+4.6"
    assert pp_bound(0.0004) == "+0.04"
    assert pp_bound(-0.0004) == "-0.04"
    assert pp_bound(0.00004, sign=False) == "0.004"
    assert pp_bound(0.0) == "+0.0"

