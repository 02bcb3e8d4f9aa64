from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolnas.spaces import (
    MERGES,
    OPS,
    SKIPS,
    STEMS,
    Architecture,
    DownsamplingPoint,
    PoolnasError,
)


def test_key_reads_as_the_architecture() -> None:
    arch = Architecture(
        points=(
            DownsamplingPoint("max", "projection", width=32),
            DownsamplingPoint("conv", "none", width=64),
            DownsamplingPoint("avg", "pool_pad", "concat", width=128, blocks=2),
        )
    )
    assert arch.key == "conv3:16x1/max+projection:32x1/conv+none:64x1/avg+pool_pad.concat:128x2"
    assert Architecture.from_key(arch.key) == arch
    assert arch.widths == (16, 32, 64, 128)
    assert arch.depths == (1, 1, 1, 2)
    assert arch.halvings == 3


def test_strided_stem_counts_as_a_halving() -> None:
    arch = Architecture.from_key("conv7s2:16x0/strided+none:32x1")
    assert arch.halvings == 2


def test_merge_is_dropped_without_a_shortcut() -> None:
    point = DownsamplingPoint("max", "none", "concat", width=32)
    assert point.merge == "add"
    assert point == DownsamplingPoint("max", "none", "add", width=32)


@st.composite
def architectures(draw) -> Architecture:
    width = draw(st.integers(1, 64))
    points = []
    channels = width
    for _ in range(draw(st.integers(0, 5))):
        skip = draw(st.sampled_from(list(SKIPS)))
        merge = draw(st.sampled_from(list(MERGES)))
        channels = channels + draw(st.integers(1, 64))
        points.append(
            DownsamplingPoint(draw(st.sampled_from(list(OPS))), skip, merge, channels,
                              draw(st.integers(1, 4)))
        )
    return Architecture(tuple(points), stem=draw(st.sampled_from(list(STEMS))), width=width,
                        blocks=draw(st.integers(0, 3)))


@given(architectures())
@settings(max_examples=300, deadline=None)
def test_key_round_trips(arch: Architecture) -> None:
    assert Architecture.from_key(arch.key) == arch
    assert Architecture.from_key(arch.key).key == arch.key


@given(st.text(max_size=80))
@settings(max_examples=500, deadline=None)
def test_any_text_parses_or_gives_a_clear_error(text: str) -> None:
    try:
        arch = Architecture.from_key(text)
    except PoolnasError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert arch.key == text.strip()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "non-empty"),
        ("conv3:16x1/maxx+none:32x1", "unknown downsampling op 'maxx'"),
        ("conv3:16x1/max+bridge:32x1", "unknown skip type 'bridge'"),
        ("conv5:16x1/max+none:32x1", "unknown stem 'conv5'"),
        ("conv3:16x1/max+pool_pad.mul:32x1", "unknown merge 'mul'"),
        ("conv3:16x1/max-none:32x1", "segment 1"),
        ("conv3:16/max+none:32x1", "must start with STEM:WIDTHxBLOCKS"),
        ("conv3:16x1/max+none:32x0", "blocks per stage"),
        ("conv3:0x1/max+none:32x1", "stem width"),
        ("conv3:016x1/max+none:32x1", "not canonical"),
        ("conv3:16x1/max+none.concat:32x1", "not canonical"),
        ("conv3:64x1/max+pool_pad:32x1", "cannot be smaller"),
        ("conv3:32x1/max+projection.concat:32x1", "must exceed 32"),
        ("conv3:16x1/max+none:99999999x1", "too large"),
    ],
)
def test_bad_keys_say_what_is_wrong(key: str, message: str) -> None:
    with pytest.raises(PoolnasError, match=message.replace(".", r"\.").replace("(", r"\(")):
        Architecture.from_key(key)


def test_architecture_is_immutable() -> None:
    arch = Architecture.from_key("conv3:16x1/max+none:32x1")
    with pytest.raises(AttributeError):
        arch.width = 8  # type: ignore[misc]
    assert hash(arch) == hash(Architecture.from_key(arch.key))
