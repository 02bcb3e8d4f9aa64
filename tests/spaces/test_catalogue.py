"""The catalogue as a registry: every entry builds, names its layers, and carries its words and
colour. The tests loop over the registry, so a new entry is covered without a new test."""

from __future__ import annotations

import re

import keras
import pytest

from poolnas.spaces import (
    MERGES,
    OPS,
    SKIPS,
    STEMS,
    Architecture,
    DownsamplingPoint,
    build_model,
)
from poolnas.spaces._catalogue import STRIDED_STEMS

#: What a layer name's last word says about the layer.
KINDS = {
    "pool": ("MaxPooling2D", "AveragePooling2D"),
    "conv": ("Conv2D",),
    "bn": ("BatchNormalization",),
    "relu": ("ReLU",),
    "out": ("ReLU",),
    "add": ("Add",),
    "concat": ("Concatenate",),
    "blur": ("DepthwiseConv2D",),
}
COLOUR = re.compile(r"^#[0-9a-f]{6}$")


def _shortcuts():
    for skip in SKIPS:
        for merge in MERGES if SKIPS[skip].residual else ("add",):
            yield skip, merge


@pytest.mark.parametrize("op", list(OPS))
def test_every_op_with_every_shortcut_builds_and_names_its_layers(op: str) -> None:
    entry = OPS[op]
    for skip, merge in _shortcuts():
        keras.backend.clear_session()
        arch = Architecture((DownsamplingPoint(op, skip, merge, width=12, blocks=2),),
                            stem="conv3", width=4, blocks=1)
        model = build_model(arch, (7, 5, 2), 3)
        assert model.get_layer("global_avg_pool").input.shape[1:] == (4, 3, 12), arch.key
        layers = {layer.name: type(layer).__name__ for layer in model.layers}
        op_layers = [n for n in layers if n.startswith("down1_") and not n.startswith("down1_skip")]
        skip_layers = [n for n in layers if n.startswith("down1_skip_")]
        # The op's layers say which op they are; a strided first conv adds none.
        assert all(op in name for name in op_layers), op_layers
        assert bool(op_layers) == (entry.first_stride == 1), op_layers
        first = model.get_layer("stage1_block0_conv1_conv")
        assert first.strides == (entry.first_stride, entry.first_stride)
        # The shortcut's layers exist exactly when there is a shortcut, merged as the key says.
        assert bool(skip_layers) == SKIPS[skip].residual, skip_layers
        if SKIPS[skip].residual:
            assert f"stage1_block0_{merge}" in layers
            assert "stage1_block1_add" in layers  # later blocks: identity shortcut
        # Every layer of the point and its stage says by its last word what it is.
        for name, kind in layers.items():
            if not name.startswith(("down1_", "stage1_")):
                continue
            last = name.rsplit("_", 1)[-1]
            if last in KINDS:
                assert kind in KINDS[last], (name, kind)
            if last == "pool":
                assert kind == ("MaxPooling2D" if "max" in name else "AveragePooling2D"), name


@pytest.mark.parametrize("op", list(OPS))
def test_every_op_has_its_words_and_colour(op: str) -> None:
    entry = OPS[op]
    assert entry.name == op
    assert entry.family and entry.label and entry.description and entry.reference
    assert COLOUR.match(entry.colour), entry.colour
    assert entry.first_stride in (1, 2)
    assert callable(entry.build)


def test_every_other_entry_has_its_words() -> None:
    for name, skip in SKIPS.items():
        assert skip.name == name and skip.label and skip.description and skip.reference
        assert COLOUR.match(skip.colour) and skip.short
    assert [name for name, skip in SKIPS.items() if not skip.residual] == ["none"]
    for name, merge in MERGES.items():
        assert merge.name == name and merge.description and callable(merge.build)
    for name, stem in STEMS.items():
        assert stem.name == name and stem.kernel % 2 == 1 and stem.stride in (1, 2)
    assert STRIDED_STEMS == {name for name, stem in STEMS.items() if stem.stride == 2}

