"""Every catalogue entry in the dashboards' words and pictures (a new entry is covered at once)."""

from __future__ import annotations

import pytest

from poolnas.dashboards import architecture_png
from poolnas.dashboards._analysis import label
from poolnas.spaces import OPS, SKIPS, Architecture

PNG = b"\x89PNG\r\n\x1a\n"


def test_sentences_use_the_catalogue_labels() -> None:
    for entries in (OPS, SKIPS):
        for name, entry in entries.items():
            assert label(name) == entry.label


@pytest.mark.parametrize("op", list(OPS))
def test_every_op_and_skip_is_drawn(op: str) -> None:
    skips = list(SKIPS)
    key = "/".join(["conv3:8x1", *(f"{op}+{skip}:{16 * 2**i}x1" for i, skip in enumerate(skips))])
    png = architecture_png(Architecture.from_key(key), input_shape=(32, 32, 3), num_classes=10)
    assert png.startswith(PNG)
