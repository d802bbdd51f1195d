"""The embedded model's world: scenes of coloured shapes, their prompts, and a reader.

One module holds the vocabulary, the prompt grammar, the procedural renderer
the model is trained on, and the pixel classifier that reads a scene back out
of an image (used to measure whether generated images match their prompts).
Everything here is numpy/PIL: no torch, no model.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

NATIVE_SIZE = 32
# Shapes are drawn this many times larger, then box-filtered down: anti-aliased edges.
_SUPERSAMPLE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (245, 220, 30),
    "orange": (245, 140, 20),
    "purple": (140, 50, 180),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "diamond")
PLURALS = {shape: shape + "s" for shape in SHAPES}
# Size class -> range of the object's extent (bounding-box side) in native pixels.
SIZE_EXTENTS: dict[str, tuple[int, int]] = {"small": (8, 10), "medium": (12, 14), "big": (18, 22)}
SIZE_WORDS = {"small": "small", "medium": "medium", "big": "big", "large": "big"}
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
COUNT_WORDS = {"one": 1, "two": 2, "three": 3}
# Known words that carry no drawable meaning on their own.
FILLER_WORDS = ("a", "an", "the", "on", "at", "in", "with", "background")

VOCABULARY: dict[str, list[str]] = {
    "colours": list(COLOURS),
    "shapes": [*SHAPES, *PLURALS.values()],
    "sizes": list(SIZE_WORDS),
    "positions": ["top", "bottom", "left", "right", "center", "middle"],
    "counts": ["a", "an", *COUNT_WORDS],
    "other": [w for w in FILLER_WORDS if w not in ("a", "an")],
}
WORDS: list[str] = [w for words in VOCABULARY.values() for w in words]
CONTENT_WORDS = frozenset(WORDS) - frozenset(FILLER_WORDS)

EXAMPLES = [
    "a red circle on a blue background",
    "a small yellow triangle at the top left on a black background",
    "two green squares on white",
    "a big purple diamond in the center on an orange background",
    "three small white circles on a black background",
    "a blue background with a large yellow square on the right",
]

# A single object's centre is within this many pixels of the image centre on an
# axis if and only if it is placed "center"/"middle" on that axis.
_CENTRE_BAND = 3.0
# Smallest gap, in native pixels, between the bounding boxes of two objects.
_GAP = 2
_MIN_COMPONENT = 5
# Longest over shortest side of a square or circle read as one: a box read 2
# pixels off at the smallest size (8 px) is 1.25; more is a rectangle or an oval.
_MAX_ASPECT = 1.25


@dataclass(frozen=True, slots=True)
class Scene:
    """What a prompt asks for; None means the prompt leaves it to chance."""

    background: str
    colour: str
    shape: str
    count: int = 1
    size: str | None = None
    row: str | None = None
    column: str | None = None


def is_held_out(scene: Scene) -> bool:
    """Colour/shape/background combinations never shown in training (about 1 in 7).

    Every pair of the three still occurs in training, so a held-out prompt tests
    composition, not unknown words.
    """
    c = list(COLOURS).index(scene.colour)
    b = list(COLOURS).index(scene.background)
    s = SHAPES.index(scene.shape)
    return (c + 3 * b + 5 * s) % 7 == 0


def sample_scene(rng: random.Random, held_out: bool = False) -> Scene:
    """A random scene from the training (or, with held_out, the evaluation) split."""
    while True:
        background, colour = rng.sample(list(COLOURS), 2)
        shape = rng.choice(SHAPES)
        count = rng.choice((1, 1, 2, 3))
        scene = Scene(background, colour, shape, count, *_sample_layout(rng, count))
        if is_held_out(scene) == held_out:
            return scene


def _sample_layout(rng: random.Random, count: int) -> tuple[str | None, str | None, str | None]:
    if count > 1:
        # Several objects must fit side by side: no big ones, no position words.
        return rng.choice((None, "small", "medium")), None, None
    size = rng.choice((None, "small", "medium", "big"))
    row, column = rng.choice(
        [
            (None, None),
            (None, None),
            (None, "left"),
            (None, "right"),
            ("top", None),
            ("bottom", None),
            ("middle", "center"),
        ]
        + [(r, c) for r in ("top", "bottom") for c in ("left", "right")]
    )
    return size, row, column


def describe(scene: Scene, rng: random.Random, with_background: bool = True) -> str:
    """One of several phrasings of the scene, as a user might type it."""
    words = []
    if scene.size is not None:
        words.append("large" if scene.size == "big" and rng.random() < 0.4 else scene.size)
    words.append(scene.colour)
    words.append(PLURALS[scene.shape] if scene.count > 1 else scene.shape)
    first = words[0]
    if scene.count > 1:
        article = "two" if scene.count == 2 else "three"
    elif rng.random() < 0.2:
        article = "one"
    else:
        article = "an" if first[0] in "aeiou" else "a"
    thing = " ".join([article, *words, *_position_words(scene, rng)])
    if not with_background:
        return thing
    form = rng.random()
    if form < 0.15:
        return f"a {scene.background} background with {thing}"
    if form < 0.4:
        return f"{thing} on {scene.background}"
    article = "an" if scene.background[0] in "aeiou" else "a"
    return f"{thing} on {article} {scene.background} background"


def _position_words(scene: Scene, rng: random.Random) -> list[str]:
    if scene.row == "middle":
        return ["in", "the", rng.choice(("center", "middle"))]
    if scene.row is None and scene.column is None:
        return []
    if scene.row is None:
        return ["on", "the", str(scene.column)]
    return ["at", "the", scene.row] + ([] if scene.column is None else [scene.column])


def render(scene: Scene, rng: random.Random) -> np.ndarray:
    """Draw one scene as a (32, 32, 3) uint8 array."""
    big = NATIVE_SIZE * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), COLOURS[scene.background])
    draw = ImageDraw.Draw(image)
    for cx, cy, extent in _place(scene, rng):
        _draw_shape(draw, scene.shape, cx, cy, extent, extent, COLOURS[scene.colour])
    image = image.resize((NATIVE_SIZE, NATIVE_SIZE), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.uint8)


def draw_batch(n: int, rng: random.Random, held_out: bool = False) -> tuple[np.ndarray, list[str]]:
    """n freshly drawn scenes, (n, 32, 32, 3) uint8, with one prompt each."""
    scenes = [sample_scene(rng, held_out) for _ in range(n)]
    images = np.stack([render(s, rng) for s in scenes])
    # One prompt in ten leaves the background to chance.
    return images, [describe(s, rng, with_background=rng.random() >= 0.1) for s in scenes]


def _place(scene: Scene, rng: random.Random) -> list[tuple[float, float, float]]:
    """Centre and extent of each object, in native pixels."""
    if scene.count == 1:
        extent = _extent(scene.size, rng)
        cx = _axis_position(scene.column, extent, rng)
        cy = _axis_position(scene.row, extent, rng)
        return [(cx, cy, extent)]
    size = scene.size or rng.choice(("small", "medium"))
    while True:  # rejection sampling; three medium objects fit in 32x32 often enough
        objects = []
        for _ in range(scene.count):
            extent = _extent(size, rng)
            cx = _axis_position(None, extent, rng)
            cy = _axis_position(None, extent, rng)
            objects.append((cx, cy, extent))
        if _apart(objects):
            return objects


def _extent(size: str | None, rng: random.Random) -> float:
    low, high = SIZE_EXTENTS[size or rng.choice(list(SIZE_EXTENTS))]
    return float(rng.randint(low, high))


def _axis_position(where: str | None, extent: float, rng: random.Random) -> float:
    centre = NATIVE_SIZE / 2
    low, high = extent / 2 + 1, NATIVE_SIZE - 1 - extent / 2
    if where in ("middle", "center"):
        position = centre + rng.uniform(-1.5, 1.5)
    elif where in ("top", "left"):
        position = rng.uniform(low, max(low, centre - _CENTRE_BAND - 2))
    elif where in ("bottom", "right"):
        position = rng.uniform(min(high, centre + _CENTRE_BAND + 2), high)
    else:
        position = rng.uniform(low, high)
    # Edges on pixel boundaries: squares stay crisp instead of rounding off.
    return round(position - extent / 2) + extent / 2


def _apart(objects: list[tuple[float, float, float]]) -> bool:
    for i, (ax, ay, ae) in enumerate(objects):
        for bx, by, be in objects[i + 1 :]:
            reach = (ae + be) / 2 + _GAP
            if abs(ax - bx) < reach and abs(ay - by) < reach:
                return False
    return True


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    width: float,
    height: float,
    fill: int | tuple[int, ...],
) -> None:
    """One shape filling a width x height box (scenes use square boxes; the reader may not)."""
    s = _SUPERSAMPLE
    x, y, w, h = cx * s, cy * s, width * s / 2, height * s / 2
    # PIL's boxes include their far corner: stop one supersampled pixel short.
    box = (x - w, y - h, x + w - 1, y + h - 1)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(x, y - h), (x + w, y + h), (x - w, y + h)], fill=fill)
    else:
        draw.polygon([(x, y - h), (x + w, y), (x, y + h), (x - w, y)], fill=fill)


def shape_mask(shape: str, cx: float, cy: float, width: float, height: float) -> np.ndarray:
    """Boolean (32, 32) mask of one shape, as render() would cover it."""
    big = NATIVE_SIZE * _SUPERSAMPLE
    image = Image.new("L", (big, big), 0)
    _draw_shape(ImageDraw.Draw(image), shape, cx, cy, width, height, 255)
    small = image.resize((NATIVE_SIZE, NATIVE_SIZE), Image.Resampling.BOX)
    return np.asarray(small) >= 128


@dataclass(frozen=True, slots=True)
class Reading:
    """What the classifier sees in an image; None where it cannot tell."""

    background: str
    colour: str | None
    shape: str | None
    count: int
    size: str | None
    row: str | None
    column: str | None


def classify(image: np.ndarray) -> Reading:
    """Read background, object colour, shape, count, size and position from a 32x32 image."""
    labels = _nearest_colour(image)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    background = Counter(border.tolist()).most_common(1)[0][0]
    components = [c for c in _components(labels != background) if c.sum() >= _MIN_COMPONENT]
    if not components:
        return Reading(_NAMES[background], None, None, 0, None, None, None)
    objects = np.logical_or.reduce(components)
    colour = Counter(labels[_core(objects)].tolist()).most_common(1)[0][0]
    shapes = Counter(_shape_of(c) for c in components)
    largest = max(components, key=lambda c: int(c.sum()))
    x0, y0, x1, y1 = _bbox(largest)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return Reading(
        background=_NAMES[background],
        colour=_NAMES[colour],
        shape=shapes.most_common(1)[0][0],
        count=len(components),
        size=_size_class(max(x1 - x0, y1 - y0)),
        row=_axis_word(cy, ROWS),
        column=_axis_word(cx, COLUMNS),
    )


def matches(scene: Scene, reading: Reading) -> dict[str, bool]:
    """Per attribute the prompt specifies: whether the reading agrees with it."""
    result = {
        "background": reading.background == scene.background,
        "colour": reading.colour == scene.colour,
        "shape": reading.shape == scene.shape,
        "count": reading.count == scene.count,
    }
    if scene.size is not None:
        result["size"] = reading.size == scene.size
    if scene.row is not None or scene.column is not None:
        result["position"] = (scene.row is None or reading.row == scene.row) and (
            scene.column is None or reading.column == scene.column
        )
    return result


_NAMES = list(COLOURS)
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)


def _nearest_colour(image: np.ndarray) -> np.ndarray:
    distances = ((image[:, :, None, :].astype(np.float32) - _PALETTE) ** 2).sum(axis=-1)
    return distances.argmin(axis=-1)


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as boolean masks."""
    seen = np.zeros_like(mask)
    found = []
    height, width = mask.shape
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        component = np.zeros_like(mask)
        stack = [start]
        seen[start] = True
        while stack:
            y, x = stack.pop()
            component[y, x] = True
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        found.append(component)
    return found


