"""Images for the tool-selection dataset (torch-free): pages of text, charts and real photos, drawn from an rng.

Shapes scenes and handwritten digits come from the ``shapes`` and ``digits`` datasets. Photos are random crops of
the real photographs that ship with scikit-image and scikit-learn; two photographs are held out for the test split,
so test photos are never crops of a training photograph.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CANVAS = 96
WORDS = ("invoice", "total", "meeting", "agenda", "report", "summary", "budget", "order", "receipt", "notice",
         "date", "amount", "name", "address", "payment", "due", "page", "item", "price", "quantity", "tax",
         "balance", "signed", "account", "dear", "thanks", "regards", "project", "review", "status")
PHOTOS_TRAIN = ("astronaut", "chelsea", "hubble_deep_field", "immunohistochemistry", "retina", "camera", "moon",
                "coins", "sklearn:china.jpg")
PHOTOS_TEST = ("coffee", "rocket", "sklearn:flower.jpg")
"""scikit-image ``skimage.data`` names and scikit-learn sample images; test photographs are never trained on."""


def text_page(rng: np.random.Generator) -> Image.Image:
    """A page of 3-6 lines of words and numbers, dark ink on light paper (PIL's built-in font, random size)."""
    paper = tuple(int(v) for v in rng.integers(215, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 70, 3))
    image = Image.new("RGB", (CANVAS, CANVAS), paper)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(rng.integers(10, 16)))
    y = int(rng.integers(2, 10))
    while y < CANVAS - 12:
        parts = [str(WORDS[int(rng.integers(len(WORDS)))]) if rng.random() < 0.7 else f"{rng.integers(1, 999)}"
                 for _ in range(int(rng.integers(1, 4)))]
        draw.text((int(rng.integers(2, 12)), y), " ".join(parts), fill=ink, font=font)
        y += int(font.size * rng.uniform(1.2, 1.7))
    return image.rotate(float(rng.uniform(-4, 4)), fillcolor=paper, resample=Image.Resampling.BILINEAR)


def chart(rng: np.random.Generator) -> Image.Image:
    """A matplotlib bar, line or pie chart of random data with axes and a title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kind = ("bar", "line", "pie")[int(rng.integers(3))]
    values = rng.uniform(1, 10, int(rng.integers(3, 7)))
    fig, ax = plt.subplots(figsize=(2, 2), dpi=48)
    if kind == "bar":
        ax.bar(range(len(values)), values, color=plt.cm.tab10(rng.integers(10)))
    elif kind == "line":
        ax.plot(values, marker="o", color=plt.cm.tab10(rng.integers(10)))
    else:
        ax.pie(values)
    ax.set_title(str(WORDS[int(rng.integers(len(WORDS)))]), fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB").resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)


@functools.cache
def _photo(name: str) -> Image.Image:
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(name.removeprefix("sklearn:")))
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


def photo(rng: np.random.Generator, split: str) -> Image.Image:
    """A random crop (40-100% of the shorter side), maybe mirrored, of a photograph of the split."""
    names = PHOTOS_TEST if split == "test" else PHOTOS_TRAIN
    source = _photo(names[int(rng.integers(len(names)))])
    side = int(min(source.size) * rng.uniform(0.4, 1.0))
    left, top = (int(rng.integers(s - side + 1)) for s in source.size)
    crop = source.crop((left, top, left + side, top + side)).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)
    return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop
