"""The catalogue: every downsampling op, shortcut type, merge and stem poolnas knows.

Each entry carries the one-line description and the reference that ``poolnas space`` prints.
This module is the single place where the vocabulary of architecture keys is defined.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One named choice of the catalogue."""

    name: str
    description: str
    reference: str


OPS: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("max", "2x2 max-pool, stride 2", "Chollet, Deep Learning with Python (2017), 5.1.1"),
        Entry("avg", "2x2 average-pool, stride 2", "LeCun et al. 1998 (subsampling)"),
        Entry(
            "max3x3",
            "3x3 overlapping max-pool, stride 2",
            "Krizhevsky et al. 2012 (AlexNet); He et al. 2016 (ResNet stem)",
        ),
        Entry("avg3x3", "3x3 overlapping average-pool, stride 2", "Krizhevsky et al. 2012"),
        Entry(
            "conv",
            "extra 3x3 conv-BN-ReLU at stride 2 in place of the pool (All-CNN)",
            "Springenberg et al. 2014, All-CNN",
        ),
        Entry(
            "strided",
            "the stage's first 3x3 conv runs at stride 2: no extra layer (Strided-CNN)",
            "Springenberg et al. 2014, Strided-CNN",
        ),
        Entry(
            "blur_max",
            "2x2 max-pool at stride 1, then a fixed 3x3 binomial blur at stride 2 (MaxBlurPool)",
            "Zhang 2019, Making Convolutional Networks Shift-Invariant Again",
        ),
        Entry(
            "space_to_depth",
            "lossless: each 2x2 block becomes 4x the channels",
            "Ridnik et al. 2021 (TResNet); Sunkara & Luo 2022 (SPD-Conv)",
        ),
    )
}

SKIPS: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("none", "no shortcut: a plain CNN block", "Simonyan & Zisserman 2015 (VGG)"),
        Entry(
            "projection",
            "1x1 conv at stride 2 + BN on the shortcut (ResNet option B)",
            "He et al. 2016, Deep Residual Learning",
        ),
        Entry(
            "pool_projection",
            "2x2 average-pool at stride 2, then 1x1 conv + BN (ResNet-D)",
            "He et al. 2019, Bag of Tricks",
        ),
        Entry(
            "pool_pad",
            "parameter-free: 2x2 average-pool at stride 2, zero channels to match (option A)",
            "He et al. 2016 option A; Sun et al. 2018 (FishNet)",
        ),
    )
}

MERGES: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("add", "shortcut added to the block output, then ReLU", "He et al. 2016"),
        Entry(
            "concat",
            "shortcut concatenated to the block output (main path makes the missing channels)",
            "Sun et al. 2018 (FishNet)",
        ),
    )
}

STEMS: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("conv3", "3x3 conv-BN-ReLU, stride 1: no downsampling", "Simonyan & Zisserman 2015"),
        Entry(
            "conv3s2",
            "3x3 conv-BN-ReLU, stride 2: downsampling point 0",
            "Springenberg et al. 2014",
        ),
        Entry(
            "conv7s2",
            "7x7 conv-BN-ReLU, stride 2: downsampling point 0 (ResNet stem)",
            "He et al. 2016",
        ),
    )
}

#: Stems that halve the input and so count as downsampling point 0.
STRIDED_STEMS = frozenset({"conv3s2", "conv7s2"})

#: Ops whose main path needs a pooling window (the `3x3` variants are separate names).
POOL_OPS = frozenset({"max", "avg", "max3x3", "avg3x3"})
