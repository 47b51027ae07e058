"""Write the demo's example images (small, public-domain or CC0 sources, or drawn here). Run from the repo root:

    python demos/examples/make_examples.py

scene.png and astronaut.png came with the spine; this script adds the rest. examples.yaml lists every image with
its prompt and provenance. Needs scikit-image, scikit-learn and matplotlib (the [export] and [train] extras).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.cbook
import numpy as np
from PIL import Image, ImageDraw
from skimage import data as skdata
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parent
PHOTO_WIDTH = 160  # small enough to commit, large enough to recognise; the models see 64 px anyway


def photo(array: np.ndarray, name: str) -> None:
    image = Image.fromarray(array).convert("RGB")
    image = image.resize((PHOTO_WIDTH, round(image.height * PHOTO_WIDTH / image.width)), Image.Resampling.LANCZOS)
    image.save(OUT / name, quality=85, optimize=True)


def digit(index: int, name: str) -> None:
    """An 8x8 scikit-learn digit (values 0..16), upscaled 8x with hard pixel edges."""
    pixels = (load_digits().images[index] / 16 * 255).astype(np.uint8)
    Image.fromarray(255 - pixels).convert("RGB").resize((64, 64), Image.Resampling.NEAREST).save(OUT / name)


def scene(shapes: list[tuple[str, str, tuple[int, int, int, int]]], name: str, background: str = "white") -> None:
    """A 128 x 96 drawing of (shape, colour, box) items: the kind of scene the smol-vqa recipe trains on."""
    image = Image.new("RGB", (128, 96), background)
    draw = ImageDraw.Draw(image)
    for shape, colour, (x0, y0, x1, y1) in shapes:
        if shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)
    image.save(OUT / name, optimize=True)


def main() -> None:
    scene([("circle", "red", (10, 30, 40, 60)), ("square", "blue", (80, 32, 110, 62))], "two-shapes.png")
    scene(
        [("triangle", "green", (8, 8, 40, 40)), ("circle", "yellow", (50, 50, 78, 78)),
         ("square", "purple", (92, 12, 120, 40))],
        "three-shapes.png", background="gray",
    )
    digit(3, "digit-3.png")
    photo(skdata.chelsea(), "cat.jpg")
    photo(skdata.coffee(), "coffee.jpg")
    photo(skdata.rocket(), "rocket.jpg")
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo(np.asarray(Image.open(f)), "grace-hopper.jpg")


if __name__ == "__main__":
    main()
