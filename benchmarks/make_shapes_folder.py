"""Write an offline image-folder data set of noisy coloured shapes, bigger than digits.

One sub-folder per class (``circle``, ``ring``, ``square``, ``diamond``, ``triangle``, ``cross``),
each with ``--per-class`` RGB PNGs of ``--size``×``--size`` pixels: a shape of random size,
position, colour and rotation (where it does not change the class) on a random background, with
Gaussian pixel noise and a few random distractor lines. Same ``--seed``, same files.

It is the data set of ``docs/benchmarks.md``'s "Your data" run, which needs no internet:

    python benchmarks/make_shapes_folder.py shapes --per-class 500
    poolnas search --dataset shapes --image-size 32x32 --trials 10 --epochs 3
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "ring", "square", "diamond", "triangle", "cross")


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _distinct(rng: np.random.Generator, background: tuple[int, int, int]) -> tuple[int, ...]:
    """A colour at least a little away from the background, so every shape is visible."""
    while True:
        colour = _colour(rng)
        if sum(abs(a - b) for a, b in zip(colour, background)) > 150:
            return colour


def _polygon(cx: float, cy: float, radius: float, corners: int, angle: float) -> list[tuple]:
    return [(cx + radius * math.cos(angle + 2 * math.pi * k / corners),
             cy + radius * math.sin(angle + 2 * math.pi * k / corners)) for k in range(corners)]


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 image of a shape of class ``kind``."""
    scale = 4  # draw large, then downsample: smooth edges
    big = size * scale
    background = _colour(rng)
    image = Image.new("RGB", (big, big), background)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 3))):  # distractors that belong to no class
        points = [tuple(float(v) for v in rng.uniform(0, big, 2)) for _ in range(2)]
        draw.line(points, fill=_colour(rng), width=int(rng.integers(1, 2 * scale)))
    colour = _distinct(rng, background)
    radius = rng.uniform(0.22, 0.42) * big
    cx, cy = (float(v) for v in rng.uniform(radius, big - radius, 2))
    angle = float(rng.uniform(0, 2 * math.pi))
    line = max(2, int(radius * rng.uniform(0.22, 0.35)))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "ring":
        draw.ellipse(box, outline=colour, width=line)
    elif kind == "square":  # axis-aligned, give or take 10 degrees
        tilt = math.pi / 4 + float(rng.uniform(-0.17, 0.17))
        draw.polygon(_polygon(cx, cy, radius, 4, tilt), fill=colour)
    elif kind == "diamond":  # a square on its corner, give or take 10 degrees
        tilt = float(rng.uniform(-0.17, 0.17))
        draw.polygon(_polygon(cx, cy, radius, 4, tilt), fill=colour)
    elif kind == "triangle":
        draw.polygon(_polygon(cx, cy, radius, 3, angle), fill=colour)
    elif kind == "cross":
        for k in range(2):
            a = angle + k * math.pi / 2
            dx, dy = radius * math.cos(a), radius * math.sin(a)
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=colour, width=line)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    small = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    noisy = small + rng.normal(0.0, rng.uniform(5, 30), small.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def make_folder(out: str | Path, *, per_class: int = 500, size: int = 32, seed: int = 0) -> int:
    """Write the data set into ``out`` (created); the number of images written."""
    rng = np.random.default_rng(seed)
    root = Path(out)
    written = 0
    for kind in CLASSES:
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(draw_shape(kind, size, rng)).save(folder / f"{i:05d}.png")
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write (one sub-folder per class)")
    parser.add_argument("--per-class", type=int, default=500, help="images per class (500)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (32)")
    parser.add_argument("--seed", type=int, default=0, help="seed (0)")
    args = parser.parse_args()
    count = make_folder(args.out, per_class=args.per_class, size=args.size, seed=args.seed)
    print(f"wrote {count} images of {args.size}x{args.size} in {len(CLASSES)} classes to "
          f"{args.out}")


if __name__ == "__main__":
    main()
