"""Search spaces: which stems, ops, skip types, merges, widths and depths may be chosen.

A :class:`SearchSpace` is a frozen value. It validates itself, knows its size, lists its
parameters (name → allowed values), and maps a choice of those parameters to an
:class:`Architecture`. Optuna, KerasTuner and the tabular benchmark all go through
:meth:`SearchSpace.parameters` and :meth:`SearchSpace.architecture`, so the space is encoded once.

Space files are TOML or JSON with these keys (all optional)::

    extends = "default"          # or "catalogue": start from a preset, then override
    points = 3                   # downsampling points after the stem
    stems = ["conv3"]            # conv3 | conv3s2 | conv7s2 (a strided stem is point 0)
    ops = ["max", "avg", "conv"] # one list for every point, or one list per point
    skips = ["none", "projection", "pool_projection", "pool_pad"]
    merges = ["add"]             # add | concat
    widths = [16, 32, 64, 128]   # one entry per stage (points + 1): an int or a list of ints
    depths = [1, 1, 1, 1]        # blocks per stage: an int or a list of ints

Files are parsed, never evaluated.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from poolnas.spaces._architecture import Architecture, DownsamplingPoint
from poolnas.spaces._catalogue import MERGES, OPS, SKIPS, STEMS, STRIDED_STEMS
from poolnas.spaces._errors import PoolnasError

DEFAULT_OPS = ("max", "avg", "conv")
DEFAULT_SKIPS = ("none", "projection", "pool_projection", "pool_pad")

_FILE_KEYS = ("extends", "points", "stems", "ops", "skips", "merges", "widths", "depths")
_MAX_POINTS = 12


def _per_point(name: str, value: Any, points: int,
               vocabulary: Mapping) -> tuple[tuple[str, ...], ...]:
    """Normalise a flat list (all points) or a list of lists (one per point)."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise PoolnasError(
            f"space: {name} must be a non-empty list of names or one list per point, got {value!r}"
        )
    if value and all(isinstance(v, str) for v in value):
        lists = [value] * points
    elif all(isinstance(v, Sequence) and not isinstance(v, str) for v in value):
        lists = list(value)
        if len(lists) != points:
            raise PoolnasError(
                f"space: {name} has {len(lists)} lists but the space has {points} points"
            )
    else:
        raise PoolnasError(
            f"space: {name} must be a non-empty list of names or one list per point, got {value!r}"
        )
    result = []
    for index, choices in enumerate(lists, start=1):
        result.append(_choices(f"{name} at point {index}", choices, vocabulary))
    return tuple(result)


def _choices(what: str, choices: Any, vocabulary: Mapping) -> tuple[str, ...]:
    if isinstance(choices, str) or not isinstance(choices, Sequence) or not choices:
        raise PoolnasError(f"space: {what} must be a non-empty list, got {choices!r}")
    for choice in choices:
        if not isinstance(choice, str) or choice not in vocabulary:
            raise PoolnasError(
                f"space: unknown {what.split(' at ')[0].rstrip('s')} {choice!r} in {what}; "
                f"choose from: {', '.join(vocabulary)}"
            )
    if len(set(choices)) != len(choices):
        raise PoolnasError(f"space: {what} lists a choice twice: {list(choices)!r}")
    return tuple(choices)