def _core(mask: np.ndarray) -> np.ndarray:
    """The mask without its edge pixels (whose colour blends with the background)."""
    padded = np.pad(mask, 1)
    core = mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return core if core.any() else mask


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) with x1, y1 exclusive."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _shape_of(component: np.ndarray) -> str | None:
    """The shape whose template, stretched to the component's bounding box, fits it best.

    Stretched, not square: against square templates a circle fitted a slightly
    oblong square better than a square did, so a drawing anyone would call a
    square was read as a circle. "Square" and "circle" name proportions too
    ("triangle" and "diamond" do not), so an oblong one is read as neither (None).
    """
    x0, y0, x1, y1 = _bbox(component)
    cx, cy, width, height = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0

    def iou(shape: str) -> float:
        template = shape_mask(shape, cx, cy, width, height)
        return float((template & component).sum() / (template | component).sum())

    best = max(SHAPES, key=iou)
    if best in ("square", "circle") and max(width, height) > _MAX_ASPECT * min(width, height):
        return None
    return best


def _size_class(extent: int) -> str:
    if extent <= 10:
        return "small"
    return "medium" if extent <= 16 else "big"


def _axis_word(position: float, words: tuple[str, str, str]) -> str:
    offset = position - NATIVE_SIZE / 2
    if abs(offset) <= _CENTRE_BAND:
        return words[1]
    return words[0] if offset < 0 else words[2]
