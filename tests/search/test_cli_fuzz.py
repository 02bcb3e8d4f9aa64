"""Fuzzing the command line: whatever key or space file a user passes, ``poolnas flops`` and
``poolnas space`` answer (exit 0) or print one line ``poolnas: error: …`` (exit 2); nothing else
escapes ``main()``. tests/spaces fuzzes the parsers themselves; this goes through argparse, file
reading and printing as a user does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poolnas.search._cli import main
from poolnas.spaces import MERGES, OPS, SKIPS, STEMS


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

VALID_KEYS = [
    "conv3:16x1/max+projection:32x1/conv+none:64x1/avg+pool_pad.concat:128x2",
    "conv3:8x1/strided+pool_projection:16x1",
    "conv7s2:8x0/blur_max+none:16x1",
    "conv3s2:4x1/space_to_depth+pool_pad:16x1",
]
KEY_ALPHABET = sorted(set("".join(VALID_KEYS) + ":/+.x0123456789 -_\t\\\"'é\x00"))


def exit_code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as stop:  # argparse's own mistakes
        return int(stop.code)


def check_outcome(code: int, capsys) -> str:
    out, err = capsys.readouterr()
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.startswith("poolnas: error: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
    else:
        assert err == "" and out
    return out


@st.composite
def mutated_keys(draw) -> str:
    """A valid key with a few characters inserted, deleted or replaced, or a rebuilt one."""
    if draw(st.booleans()):
        segments = [f"{draw(st.sampled_from(list(STEMS)))}:{draw(st.integers(0, 40))}x"
                    f"{draw(st.integers(0, 3))}"]
        for _ in range(draw(st.integers(0, 4))):
            merge = draw(st.sampled_from(["", *(f".{m}" for m in MERGES), ".mul"]))
            segments.append(
                f"{draw(st.sampled_from([*OPS, 'maxpool']))}+"
                f"{draw(st.sampled_from([*SKIPS, 'bridge']))}{merge}:"
                f"{draw(st.integers(0, 80))}x{draw(st.integers(0, 3))}"
            )
        return "/".join(segments)
    key = list(draw(st.sampled_from(VALID_KEYS)))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(key)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from(KEY_ALPHABET))
        if action == "insert" or not key:
            key.insert(where, char)
        elif action == "delete":
            del key[min(where, len(key) - 1)]
        else:
            key[min(where, len(key) - 1)] = char
    return "".join(key)


@given(key=mutated_keys() | st.text(max_size=60))
@fuzz(120)
def test_flops_of_any_key_answers_or_says_what_is_wrong(key: str, capsys) -> None:
    out = check_outcome(exit_code(["flops", key, "--format", "json"]), capsys)
    if out:
        result = json.loads(out)
        assert result["flops"] > 0 and result["params"] > 0
        assert result["architecture"] == key.strip()  # Only canonical keys are accepted.


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.sampled_from(["max", "avg", "conv", "none", "pool_pad", "concat", "conv7s2", "default",
                       "catalogue"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=12,
)
_KEYS = ["extends", "points", "stems", "ops", "skips", "merges", "widths", "depths", "colour"]


def _toml_value(value) -> str:
    """A TOML rendering of JSON-like data (enough for fuzzing; None becomes a bare word)."""
    if value is None:
        return "nothing"  # Not TOML: the file must be refused as such.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if value == value and abs(value) != float("inf") else "nan"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


@given(data=st.dictionaries(st.sampled_from(_KEYS), _values, max_size=5),
       form=st.sampled_from(["json", "toml"]))
@fuzz(150)
def test_space_of_any_structured_file_answers_or_says_what_is_wrong(
    data: dict, form: str, tmp_path: Path, capsys
) -> None:
    path = tmp_path / f"space.{form}"
    if form == "json":
        path.write_text(json.dumps(data))
    else:
        path.write_text("".join(f"{key} = {_toml_value(v)}\n" for key, v in data.items()))
    out = check_outcome(exit_code(["space", "--space", str(path), "--format", "json"]), capsys)
    if out:
        assert json.loads(out)["size"] >= 1


@given(content=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
       suffix=st.sampled_from([".json", ".toml", ".yaml", ""]))
@fuzz(100)
def test_space_of_any_bytes_answers_or_says_what_is_wrong(
    content: bytes, suffix: str, tmp_path: Path, capsys
) -> None:
    path = tmp_path / f"space{suffix}"
    path.write_bytes(content)
    check_outcome(exit_code(["space", "--space", str(path)]), capsys)
    written = {f"space{s}" for s in (".json", ".toml", ".yaml", "")}
    assert {p.name for p in tmp_path.iterdir()} <= written  # Nothing was run.


@pytest.mark.parametrize("spec", ["", "default", "catalogue"])
def test_space_presets_answer(spec: str, capsys) -> None:
    assert check_outcome(exit_code(["space", "--space", spec]), capsys)
