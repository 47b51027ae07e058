"""`shapes`: procedurally drawn scenes of 1-4 coloured shapes, with captions and questions (torch-free).

A scene is a 3x3 grid of cells; each object sits in its own cell (jittered), so "top left" or "left of" always has
one right answer. Questions ask for colour, shape, count, existence, position and left/right/above/below
relations; objects are referred to only by descriptions that are unique in their scene.

The compositional split (`shapes-compositional`) holds out four colour+shape pairs: no training, validation or
test scene of `shapes` ever contains them; every compositional scene contains at least one, and its question is
about a held-out object, so a model can only answer by composing attributes it learnt separately.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

from edgelmm.train.data.base import GRID, Example, seed_for

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 160, 50),
    "blue": (35, 75, 225),
    "yellow": (240, 215, 30),
    "purple": (140, 50, 190),
    "orange": (250, 135, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = {"small": 0.62, "large": 0.9}
"""Object extent as a fraction of the cell side."""
POSITIONS = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "light grey": (190, 190, 190),
    "dark grey": (70, 70, 70),
    "black": (12, 12, 12),
}
HELD_OUT = frozenset({("red", "square"), ("green", "circle"), ("blue", "star"), ("yellow", "triangle")})
"""Colour+shape pairs that only the compositional split shows (one per shape and per colour, so each attribute
alone is still seen in training)."""
QUESTION_KINDS = ("colour", "shape", "count", "exist", "position", "relation")
CANVAS = 96
"""Scenes are drawn at 96x96 (then resized by the model's preprocessing)."""
COLOUR_JITTER = 18
EXTRA_QUESTIONS = 3
"""Questions per scene beyond the first (``Example.more``): the later turns of multi-turn training conversations."""


@dataclasses.dataclass(frozen=True, slots=True)
class Obj:
    shape: str
    colour: str
    size: str
    row: int
    col: int

    @property
    def position(self) -> str:
        return POSITIONS[self.row][self.col]

    def noun(self) -> str:
        return f"{self.colour} {self.shape}"

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape} {_where(self.position)}"


@dataclasses.dataclass(frozen=True, slots=True)
class Scene:
    objects: tuple[Obj, ...]
    background: str
    noise: float
    """Standard deviation of per-pixel background noise (0 for a plain background)."""

    def phrases(self) -> tuple[str, ...]:
        return (*(o.phrase() for o in self.objects), f"a {self.background} background")

    def regions(self) -> tuple[str, ...]:
        cells = [""] * (GRID * GRID)
        for o in self.objects:
            cells[o.row * GRID + o.col] = f"a {o.size} {o.colour} {o.shape}"
        return tuple(cells)

    def caption(self) -> str:
        parts = [o.phrase() for o in self.objects]
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{listed}, on a {self.background} background"


class ShapesDataset:
    """Scenes with captions and one question each; ``compositional`` gives the held-out-pairs split."""

    version = "shapes-v2"
    """v2 adds ``more`` (EXTRA_QUESTIONS further questions, drawn after the image); every v1 field is unchanged."""

    def __init__(self, *, compositional: bool = False) -> None:
        self.compositional = compositional
        self.name = "shapes-compositional" if compositional else "shapes"
        self.splits = ("val", "test") if compositional else ("train", "val", "test")
        self._salt = 0x5C09 if compositional else 0x5A9E

    def example(self, split: str, index: int) -> Example:
        rng = np.random.default_rng([seed_for(split, index, self.splits), self._salt])
        scene = sample_scene(rng, compositional=self.compositional)
        question, answer, kind = sample_question(rng, scene, focus_held_out=self.compositional)
        image = render(scene, rng)
        more = tuple(sample_question(rng, scene, focus_held_out=self.compositional) for _ in range(EXTRA_QUESTIONS))
        return Example(
            image=image,
            caption=scene.caption(),
            phrases=scene.phrases(),
            regions=scene.regions(),
            question=question,
            answer=answer,
            kind=kind,
            more=more,
        )


