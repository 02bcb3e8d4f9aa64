"""A compact block diagram of an architecture, as a PNG.

Drawn with matplotlib alone (no graphviz): left to right the input, the stem and stage 0, then
for each downsampling point its op on the main path, its shortcut below it and how the two merge,
and the stage after it; last the head. It is what the dashboard previews for each trial and what
the report shows for each front member.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from poolnas.spaces import OPS, SKIPS

if TYPE_CHECKING:
    from poolnas.spaces import Architecture

#: Fill colours of the boxes that are not a choice; an op's or a skip's colour (and a skip's
#: short text) is its catalogue entry's, so the same op looks the same in every picture.
_COLOURS = {
    "stage": "#f0f0f0",
    "io": "#ffffff",
}


def _side(size: int | None, halvings: int) -> int | None:
    if size is None:
        return None
    for _ in range(halvings):
        size = -(-size // 2)  # "same" padding: ceil
    return size


def _mflops(flops: int | float) -> str:
    return f"{flops / 1e6:.3g} MFLOPs"


def architecture_png(arch: Architecture, *, input_shape: Sequence[int] | None = None,
                     num_classes: int | None = None,
                     point_flops: Sequence[int] | None = None, dpi: int = 100) -> bytes:
    """Draw ``arch`` as a block diagram, one column per resolution.

    The first column is the input and the stem stage; each further column is one downsampling
    point: the input splits into the op (left) and the shortcut (right), which merge into the
    stage after the point; the last column is the head. Columns keep the picture about as wide
    as it is tall, so that it stays legible as a thumbnail.

    Args:
        arch: The architecture.
        input_shape: ``(H, W, C)`` of one image; when given, each stage shows its resolution.
        num_classes: Classes of the classifier, shown in the head.
        point_flops: FLOPs of each downsampling point (op, shortcut and the stage after it),
            one per point, shown under the point.
        dpi: Resolution of the PNG.

    Returns:
        The PNG file's bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    height, width = (input_shape[0], input_shape[1]) if input_shape else (None, None)
    columns = len(arch.points) + 2  # stem, one per point, head
    figure = Figure(figsize=(1.4 * columns, 2.9), dpi=dpi)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, columns)
    ax.set_ylim(0.3, 4.0)
    ax.axis("off")
    split_y, branch_y, stage_y, flops_y = 3.3, 2.65, 1.45, 0.55

    def box(x0: float, x1: float, y: float, text: str, colour: str, *,
            half: float = 0.3, size: float = 8) -> None:
        ax.add_patch(FancyBboxPatch((x0, y - half), x1 - x0, 2 * half,
                                    boxstyle="round,pad=0.02,rounding_size=0.06",
                                    facecolor=colour, edgecolor="#555555", linewidth=0.8))
        ax.text((x0 + x1) / 2, y, text, ha="center", va="center", fontsize=size)

    def arrow(x0: float, y0: float, x1: float, y1: float, *, dashed: bool = False) -> None:
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=8,
                                     linewidth=0.9, color="#555555", shrinkA=0, shrinkB=0,
                                     linestyle="--" if dashed else "-"))

    def resolution(halvings: int) -> str:
        h, w = _side(height, halvings), _side(width, halvings)
        return "" if h is None else f"\n{h}×{w}"

    halvings = arch.halvings - len(arch.points)  # 1 after a strided stem
    channels = input_shape[2] if input_shape and len(input_shape) > 2 else None
    ax.text(0.5, 3.75, "stem", ha="center", fontsize=9, weight="bold")
    box(0.12, 0.88, branch_y, "input" + (f"\n{height}×{width}×{channels}" if height else ""),
        _COLOURS["io"])
    arrow(0.5, branch_y - 0.3, 0.5, stage_y + 0.38)
    box(0.08, 0.92, stage_y, f"{arch.stem}\n{arch.width} ch × {arch.blocks}"
        f"{resolution(halvings)}", _COLOURS["stage"], half=0.38)
    for index, point in enumerate(arch.points, start=1):
        x = float(index)
        halvings += 1
        ax.text(x + 0.5, 3.75, f"point {index}", ha="center", fontsize=9, weight="bold")
        # From the previous stage, up through the gap between the columns, to the split.
        ax.plot([x - 0.08, x, x], [stage_y, stage_y, split_y], color="#555555", linewidth=0.9)
        arrow(x, split_y, x + 0.46, split_y)
        ax.plot([x + 0.5], [split_y], marker="o", markersize=3, color="#555555")
        op_right = x + (0.56 if point.residual else 0.92)
        box(x + 0.08, op_right, branch_y, point.op.replace("_", "\n"), OPS[point.op].colour)
        arrow(x + 0.5, split_y, (x + 0.08 + op_right) / 2, branch_y + 0.3)
        arrow((x + 0.08 + op_right) / 2, branch_y - 0.3, (x + 0.08 + op_right) / 2,
              stage_y + 0.38)
        if point.residual:
            skip = SKIPS[point.skip]
            box(x + 0.62, x + 0.92, branch_y, skip.short, skip.colour, size=7)
            arrow(x + 0.5, split_y, x + 0.77, branch_y + 0.3)
            arrow(x + 0.77, branch_y - 0.3, x + 0.77, stage_y + 0.38, dashed=True)
            ax.text(x + 0.86, stage_y + 0.5, "+" if point.merge == "add" else "concat",
                    ha="left", va="center", fontsize=7, color="#333333")
        box(x + 0.08, x + 0.92, stage_y, f"{point.width} ch × {point.blocks}"
            f"{resolution(halvings)}", _COLOURS["stage"], half=0.38)
        if point_flops is not None and index <= len(point_flops):
            ax.text(x + 0.5, flops_y, _mflops(point_flops[index - 1]), ha="center",
                    fontsize=7, color="#333333")
    head = float(len(arch.points) + 1)
    ax.text(head + 0.5, 3.75, "head", ha="center", fontsize=9, weight="bold")
    arrow(head - 0.08, stage_y, head + 0.08, stage_y)
    box(head + 0.08, head + 0.92, stage_y,
        "avg pool\ndense" + (f" {num_classes}" if num_classes else ""), _COLOURS["io"],
        half=0.38)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
