"""`digits`: scikit-learn's 8x8 handwritten digits, upscaled and augmented: "Which digit is this?" (torch-free).

The 1797 source images are split once by a fixed permutation (seed 0): 360 test, 180 validation, the rest train,
so test digits are never seen in training, whatever the augmentation. Each example draws a source image of its
split, then a random scale, rotation, offset, stroke and background colour, blur and noise.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageFilter

from edgelmm.train.data.base import Example, seed_for

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEST_IMAGES, VAL_IMAGES = 360, 180
CANVAS = 96
QUESTIONS = ("Which digit is this?", "What digit is shown?", "What number is written in the image?",
             "Which digit is in the picture?")
PALETTE = {
    "white": (240, 240, 240), "black": (15, 15, 15), "red": (215, 35, 35), "green": (30, 160, 50),
    "blue": (35, 75, 225), "yellow": (240, 215, 30), "purple": (140, 50, 190), "orange": (250, 135, 20),
    "grey": (128, 128, 128),
}


@functools.cache
def _source() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    split = {"test": order[:TEST_IMAGES], "val": order[TEST_IMAGES : TEST_IMAGES + VAL_IMAGES],
             "train": order[TEST_IMAGES + VAL_IMAGES :]}
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64), split


class DigitsDataset:
    name = "digits"
    version = "digits-v1"
    splits = ("train", "val", "test")

    def example(self, split: str, index: int) -> Example:
        rng = np.random.default_rng([seed_for(split, index, self.splits), 0xD161])
        images, targets, ids = _source()
        source = int(ids[split][int(rng.integers(len(ids[split])))])
        digit = int(targets[source])
        ink, paper = _colours(rng)
        image = render(images[source], rng, ink=PALETTE[ink], paper=PALETTE[paper])
        word = NUMBER_WORDS[digit]
        return Example(
            image=image,
            caption=f"the handwritten digit {digit} ({word}) in {ink} on a {paper} background",
            phrases=(f"the handwritten digit {digit} ({word})", f"{ink} ink on a {paper} background"),
            question=QUESTIONS[int(rng.integers(len(QUESTIONS)))],
            answer=str(digit),
            kind="digit",
        )


def _colours(rng: np.random.Generator) -> tuple[str, str]:
    """Ink and paper colours that differ in brightness enough to read (half the time white on black)."""
    if rng.random() < 0.5:
        return ("white", "black") if rng.random() < 0.7 else ("black", "white")
    names = list(PALETTE)
    while True:
        ink, paper = (names[i] for i in rng.choice(len(names), 2, replace=False))
        if abs(_luma(PALETTE[ink]) - _luma(PALETTE[paper])) > 70:
            return ink, paper


def _luma(rgb: tuple[int, int, int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def render(digit: np.ndarray, rng: np.random.Generator, *, ink: tuple, paper: tuple, canvas: int = CANVAS) -> Image.Image:
    """An 8x8 intensity image in [0, 1] -> an RGB canvas: scaled 55-85%, rotated +-15 degrees, shifted, blurred."""
    side = int(canvas * rng.uniform(0.55, 0.85))
    mask = Image.fromarray((digit * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
    mask = mask.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR, expand=True)
    mask = mask.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))
    full = Image.new("L", (canvas, canvas), 0)
    room = max(canvas - mask.size[0], 0), max(canvas - mask.size[1], 0)
    full.paste(mask, (int(rng.integers(room[0] + 1)), int(rng.integers(room[1] + 1))))
    alpha = np.asarray(full, dtype=np.float32)[..., None] / 255.0
    pixels = alpha * np.asarray(ink, np.float32) + (1 - alpha) * np.asarray(paper, np.float32)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(rng.choice([0.0, 6.0, 12.0]))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