def _per_stage(name: str, value: Any, stages: int, low: int) -> tuple[tuple[int, ...], ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != stages:
        raise PoolnasError(
            f"space: {name} must have one entry per stage ({stages}: stage 0 and one per point), "
            f"got {value!r}"
        )
    result = []
    for stage, entry in enumerate(value):
        options = [entry] if not isinstance(entry, Sequence) or isinstance(entry, str) else entry
        if not options:
            raise PoolnasError(f"space: {name} for stage {stage} is an empty list")
        for option in options:
            if isinstance(option, bool) or not isinstance(option, int) or option < low:
                raise PoolnasError(
                    f"space: {name} for stage {stage} must be integers >= {low}, got {option!r}"
                )
        if len(set(options)) != len(options):
            raise PoolnasError(f"space: {name} for stage {stage} lists a value twice")
        result.append(tuple(int(o) for o in options))
    return tuple(result)


@dataclass(frozen=True)
class SearchSpace:
    """The choices a search may make. ``SearchSpace()`` is the default space of ``poolnas search``.

    Args:
        points: Number of downsampling points after the stem.
        ops: Allowed downsampling ops: one sequence for every point, or one per point.
        skips: Allowed skip types, likewise.
        merges: Allowed merges of a shortcut (``add``, ``concat``), likewise.
        stems: Allowed stems. A strided stem halves the input once more (point 0).
        widths: Per stage (``points + 1`` entries): an int or a sequence of allowed ints.
            Default: 16 channels doubling at each point.
        depths: Blocks per stage, likewise. Default: 1 everywhere.

    Raises:
        PoolnasError: An empty or unknown choice, a wrong number of entries, or widths that
            some allowed architecture could not use (e.g. ``pool_pad`` into fewer channels).
    """

    points: int = 3
    ops: Any = DEFAULT_OPS
    skips: Any = DEFAULT_SKIPS
    merges: Any = ("add",)
    stems: Any = ("conv3",)
    widths: Any = None
    depths: Any = None

    def __post_init__(self) -> None:
        points = self.points
        if (isinstance(points, bool) or not isinstance(points, int)
                or not 1 <= points <= _MAX_POINTS):
            raise PoolnasError(
                f"space: points must be an integer from 1 to {_MAX_POINTS}, got {points!r}"
            )
        widths = self.widths if self.widths is not None else [16 * 2**i for i in range(points + 1)]
        depths = self.depths if self.depths is not None else [1] * (points + 1)
        set_ = object.__setattr__
        set_(self, "ops", _per_point("ops", self.ops, points, OPS))
        set_(self, "skips", _per_point("skips", self.skips, points, SKIPS))
        set_(self, "merges", _per_point("merges", self.merges, points, MERGES))
        set_(self, "stems", _choices("stems", self.stems, STEMS))
        set_(self, "widths", _per_stage("widths", widths, points + 1, 1))
        set_(self, "depths", _per_stage("depths", depths, points + 1, 0))
        for stage, options in enumerate(self.depths[1:], start=1):
            if min(options) < 1:
                raise PoolnasError(
                    f"space: depths for stage {stage} must be >= 1: its first block downsamples"
                )
        self._check_widths()

    def _check_widths(self) -> None:
        for index in range(1, self.points + 1):
            before, after = max(self.widths[index - 1]), min(self.widths[index])
            skips, merges = set(self.skips[index - 1]) - {"none"}, set(self.merges[index - 1])
            if "pool_pad" in skips and "add" in merges and after < before:
                raise PoolnasError(
                    f"space: point {index} allows pool_pad, which zero-pads channels, but stage "
                    f"{index} may have {after} channels after {before}; widen stage {index}"
                )
            if skips and "concat" in merges and after <= before:
                raise PoolnasError(
                    f"space: point {index} allows a concat merge, which needs more channels after "
                    f"the point than before ({after} <= {before}); widen stage {index}"
                )

    # ------------------------------------------------------------------ parameters
    def parameters(self) -> dict[str, tuple]:
        """The parameters that vary (more than one value), in a fixed order, with their values.

        Names: ``stem``, ``stage{i}_width``, ``stage{i}_blocks``, ``point{i}_op``,
        ``point{i}_skip``, ``point{i}_merge``.
        """
        params: dict[str, tuple] = {}

        def add(name: str, values: tuple) -> None:
            if len(values) > 1:
                params[name] = values

        add("stem", self.stems)
        add("stage0_width", self.widths[0])
        add("stage0_blocks", self.depths[0])
        for i in range(1, self.points + 1):
            add(f"point{i}_op", self.ops[i - 1])
            add(f"point{i}_skip", self.skips[i - 1])
            add(f"point{i}_merge", self.merges[i - 1])
            add(f"stage{i}_width", self.widths[i])
            add(f"stage{i}_blocks", self.depths[i])
        return params

    def architecture(self, params: Mapping[str, Any]) -> Architecture:
        """The architecture for a choice of :meth:`parameters` (fixed ones are filled in).

        Raises:
            PoolnasError: A value is not allowed by this space.
        """
        def pick(name: str, values: tuple) -> Any:
            if len(values) == 1 and name not in params:
                return values[0]
            value = params.get(name)
            if value not in values:
                raise PoolnasError(
                    f"{name}={value!r} is not in this space (allowed: {list(values)})"
                )
            return value

        points = tuple(
            DownsamplingPoint(
                op=pick(f"point{i}_op", self.ops[i - 1]),
                skip=pick(f"point{i}_skip", self.skips[i - 1]),
                merge=pick(f"point{i}_merge", self.merges[i - 1]),
                width=pick(f"stage{i}_width", self.widths[i]),
                blocks=pick(f"stage{i}_blocks", self.depths[i]),
            )
            for i in range(1, self.points + 1)
        )
        return Architecture(
            points=points,
            stem=pick("stem", self.stems),
            width=pick("stage0_width", self.widths[0]),
            blocks=pick("stage0_blocks", self.depths[0]),
        )

    def params_of(self, arch: Architecture) -> dict[str, Any]:
        """The parameter values that give ``arch`` (inverse of :meth:`architecture`).

        Raises:
            PoolnasError: ``arch`` is not in this space.
        """
        if len(arch.points) != self.points:
            raise PoolnasError(
                f"{arch.key} has {len(arch.points)} points; the space has {self.points}"
            )
        values: dict[str, Any] = {"stem": arch.stem, "stage0_width": arch.width,
                                  "stage0_blocks": arch.blocks}
        for i, p in enumerate(arch.points, start=1):
            values.update({f"point{i}_op": p.op, f"point{i}_skip": p.skip,
                           f"point{i}_merge": p.merge, f"stage{i}_width": p.width,
                           f"stage{i}_blocks": p.blocks})
        params = {name: values[name] for name in self.parameters()}
        if self.architecture(params) != arch:
            raise PoolnasError(f"{arch.key} is not in this space")
        return params

    def contains(self, arch: Architecture) -> bool:
        """Whether ``arch`` is one of this space's architectures."""
        try:
            self.params_of(arch)
        except PoolnasError:
            return False
        return True

    def suggest(self, trial: Any) -> Architecture:
        """Draw an architecture with an Optuna trial's ``suggest_categorical`` calls."""
        return self.architecture(
            {name: trial.suggest_categorical(name, list(values))
             for name, values in self.parameters().items()}
        )

    def __iter__(self):
        """Every distinct architecture of the space, in a fixed order."""
        params = self.parameters()
        seen: set[str] = set()
        for combo in itertools.product(*params.values()):
            arch = self.architecture(dict(zip(params, combo)))
            if arch.key not in seen:
                seen.add(arch.key)
                yield arch

    @property
    def size(self) -> int:
        """Number of distinct architectures (a point without shortcut has no merge choice)."""
        total = len(self.stems)
        for options in (*self.widths, *self.depths):
            total *= len(options)
        for ops, skips, merges in zip(self.ops, self.skips, self.merges):
            shortcut_choices = sum(len(merges) if s != "none" else 1 for s in skips)
            total *= len(ops) * shortcut_choices
        return total

    @property
    def max_halvings(self) -> int:
        return self.points + (1 if set(self.stems) & STRIDED_STEMS else 0)

    def check_input_shape(self, input_shape: Sequence[int]) -> None:
        """Raise :class:`PoolnasError` if some architecture halves the input below one pixel."""
        side = min(int(input_shape[0]), int(input_shape[1]))
        if 2**self.max_halvings > side:
            allowed = int(math.floor(math.log2(max(side, 1))))
            raise PoolnasError(
                f"the space halves the resolution up to {self.max_halvings} times "
                f"({self.points} points" + (" + a strided stem" if self.max_halvings > self.points
                                            else "")
                + f"), but the {input_shape[0]}x{input_shape[1]} input allows at most {allowed}; "
                "use a space with fewer points or larger images"
            )

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """A plain dict that :meth:`from_dict` (and a JSON file) turns back into this space."""
        return {
            "points": self.points,
            "stems": list(self.stems),
            "ops": [list(o) for o in self.ops],
            "skips": [list(s) for s in self.skips],
            "merges": [list(m) for m in self.merges],
            "widths": [list(w) for w in self.widths],
            "depths": [list(d) for d in self.depths],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "space") -> SearchSpace:
        """Build a space from a parsed file; ``extends`` starts from a preset.

        Raises:
            PoolnasError: Unknown keys, wrong types, or an invalid space.
        """
        if not isinstance(data, Mapping):
            raise PoolnasError(
                f"{source}: a space must be a table of keys, got {type(data).__name__}"
            )
        unknown = sorted(set(data) - set(_FILE_KEYS))
        if unknown:
            raise PoolnasError(
                f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(_FILE_KEYS)}"
            )
        base: dict[str, Any] = {}
        if "extends" in data:
            name = data["extends"]
            if not isinstance(name, str) or name not in PRESETS:
                raise PoolnasError(
                    f"{source}: extends={name!r} is not a preset; choose from {', '.join(PRESETS)}"
                )
            base = PRESETS[name]().to_dict()
            if "points" in data and data["points"] != base["points"]:
                # Per-point and per-stage lists of the preset no longer fit: start them afresh.
                for key in ("widths", "depths"):
                    base.pop(key)
                for key in ("ops", "skips", "merges"):
                    base[key] = base[key][0]
        merged = {**base, **{k: v for k, v in data.items() if k != "extends"}}
        try:
            return cls(**merged)
        except PoolnasError as error:
            raise PoolnasError(f"{source}: {str(error).removeprefix('space: ')}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> SearchSpace:
        """Read a ``.toml`` or ``.json`` space file.

        Raises:
            PoolnasError: The file is missing, unreadable, malformed or describes an invalid space.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise PoolnasError(f"cannot read space file {str(path)!r}: {error}") from None
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as error:
                raise PoolnasError(f"space file {str(path)!r} is not valid JSON: {error}") from None
        elif path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as error:
                raise PoolnasError(f"space file {str(path)!r} is not valid TOML: {error}") from None
        else:
            raise PoolnasError(f"space file {str(path)!r} must end in .toml or .json")
        return cls.from_dict(data, source=f"space file {str(path)!r}")

    @classmethod
    def resolve(cls, spec: str | None) -> SearchSpace:
        """A preset name (``default``, ``catalogue``) or a path to a space file; None → default."""
        if spec is None or spec == "":
            return cls()
        if spec in PRESETS:
            return PRESETS[spec]()
        if not Path(spec).exists():
            raise PoolnasError(
                f"space {spec!r} is neither a preset ({', '.join(PRESETS)}) nor an existing file"
            )
        return cls.from_file(spec)

    def narrowed(self, **changes: Any) -> SearchSpace:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def describe(self) -> str:
        """A human-readable account of the choices and the size."""
        lines = [f"{self.points} downsampling points, {self.size:,} architectures"]
        lines.append(f"  stems: {', '.join(self.stems)}")
        lines.append(f"  stage 0: width {_fmt(self.widths[0])}, blocks {_fmt(self.depths[0])}")
        for i in range(1, self.points + 1):
            lines.append(
                f"  point {i}: ops {', '.join(self.ops[i - 1])}; skips "
                f"{', '.join(self.skips[i - 1])}; merges {', '.join(self.merges[i - 1])}; "
                f"then width {_fmt(self.widths[i])}, blocks {_fmt(self.depths[i])}"
            )
        return "\n".join(lines)


def _fmt(values: tuple[int, ...]) -> str:
    return str(values[0]) if len(values) == 1 else "{" + ", ".join(map(str, values)) + "}"


def default_space() -> SearchSpace:
    """The design card's space: max/avg/conv and the four skip types at 3 points."""
    return SearchSpace()


def catalogue_space() -> SearchSpace:
    """Everything poolnas knows: every op, skip, merge and stem.

    Two points after the stem, so that with a strided stem (point 0) it still fits 8x8 digits.
    """
    return SearchSpace(
        points=2,
        ops=tuple(OPS),
        skips=tuple(SKIPS),
        merges=tuple(MERGES),
        stems=tuple(STEMS),
        widths=(16, 32, 64),
        depths=(1, 1, 1),
    )


PRESETS = {"default": default_space, "catalogue": catalogue_space}
