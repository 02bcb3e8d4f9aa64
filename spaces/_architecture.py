"""The architecture value and its canonical key.

An :class:`Architecture` is a stem, a stage 0, and then for every downsampling point the way the
main path halves the resolution (the op), the shortcut around the block that does it (the skip),
how that shortcut rejoins the main path (the merge), and the stage that follows (width, blocks).

Its key is one line that round-trips exactly (``Architecture.from_key(a.key) == a``)::

    conv3:16x1/max+projection:32x1/conv+none:64x1/avg+pool_pad.concat:128x2

The first segment is ``STEM:WIDTHxBLOCKS`` for stage 0; each further segment is
``OP+SKIP[.MERGE]:WIDTHxBLOCKS`` for one downsampling point and the stage after it. The merge is
written only when it is not ``add``; a point without shortcut has no merge. Every character is
safe in a shell word, so keys are pasted into commands without quoting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from poolnas.spaces._catalogue import MERGES, OPS, SKIPS, STEMS, STRIDED_STEMS
from poolnas.spaces._errors import PoolnasError

_STEM_RE = re.compile(r"^(?P<stem>[a-z0-9_]+):(?P<width>\d+)x(?P<blocks>\d+)$")
_POINT_RE = re.compile(
    r"^(?P<op>[a-z0-9_]+)\+(?P<skip>[a-z_]+)(?:\.(?P<merge>[a-z]+))?"
    r":(?P<width>\d+)x(?P<blocks>\d+)$"
)
_MAX_WIDTH = 4096
_MAX_BLOCKS = 64


def _check_choice(kind: str, value: object, allowed: dict) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise PoolnasError(
            f"unknown {kind} {value!r}; choose one of: {', '.join(allowed)}"
        )


def _check_count(what: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PoolnasError(f"{what} must be an integer from {low} to {high}, got {value!r}")


@dataclass(frozen=True)
class DownsamplingPoint:
    """One downsampling point and the stage that follows it.

    Args:
        op: How the main path halves height and width (a name from ``poolnas.spaces.OPS``).
        skip: The shortcut around the block that downsamples (a name from ``SKIPS``).
        merge: How the shortcut rejoins the main path: ``add`` or ``concat``. Ignored (and
            normalised to ``add``) when ``skip`` is ``none``.
        width: Output channels of the stage after this point.
        blocks: Blocks in that stage (at least 1: the first block is the one that downsamples).
    """

    op: str
    skip: str = "none"
    merge: str = "add"
    width: int = 32
    blocks: int = 1

    def __post_init__(self) -> None:
        _check_choice("downsampling op", self.op, OPS)
        _check_choice("skip type", self.skip, SKIPS)
        _check_choice("merge", self.merge, MERGES)
        _check_count("stage width", self.width, 1, _MAX_WIDTH)
        _check_count("blocks per stage after a downsampling point", self.blocks, 1, _MAX_BLOCKS)
        if self.skip == "none" and self.merge != "add":
            # Without a shortcut there is nothing to merge: one network, one key.
            object.__setattr__(self, "merge", "add")

    @property
    def residual(self) -> bool:
        """Whether the blocks of this stage have shortcuts."""
        return self.skip != "none"

    @property
    def segment(self) -> str:
        merge = f".{self.merge}" if self.residual and self.merge != "add" else ""
        return f"{self.op}+{self.skip}{merge}:{self.width}x{self.blocks}"


@dataclass(frozen=True)
class Architecture:
    """A candidate network: stem, stage 0, and one :class:`DownsamplingPoint` per halving.

    Args:
        points: The downsampling points, in order from the input.
        stem: The first layer (a name from ``STEMS``); a strided stem is downsampling point 0.
        width: Output channels of the stem and stage 0.
        blocks: Plain (non-downsampling) blocks in stage 0; 0 means the stem alone.
    """

    points: tuple[DownsamplingPoint, ...]
    stem: str = "conv3"
    width: int = 16
    blocks: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", tuple(self.points))
        _check_choice("stem", self.stem, STEMS)
        _check_count("stem width", self.width, 1, _MAX_WIDTH)
        _check_count("blocks in stage 0", self.blocks, 0, _MAX_BLOCKS)
        for point in self.points:
            if not isinstance(point, DownsamplingPoint):
                raise PoolnasError(f"points must be DownsamplingPoint values, got {point!r}")
        channels = self.width
        for index, point in enumerate(self.points, start=1):
            if point.residual and point.merge == "add" and point.skip == "pool_pad":
                if point.width < channels:
                    raise PoolnasError(
                        f"point {index}: pool_pad pads channels with zeros, so the stage width "
                        f"({point.width}) cannot be smaller than its input ({channels})"
                    )
            if point.residual and point.merge == "concat" and point.width <= channels:
                raise PoolnasError(
                    f"point {index}: a concat merge keeps the {channels} input channels and adds "
                    f"new ones, so the stage width must exceed {channels} (got {point.width})"
                )
            channels = point.width

    # ------------------------------------------------------------------ derived views
    @property
    def key(self) -> str:
        """The canonical, shell-safe key (see the module docstring)."""
        head = f"{self.stem}:{self.width}x{self.blocks}"
        return "/".join([head, *(p.segment for p in self.points)])

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels of stage 0, 1, …, D."""
        return (self.width, *(p.width for p in self.points))

    @property
    def depths(self) -> tuple[int, ...]:
        """Blocks of stage 0, 1, …, D."""
        return (self.blocks, *(p.blocks for p in self.points))

    @property
    def halvings(self) -> int:
        """How many times the input resolution is halved (the strided stem counts)."""
        return len(self.points) + (1 if self.stem in STRIDED_STEMS else 0)

    def __str__(self) -> str:
        return self.key

    def describe(self) -> str:
        """One sentence per point, for notes and reports."""
        lines = [f"stem {self.stem} ({STEMS[self.stem].description}), {self.width} channels, "
                 f"{self.blocks} block(s)"]
        for index, p in enumerate(self.points, start=1):
            skip = SKIPS[p.skip].description
            merge = f", merged by {p.merge}" if p.residual else ""
            lines.append(
                f"point {index}: {OPS[p.op].description}; shortcut: {skip}{merge}; "
                f"then {p.blocks} block(s) of {p.width} channels"
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_key(cls, key: str) -> Architecture:
        """Parse a key written by :attr:`key`.

        Raises:
            PoolnasError: The key does not parse, or names an unknown choice.
        """
        if not isinstance(key, str) or not key.strip():
            raise PoolnasError("an architecture key must be a non-empty string")
        text = key.strip()
        segments = text.split("/")
        head = _STEM_RE.match(segments[0])
        if head is None:
            raise PoolnasError(
                f"cannot parse architecture key {text!r}: it must start with STEM:WIDTHxBLOCKS, "
                f"e.g. 'conv3:16x1' (got {segments[0]!r})"
            )
        points = []
        for index, segment in enumerate(segments[1:], start=1):
            match = _POINT_RE.match(segment)
            if match is None:
                raise PoolnasError(
                    f"cannot parse architecture key {text!r}: segment {index} ({segment!r}) "
                    "must look like OP+SKIP[.MERGE]:WIDTHxBLOCKS, e.g. 'max+projection:32x1'"
                )
            points.append(
                DownsamplingPoint(
                    op=match["op"],
                    skip=match["skip"],
                    merge=match["merge"] or "add",
                    width=_parse_int(match["width"], text),
                    blocks=_parse_int(match["blocks"], text),
                )
            )
        arch = cls(
            points=tuple(points),
            stem=head["stem"],
            width=_parse_int(head["width"], text),
            blocks=_parse_int(head["blocks"], text),
        )
        if arch.key != text:
            raise PoolnasError(
                f"architecture key {text!r} is not canonical; did you mean {arch.key!r}?"
            )
        return arch


def _parse_int(digits: str, key: str) -> int:
    if len(digits) > 6:
        raise PoolnasError(f"cannot parse architecture key {key!r}: number {digits} is too large")
    return int(digits)