def sample_scene(rng: np.random.Generator, *, compositional: bool = False) -> Scene:
    """1-4 objects in distinct cells; held-out pairs never appear unless ``compositional`` (then at least one)."""
    count = int(rng.integers(1, 5))
    cells = rng.choice(9, size=count, replace=False)
    objects = []
    for i, cell in enumerate(cells):
        while True:
            colour = str(rng.choice(list(COLOURS)))
            shape = str(rng.choice(SHAPES))
            held_out = (colour, shape) in HELD_OUT
            if (compositional and i == 0) and not held_out:
                colour, shape = sorted(HELD_OUT)[int(rng.integers(len(HELD_OUT)))]
                held_out = True
            if held_out and not compositional:
                continue
            break
        size = str(rng.choice(list(SIZES)))
        objects.append(Obj(shape=shape, colour=colour, size=size, row=int(cell) // 3, col=int(cell) % 3))
    background = str(rng.choice(list(BACKGROUNDS)))
    noise = float(rng.choice([0.0, 0.0, 6.0, 14.0]))
    return Scene(objects=tuple(objects), background=background, noise=noise)


def render(scene: Scene, rng: np.random.Generator, canvas: int = CANVAS) -> Image.Image:
    """Draw the scene: jittered colours and positions, anti-aliased by 2x supersampling, optional grey noise."""
    scale = 2
    side = canvas * scale
    background = np.array(BACKGROUNDS[scene.background], dtype=np.float32) + rng.normal(0, 5, 3).astype(np.float32)
    image = Image.new("RGB", (side, side), tuple(int(v) for v in np.clip(background, 0, 255)))
    draw = ImageDraw.Draw(image)
    cell = side / 3
    for obj in scene.objects:
        extent = SIZES[obj.size] * cell * float(rng.uniform(0.9, 1.05))
        room = (cell - extent) / 2
        cx = (obj.col + 0.5) * cell + float(rng.uniform(-room, room)) * 0.8
        cy = (obj.row + 0.5) * cell + float(rng.uniform(-room, room)) * 0.8
        jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, 3)
        colour = tuple(int(v) for v in np.clip(np.array(COLOURS[obj.colour]) + jitter, 0, 255))
        _draw_shape(draw, obj.shape, cx, cy, extent / 2, colour, float(rng.uniform(-0.25, 0.25)))
    image = image.resize((canvas, canvas), Image.Resampling.BOX)
    if not scene.noise:
        return image
    noise = rng.standard_normal((canvas, canvas, 1), dtype=np.float32) * np.float32(scene.noise)
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour: tuple, turn: float) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        h = r * 0.85
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=colour)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy + r * 0.15, r * 1.05, 3, turn * 0.3), fill=colour)
    else:  # star: 5 points, inner radius 0.45
        outer = _polygon(cx, cy, r * 1.05, 5, turn)
        inner = _polygon(cx, cy, r * 0.45, 5, turn + math.pi / 5)
        draw.polygon([p for pair in zip(outer, inner) for p in pair], fill=colour)


def _polygon(cx: float, cy: float, r: float, n: int, turn: float) -> list[tuple[float, float]]:
    return [(cx + r * math.sin(turn + 2 * math.pi * k / n), cy - r * math.cos(turn + 2 * math.pi * k / n))
            for k in range(n)]


# ----------------------------------------------------------------------------------------------------------------
# Questions


def sample_question(rng: np.random.Generator, scene: Scene, *, focus_held_out: bool = False) -> tuple[str, str, str]:
    """(question, answer, kind) with a uniformly drawn kind that the scene can answer unambiguously."""
    kinds = list(QUESTION_KINDS)
    rng.shuffle(kinds)
    for kind in kinds:
        qa = _QUESTIONS[kind](rng, scene, focus_held_out)
        if qa is not None:
            return qa[0], qa[1], kind
    raise AssertionError("unreachable: a count question is always possible")  # noqa: EM101


def _unique_nouns(scene: Scene, focus_held_out: bool) -> list[Obj]:
    """Objects whose colour+shape is unique in the scene (the held-out ones only, when focusing on them)."""
    nouns = [o.noun() for o in scene.objects]
    unique = [o for o in scene.objects if nouns.count(o.noun()) == 1]
    if focus_held_out:
        unique = [o for o in unique if (o.colour, o.shape) in HELD_OUT]
    return unique


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _where(position: str) -> str:
    return "in the center" if position == "center" else f"at the {position}"


def _pick(rng: np.random.Generator, items: list) -> object:
    return items[int(rng.integers(len(items)))]


def _q_colour(rng: np.random.Generator, scene: Scene, focus: bool) -> tuple[str, str] | None:
    shapes = [o.shape for o in scene.objects]
    candidates = [o for o in _unique_nouns(scene, focus) if shapes.count(o.shape) == 1]
    if candidates:
        obj = _pick(rng, candidates)
        template = _pick(rng, ["What colour is the {s}?", "What color is the {s}?", "Which colour is the {s}?"])
        return template.format(s=obj.shape), obj.colour
    candidates = _unique_nouns(scene, focus)
    if not candidates:
        return None
    obj = _pick(rng, candidates)
    return f"What colour is the {obj.shape} {_where(obj.position)}?", obj.colour


def _q_shape(rng: np.random.Generator, scene: Scene, focus: bool) -> tuple[str, str] | None:
    colours = [o.colour for o in scene.objects]
    candidates = [o for o in _unique_nouns(scene, focus) if colours.count(o.colour) == 1]
    if candidates and rng.random() < 0.5:
        obj = _pick(rng, candidates)
        template = _pick(rng, ["What shape is the {c} object?", "What is the shape of the {c} object?"])
        return template.format(c=obj.colour), obj.shape
    candidates = [o for o in scene.objects if not focus or (o.colour, o.shape) in HELD_OUT]
    obj = _pick(rng, candidates)
    return f"What shape is {_where(obj.position)}?", obj.shape


def _q_count(rng: np.random.Generator, scene: Scene, focus: bool) -> tuple[str, str] | None:
    mode = rng.random()
    if mode < 0.4:
        return _pick(rng, ["How many objects are there?", "How many shapes are in the image?"]), str(len(scene.objects))
    if mode < 0.7:
        shape = _pick(rng, [o.shape for o in scene.objects] + list(SHAPES))
        return f"How many {shape}s are there?", str(sum(o.shape == shape for o in scene.objects))
    colour = _pick(rng, [o.colour for o in scene.objects] + list(COLOURS))
    return f"How many {colour} objects are there?", str(sum(o.colour == colour for o in scene.objects))


def _q_exist(rng: np.random.Generator, scene: Scene, focus: bool) -> tuple[str, str] | None:
    present = {(o.colour, o.shape) for o in scene.objects}
    if rng.random() < 0.5:
        pool = [o for o in scene.objects if not focus or (o.colour, o.shape) in HELD_OUT]
        obj = _pick(rng, pool)
        colour, shape, answer = obj.colour, obj.shape, "yes"
    else:
        absent_held_out = sorted(HELD_OUT - present)
        if focus and absent_held_out:  # compositional: ask about a held-out pair that is not there
            colour, shape = _pick(rng, absent_held_out)
            return f"Is there {_article(colour)} {colour} {shape}?", "no"
        # Hard negatives: usually share the colour or the shape of an object that is there.
        ref = _pick(rng, list(scene.objects))
        while True:
            colour = ref.colour if rng.random() < 0.4 else str(_pick(rng, list(COLOURS)))
            shape = ref.shape if rng.random() < 0.4 else str(_pick(rng, list(SHAPES)))
            allowed = focus or (colour, shape) not in HELD_OUT
            if (colour, shape) not in present and allowed:
                break
        answer = "no"
    return _pick(rng, ["Is there {a} {c} {s}?", "Is there {a} {c} {s} in the image?"]).format(a=_article(colour), c=colour, s=shape), answer


def _q_position(rng: np.random.Generator, scene: Scene, focus: bool) -> tuple[str, str] | None:
    candidates = _unique_nouns(scene, focus)
    if not candidates:
        return None
    obj = _pick(rng, candidates)
    return _pick(rng, ["Where is the {n}?", "Where is the {n} in the image?"]).format(n=obj.noun()), obj.position


_RELATIONS = {
    "to the left of": lambda a, b: (a.col < b.col, a.col != b.col),
    "to the right of": lambda a, b: (a.col > b.col, a.col != b.col),
    "above": lambda a, b: (a.row < b.row, a.row != b.row),
    "below": lambda a, b: (a.row > b.row, a.row != b.row),
}


def _q_relation(rng: np.random.Generator, scene: Scene, focus: bool) -> tuple[str, str] | None:
    nouns = [o.noun() for o in scene.objects]
    unique = [o for o in scene.objects if nouns.count(o.noun()) == 1]
    pairs = [(a, b, rel) for a in unique for b in unique if a is not b for rel, test in _RELATIONS.items()
             if test(a, b)[1] and (not focus or (a.colour, a.shape) in HELD_OUT or (b.colour, b.shape) in HELD_OUT)]
    if not pairs:
        return None
    want = rng.random() < 0.5  # balance yes/no
    matching = [p for p in pairs if _RELATIONS[p[2]](p[0], p[1])[0] == want] or pairs
    a, b, rel = _pick(rng, matching)
    answer = "yes" if _RELATIONS[rel](a, b)[0] else "no"
    return f"Is the {a.noun()} {rel} the {b.noun()}?", answer


_QUESTIONS = {
    "colour": _q_colour,
    "shape": _q_shape,
    "count": _q_count,
    "exist": _q_exist,
    "position": _q_position,
    "relation": _q_relation,
}
